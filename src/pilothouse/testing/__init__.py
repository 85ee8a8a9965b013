"""Test helpers that users can use too: a simulated model server, a Pilothouse server process and an
in-memory span exporter."""

from pilothouse.providers.simulated_model import SimConfig
from pilothouse.testing._exporter import InMemoryExporter
from pilothouse.testing._server import PilothouseServer, free_port
from pilothouse.testing._upstream import SimulatedUpstream

__all__ = ["InMemoryExporter", "PilothouseServer", "SimConfig", "SimulatedUpstream", "free_port"]
