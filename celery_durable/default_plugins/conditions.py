"""Built-in conditions; a rule fires only when all of its conditions hold."""

from __future__ import annotations

import fnmatch
from typing import TYPE_CHECKING, Any

from .. import activity
from ..hookspecs import hookimpl
from ..rules import patterns
from ..rules.base import Condition
from ..rules.engine import rule_engine

if TYPE_CHECKING:
    from ..activity import Activity
    from ..rules.context import RuleContext

MAX_FAILURE_THRESHOLD = 10_000


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a non-empty {what}, got {value!r}")
    return value


class TaskNamePattern(Condition):
    """The task's name matches a glob (`myapp.tasks.*`)."""

    name = "task_name_pattern"
    events = activity.TASK_ACTIVITIES

    def __init__(self, value: Any):
        super().__init__(_text(value, "glob pattern"))

    def matches(self, event: Activity, context: RuleContext) -> bool:
        return fnmatch.fnmatchcase(str(event.data.get("task_name") or ""), self.value)

    def explain(self, event: Activity, context: RuleContext) -> str:
        return f"task name {event.data.get('task_name')!r} against glob {self.value!r}"


class Queue(Condition):
    """The task came from this queue (or one of a list of queues)."""

    name = "queue"
    events = activity.TASK_ACTIVITIES

    def __init__(self, value: Any):
        queues = [value] if isinstance(value, str) else value
        if (
            not isinstance(queues, list)
            or not queues
            or not all(isinstance(q, str) and q for q in queues)
        ):
            raise ValueError(f"expected a queue name or a list of them, got {value!r}")
        super().__init__(value)
        self.queues = frozenset(queues)

    def matches(self, event: Activity, context: RuleContext) -> bool:
        return event.data.get("queue") in self.queues

    def explain(self, event: Activity, context: RuleContext) -> str:
        return f"queue {event.data.get('queue')!r} in {sorted(self.queues)}"


class ErrorPattern(Condition):
    """A regex searched in "<exception type> <its base classes>: <message>".

    RE2 syntax, matched in linear time on the text's first 8 KB (see
    `rules/patterns.py`): a hostile error message cannot stall the pool
    process that reports the failure.
    """

    name = "error_pattern"
    events = frozenset({activity.TASK_FAILED, *activity.RUN_FAILURES})

    def __init__(self, value: Any):
        super().__init__(_text(value, "regular expression"))
        self.regex = patterns.compile_pattern(value)

    def matches(self, event: Activity, context: RuleContext) -> bool:
        return patterns.search(self.regex, error_text(event))

    def explain(self, event: Activity, context: RuleContext) -> str:
        return f"/{self.value}/ searched in {patterns.searched_text(error_text(event))!r}"


class FailureCountThreshold(Condition):
    """Fire from the Nth failure of this task name within `durable_failure_window`.

    Failures are counted in Redis, shared by all workers, when the rule's
    other conditions hold (it is checked last): the Nth matching failure.
    """

    name = "failure_count_threshold"
    events = frozenset({activity.TASK_FAILED})
    cost = 10

    def __init__(self, value: Any):
        if (
            not isinstance(value, int)
            or isinstance(value, bool)
            or not 1 <= value <= MAX_FAILURE_THRESHOLD
        ):
            raise ValueError(
                f"expected an integer from 1 to {MAX_FAILURE_THRESHOLD}, got {value!r}"
            )
        super().__init__(value)

    def matches(self, event: Activity, context: RuleContext) -> bool:
        return self._count(event, context) >= self.value

    def _count(self, event: Activity, context: RuleContext) -> int:
        facts = context.facts
        if "failure_count" not in facts:  # once per event, whichever rules ask
            ext = context.ext
            if context.dry_run:  # what is recorded, plus this event, recording nothing
                key = ext.keys.task_failures(str(event.data.get("task_name")))
                recorded = ext.redis.zcount(key, event.ts - ext.settings.failure_window, "+inf")
                facts["failure_count"] = int(recorded) + 1
            else:
                facts["failure_count"] = rule_engine(ext).count_failure(event)
        return int(facts["failure_count"])

    def explain(self, event: Activity, context: RuleContext) -> str:
        return (
            f"failure {self._count(event, context)} of {event.data.get('task_name')!r} "
            f"in the window, threshold {self.value}"
        )


class WorkflowNamePattern(Condition):
    """The workflow's name matches a glob."""

    name = "workflow_name_pattern"
    events = activity.RUN_FAILURES

    def __init__(self, value: Any):
        super().__init__(_text(value, "glob pattern"))

    def matches(self, event: Activity, context: RuleContext) -> bool:
        return fnmatch.fnmatchcase(str(event.data.get("workflow_name") or ""), self.value)


def error_text(event: Activity) -> str:
    """ "Type: message", the type followed by its base classes: "Down ConnectionError ..."."""
    data = event.data
    if data.get("error_type") or data.get("error_message"):
        types = " ".join([data.get("error_type", ""), *(data.get("error_bases") or [])])
        return f"{types}: {data.get('error_message', '')}"
    error = data.get("error") or {}
    if isinstance(error, dict):
        return f"{error.get('type', '')}: {error.get('message', '')}"
    return str(error)


@hookimpl
def durable_conditions() -> list[type[Condition]]:
    return [TaskNamePattern, Queue, ErrorPattern, FailureCountThreshold, WorkflowNamePattern]
