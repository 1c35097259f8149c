"""Durable timers: due times of runs in a Redis sorted set, claimed atomically."""

from .store import TimerStore

__all__ = ["TimerStore"]
