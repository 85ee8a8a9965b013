"""Test helpers that users can use too: a simulated model server and an in-memory span exporter."""

from pilothouse.testing._exporter import InMemoryExporter
from pilothouse.testing._simulation import SimConfig
from pilothouse.testing._upstream import SimulatedUpstream

__all__ = ["InMemoryExporter", "SimConfig", "SimulatedUpstream"]
