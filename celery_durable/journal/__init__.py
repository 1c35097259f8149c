"""The journal: each run's append-only, fenced event log in a Redis stream."""

from .events import Event, EventType
from .journal import Journal

__all__ = ["Event", "EventType", "Journal"]
