"""tracehouse: the command line and the composition of the server."""

__all__ = ["__version__"]
__version__ = "0.1.0"
