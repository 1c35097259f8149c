"""Every Redis key celery_durable uses is spelled here and nowhere else.

Keys of one run carry the run id as a hash tag (`{...}`), so a run's stream and
its metadata land in one Redis Cluster slot and the fenced-append script may
touch both.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    prefix: str = "durable"

    def _run(self, run_id: str, part: str) -> str:
        return f"{self.prefix}:run:{{{run_id}}}:{part}"

    def run_events(self, run_id: str) -> str:
        """The run's history: a stream of msgpack events."""
        return self._run(run_id, "events")

    def run_meta(self, run_id: str) -> str:
        """A hash with the run's position, status, name and times."""
        return self._run(run_id, "meta")

    def run_done_channel(self, run_id: str) -> str:
        """Pub/sub channel told when the run reaches a final status."""
        return self._run(run_id, "done")

    def runs_index(self) -> str:
        """A sorted set of every run id by creation time, for listings."""
        return f"{self.prefix}:runs"
