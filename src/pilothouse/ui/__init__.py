"""The web UI served by ``pilothouse serve`` at ``/``: server-rendered pages (Jinja2 templates, HTMX,
uPlot charts; every asset vendored in ``static/``) over the same store reads as the query API.

``ui_routes(settings)`` gives the routes the app factory mounts.
"""

from pilothouse.ui.routes import ui_routes

__all__ = ["ui_routes"]
