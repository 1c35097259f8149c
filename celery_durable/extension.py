"""The per-app state of celery_durable: settings, Redis client, journal.

`install(app)` creates one `DurableExtension` per app; everything else finds
it through `extension_for()`, so two apps in one process never share state.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING, Any

import pluggy
import redis
from celery import Celery, current_app
from kombu.utils.url import maybe_sanitize_url
from redis.client import Pipeline

from .activity import Activity
from .clock import Clock
from .errors import ConfigurationError, NotInstalledError
from .journal import Journal
from .journal.identity import JournalId, journal_id
from .keys import Keys
from .limits import bound_strings
from .redaction import argument_placeholders, without_arguments
from .redis_client import make_client
from .settings import Settings
from .timers import TimerStore

if TYPE_CHECKING:
    from .event_writer import EventWriter
    from .journal.steps import StepRecords
    from .rules.action_queue import ActionQueue
    from .rules.engine import RuleEngine
    from .schedules.store import ScheduleStore

_extensions: weakref.WeakKeyDictionary[Celery, DurableExtension] = weakref.WeakKeyDictionary()

RUN_TASK_NAME = "celery_durable.run_workflow"

logger = logging.getLogger("celery_durable")


class DurableExtension:
    def __init__(self, app: Celery):
        # A weak reference: the registry below maps app -> extension weakly,
        # and a strong one back to its own key would keep every app alive.
        self._app = weakref.ref(app)
        self.rules_active = False  # set in workers: rules are evaluated where events happen

    @property
    def app(self) -> Celery:
        app = self._app()
        if app is None:
            raise NotInstalledError("the Celery app of this celery_durable extension was freed")
        return app

    @cached_property
    def settings(self) -> Settings:
        # Read on first use, not at install(): apps are often configured after
        # they are created, and a worker reads them before it starts.
        return Settings.from_app(self.app)

    @cached_property
    def keys(self) -> Keys:
        return Keys(self.settings.key_prefix)

    @cached_property
    def redis(self) -> redis.Redis:
        # redis-py's pool notices a fork by pid and reconnects in the child,
        # so one client serves the main process and every pool child.
        return make_client(self.settings)

    @cached_property
    def journal(self) -> Journal:
        settings = self.settings
        return Journal(
            self.redis,
            self.keys,
            retention=settings.retention,
            max_events=settings.max_run_events,
        )

    @cached_property
    def journal_id(self) -> JournalId:
        """This app's journal as run messages name it (prefix and Redis fingerprint)."""
        return journal_id(self.settings)

    @cached_property
    def step_records(self) -> StepRecords:
        """The runs' records of their dispatched steps (see `journal/steps.py`)."""
        from .journal.steps import StepRecords

        return StepRecords(self.redis, self.keys)

    @cached_property
    def timers(self) -> TimerStore:
        return TimerStore(self.redis, self.keys)

    @cached_property
    def clock(self) -> Clock:
        return Clock()

    @cached_property
    def plugins(self) -> pluggy.PluginManager:
        """The plugin manager: default plugins, entry points, `durable_plugins`."""
        from .plugins import make_plugin_manager

        return make_plugin_manager(self.settings.plugins)

    @cached_property
    def rules(self) -> RuleEngine:
        """The loaded rules and plugins; loading refuses bad rules with RulesError."""
        from .rules.engine import RuleEngine

        return RuleEngine(self)

    @cached_property
    def event_writer(self) -> EventWriter:
        from .event_writer import EventWriter

        return EventWriter(self)

    @cached_property
    def action_queue(self) -> ActionQueue:
        from .rules.action_queue import ActionQueue

        return ActionQueue(self.redis, self.keys)

    @cached_property
    def schedules(self) -> ScheduleStore:
        from .schedules.store import ScheduleStore

        return ScheduleStore(self.redis, self.keys, self.settings.schedule_history_maxlen)

    def activate_rules(self) -> None:
        """Load the rules now and evaluate them in this process (a worker) from now on."""
        _ = self.rules
        self.rules_active = True

    def emit(
        self,
        kind: str,
        data: dict[str, Any],
        *,
        pipe: Pipeline | None = None,
        complete: Callable[[dict[str, Any]], None] | None = None,
    ) -> Activity:
        """Something happened: react to it, and journal it in the global stream.

        In a worker the rules are evaluated for it right here; `complete(data)`
        adds to the event what only an acting rule needs (it is called once,
        before the first matching rule fires). In every process, the
        `durable_event` plugin hook sees the event as it is written. Then the
        event goes to the global stream: in `pipe` when given, else soon, by a
        background writer, so a task's process pays no round trip. Reacting
        never raises into the caller.
        """
        redact = self.settings.redact_args
        activity = Activity(type=kind, data=argument_placeholders(data) if redact else data)
        if self.rules_active:
            try:
                self.rules.handle(activity, complete)
            except Exception:
                logger.exception("reacting to %s failed", kind)
        if redact:  # the task's message (with its arguments) went to the action job only
            activity = Activity(activity.type, without_arguments(activity.data), activity.ts)
        self._tell_plugins(activity)
        stored = _bounded(activity, self.settings.max_text_bytes)
        if pipe is not None:  # the caller's round trip carries it
            pipe.xadd(
                self.keys.events(),
                {"e": stored.encode()},
                maxlen=self.settings.events_maxlen,
                approximate=True,
            )
        else:
            self.event_writer.add(stored)
        return activity

    def _tell_plugins(self, activity: Activity) -> None:
        """The `durable_event` hook, for an event about to be written to the global stream."""
        try:
            hook = self.plugins.hook.durable_event
            if hook.get_hookimpls():
                hook(event=activity)
        except Exception:
            logger.exception("a durable_event hook failed on %s", activity.type)

    @property
    def safe_redis_url(self) -> str:
        return maybe_sanitize_url(self.settings.redis_url)

    def dispatch(self, run_id: str, *, takeover: str | None = None) -> None:
        """Send the Celery task that executes (or resumes) a run.

        `takeover` names the dead owner (`hostname/pid`) of a run left
        `running`: only then may the task execute a run in that status. The
        message names this app's journal, so that a worker of another
        journal on the same queue forwards it to that journal instead of
        dropping it (see `worker/journal_queue.py`).
        """
        options: dict[str, Any] = {"queue": self.settings.queue} if self.settings.queue else {}
        kwargs: dict[str, Any] = {"journal": self.journal_id.as_message()}
        if takeover:
            kwargs["takeover"] = takeover
        self.app.send_task(
            RUN_TASK_NAME, args=(run_id,), kwargs=kwargs, ignore_result=True, **options
        )

    def launch(self, run_id: str) -> None:
        """Dispatch a run just created with a `dispatch:` timer as its safety net.

        If the message cannot be sent (or this process dies first, or the
        message is lost on its way), the timer fires after
        `durable_redispatch_after` seconds and a worker sends the run again
        if it is still pending; the timer stays until the run moves on.
        """
        try:
            self.dispatch(run_id)
        except Exception as exc:  # the broker is away: the timer will send it
            logger.warning(
                "could not send run %s now (%r); a worker sends it within %gs",
                run_id,
                exc,
                self.settings.redispatch_after,
            )

    def wake(self, run_id: str) -> None:
        """Send the task of a run that waits for what just arrived (an event, a child's end).

        A wake timer goes first: should the message not be sent, or be lost
        on its way, a worker's poller sends the run after
        `durable_redispatch_after` seconds (the run's own timeout timer is
        moot once what it waited for came). A message that cannot be sent now
        is logged, not raised: what woke the run is recorded already.
        """
        self.timers.schedule(run_id, wake_at=self.clock.now() + self.settings.redispatch_after)
        try:
            self.dispatch(run_id)
        except Exception as exc:
            logger.warning(
                "could not wake run %s now (%r); a worker sends it within %gs",
                run_id,
                exc,
                self.settings.redispatch_after,
            )


def _bounded(activity: Activity, limit: int) -> Activity:
    """The event as the global stream keeps it: no text longer than `limit` bytes.

    The stream is a record for people and dry runs; the rules got the event
    whole (a retry re-sends the task's message from it).
    """
    data = bound_strings(activity.data, limit)
    return activity if data is activity.data else Activity(activity.type, data, activity.ts)


def register(app: Celery, extension: DurableExtension) -> None:
    _extensions[app] = extension


def installed(app: Celery) -> DurableExtension | None:
    return _extensions.get(app)


def extension_for(app: Celery | None = None) -> DurableExtension:
    """The extension of `app`, else of the current app, else the only one.

    Every public function that takes `app=` finds its extension here.
    """
    if app is not None:
        if not isinstance(app, Celery):
            raise ConfigurationError(
                f"app= takes the Celery app celery_durable is installed on, got {app!r}"
            )
        found = _extensions.get(app)
        if found is None:
            raise NotInstalledError(
                f"celery_durable is not installed on app {app.main!r}: "
                "call celery_durable.install(app) where the app is created"
            )
        return found
    found = _extensions.get(current_app._get_current_object())
    if found is not None:
        return found
    live = list(_extensions.values())
    if len(live) == 1:
        return live[0]
    if not live:
        raise NotInstalledError(
            "celery_durable is not installed on any Celery app in this process: "
            "call celery_durable.install(app) where the app is created"
        )
    raise NotInstalledError(
        "celery_durable is installed on several apps and none is current: "
        "call app.set_current() on the one to use"
    )
