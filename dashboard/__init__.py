"""tracehouse.dashboard: FastAPI routes, Jinja2 pages, Plotly figures and the JSON API."""

from .app import create_app

__all__ = ["create_app"]
