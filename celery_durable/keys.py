"""Every Redis key celery_durable uses is spelled here and nowhere else.

Keys of one run carry a hash tag (`{...}`) so that its stream, meta hash and
inbox land in one Redis Cluster slot and one Lua script may touch them all.
A child run's id is its parent's id plus `.<position>`, and the tag is the id
of the family's root: a child's final event can then notify its parent's inbox
in the same atomic script.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


def hash_tag(run_id: str) -> str:
    return run_id.split(".", 1)[0]


@dataclass(frozen=True)
class Keys:
    prefix: str = "durable"

    def _run(self, run_id: str, part: str) -> str:
        tag = hash_tag(run_id)
        return f"{self.prefix}:run:{{{tag}}}{run_id[len(tag) :]}:{part}"

    def run_events(self, run_id: str) -> str:
        """The run's history: a stream of msgpack events."""
        return self._run(run_id, "events")

    def run_meta(self, run_id: str) -> str:
        """A hash with the run's position, status, name and times."""
        return self._run(run_id, "meta")

    def run_inbox(self, run_id: str) -> str:
        """A stream of events sent to the run (send_event, child results)."""
        return self._run(run_id, "inbox")

    def run_sent(self, run_id: str) -> str:
        """Ids of the sends the run's inbox took: a resent send_event writes nothing."""
        return self._run(run_id, "sent")

    def run_steps(self, run_id: str) -> str:
        """A hash of the run's dispatched steps by position (see `journal/steps.py`):
        which message may run each, who runs it, its outcome until the run records it."""
        return self._run(run_id, "steps")

    def run_done_channel(self, run_id: str) -> str:
        """Pub/sub channel told when the run reaches a final status."""
        return self._run(run_id, "done")

    def blocked_runs(self) -> str:
        """A set of the ids of runs made `blocked`, for a starting worker to try again.

        Added to when a run is blocked; a member no longer blocked is taken off
        by the next worker that starts.
        """
        return f"{self.prefix}:blocked"

    def runs_index(self) -> str:
        """A sorted set of every run id by creation time, for listings."""
        return f"{self.prefix}:runs"

    def finished_runs(self) -> str:
        """A sorted set of finished run ids scored by when their keys expire.

        The retention sweep takes the due ones off the runs index: the index
        then never lists a run whose journal is gone, and stays bounded.
        """
        return f"{self.prefix}:finished"

    def timers(self) -> str:
        """A sorted set of `kind:run_id` members scored by due time (clock seconds).

        Also `schedule:<name>` members: a schedule's next tick (see `schedule`).
        """
        return f"{self.prefix}:timers"

    def events(self) -> str:
        """The global stream of what happened to runs and tasks, for rules."""
        return f"{self.prefix}:events"

    def workers(self) -> str:
        """A sorted set of live worker hostnames by last heartbeat (wall seconds)."""
        return f"{self.prefix}:workers"

    def worker_runs(self, hostname: str) -> str:
        """The runs a worker is executing: what to take over if it dies."""
        return f"{self.prefix}:worker:{hostname}:runs"

    def worker_tasks(self, hostname: str) -> str:
        """What a worker holds (running and prefetched), as raw requests by task id."""
        return f"{self.prefix}:worker:{hostname}:tasks"

    def recovery_lock(self, hostname: str) -> str:
        """Held by the one live worker that recovers a dead one."""
        return f"{self.prefix}:recovering:{hostname}"

    # -- automation rules ------------------------------------------------------

    def actions(self) -> str:
        """The stream of accepted action jobs, read by a consumer group."""
        return f"{self.prefix}:actions"

    def _rule(self, rule: str, part: str) -> str:
        # A rule's keys share a hash tag made from its name (which may hold
        # any character, braces included), readable name after it.
        tag = hashlib.sha1(rule.encode()).hexdigest()[:16]
        return f"{self.prefix}:rule:{{{tag}}}:{rule}:{part}"

    def rule_history(self, rule: str) -> str:
        return self._rule(rule, "history")

    def rule_breaker(self, rule: str) -> str:
        """A sorted set of the rule's executions in its breaker window."""
        return self._rule(rule, "breaker")

    def rule_breaker_open(self, rule: str) -> str:
        """Set while the rule's breaker is open (expires when it closes)."""
        return self._rule(rule, "breaker-open")

    def rule_switch(self, rule: str) -> str:
        """The rule's run-time switch, `on` or `off`; absent: its `enabled:` decides."""
        return self._rule(rule, "switch")

    def _rule_set(self, part: str) -> str:
        # One hash tag for the stored set, its version and its change record:
        # a change writes all three in one transaction, which a Redis Cluster
        # allows only within one slot.
        return f"{self.prefix}:rules:{{set}}:{part}"

    def stored_rules(self) -> str:
        """The rules added at run time (`save_rules`, `rules add`): a hash of
        rule name -> its spec as written (JSON). Changed only together with
        `rules_version`, in one transaction."""
        return self._rule_set("stored")

    def rules_version(self) -> str:
        """The stored rule set's version, incremented by every change to it;
        a process whose rules are of an older version reloads them."""
        return self._rule_set("version")

    def rules_channel(self) -> str:
        """Pub/sub channel told the new version after each change to the stored rules."""
        return f"{self.prefix}:rules:changed"

    def rule_changes(self) -> str:
        """A stream of the changes to the rules (add, change, delete, enable,
        disable): when, what before and after, from which host and user. Trimmed."""
        return self._rule_set("changes")

    def rule_load_problems(self) -> str:
        """A hash of worker -> the stored rules it could not load (a plugin it
        lacks), with the version it loaded; removed when it has none."""
        return self._rule_set("problems")

    def task_failures(self, task_name: str) -> str:
        """A sorted set of a task's recent failures, for failure_count_threshold."""
        return f"{self.prefix}:failures:{task_name}"

    def retry_chain(self, root_task_id: str) -> str:
        """The ids of a task and its retries by the rules, oldest first."""
        return f"{self.prefix}:retries:{root_task_id}"

    def retry_root(self, task_id: str) -> str:
        """The first task of the retry chain a retried task belongs to."""
        return f"{self.prefix}:retry-root:{task_id}"

    # -- schedules ---------------------------------------------------------------

    def schedules(self) -> str:
        """The names of all stored schedules: a sorted set, every score 0.

        Equal scores order the names lexically, so listings page by name
        (ZRANGEBYLEX) instead of scanning. A name leaves it when its schedule
        is deleted.
        """
        return f"{self.prefix}:schedules"

    def _schedule(self, name: str, part: str) -> str:
        # Like a rule's: a hash tag made from the name (any characters, braces
        # too), so a schedule's hash and history share a Cluster slot and one
        # script may update both.
        tag = hashlib.sha1(name.encode()).hexdigest()[:16]
        return f"{self.prefix}:schedule:{{{tag}}}:{name}:{part}"

    def schedule(self, name: str) -> str:
        """A schedule's definition and state (hash): workflow, timing, policies,
        arguments, paused, next tick, last run, counters. Deleted with the schedule."""
        return self._schedule(name, "def")

    def schedule_history(self, name: str) -> str:
        """A schedule's latest ticks, newest first (list of msgpack entries):
        started, skipped (overlap) or missed (catch-up), with run id and times.
        Trimmed to `durable_schedule_history_maxlen`; deleted with the schedule."""
        return self._schedule(name, "history")

    def poll_lock(self, trigger: str) -> str:
        """Held by the one worker that polls a polling trigger this interval."""
        return f"{self.prefix}:poll:{trigger}"
