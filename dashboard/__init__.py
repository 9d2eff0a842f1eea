"""tracehouse.dashboard: FastAPI routes, Jinja2 pages, Plotly figures and the JSON API."""

from .alerts_source import AlertSource
from .app import create_app
from .auth import require_role

__all__ = ["AlertSource", "create_app", "require_role"]
