"""The HTTP server: app factory, collector, query API, ingest pipeline, settings."""

from pilothouse.server.app import create_app
from pilothouse.server.settings import Settings

__all__ = ["Settings", "create_app"]
