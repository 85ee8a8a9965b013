"""The HTTP server: app factory, collector, query API, ingest pipeline, settings."""

from pilothouse.config import Settings
from pilothouse.server.app import create_app

__all__ = ["Settings", "create_app"]
