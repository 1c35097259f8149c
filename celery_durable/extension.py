"""The per-app state of celery_durable: settings, Redis client, journal.

`install(app)` creates one `DurableExtension` per app; everything else finds
it through `extension_for()`, so two apps in one process never share state.
It also publishes activities (`emit`) to the listeners of its process, and
holds the per-app objects of the layers above (`component`), so that it
imports none of them: the rules and the plugins subscribe from above.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from functools import cached_property
from typing import Any, TypeVar

from celery import Celery, current_app
from kombu.utils.url import maybe_sanitize_url
from redis.client import Pipeline

from .activity import Activity, Complete, Listener
from .activity_writer import ActivityWriter
from .clock import Clock
from .errors import ConfigurationError, NotInstalledError
from .journal import Journal
from .journal.identity import JournalId, journal_id
from .journal.steps import StepRecords
from .keys import Keys
from .limits import bound_strings
from .redaction import argument_placeholders, without_arguments
from .redis_client import RedisClient, make_client
from .settings import Settings
from .timers import TimerStore

_extensions: weakref.WeakKeyDictionary[Celery, DurableExtension] = weakref.WeakKeyDictionary()

RUN_TASK_NAME = "celery_durable.run_workflow"

logger = logging.getLogger("celery_durable")

T = TypeVar("T")


class DurableExtension:
    def __init__(self, app: Celery):
        # A weak reference: the registry below maps app -> extension weakly,
        # and a strong one back to its own key would keep every app alive.
        self._app = weakref.ref(app)
        self._listeners: list[Listener] = []
        self._components: dict[Callable[[DurableExtension], Any], Any] = {}

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
    def redis(self) -> RedisClient:
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
        return StepRecords(self.redis, self.keys)

    @cached_property
    def timers(self) -> TimerStore:
        return TimerStore(self.redis, self.keys)

    @cached_property
    def clock(self) -> Clock:
        return Clock()

    @cached_property
    def activity_writer(self) -> ActivityWriter:
        return ActivityWriter(self.redis, self.keys.events(), self.settings.events_maxlen)

    def component(self, make: Callable[[DurableExtension], T]) -> T:
        """The one object `make(self)` makes for this app, made on first use.

        How a layer above keeps its per-app state here (`rule_engine()`,
        `plugin_manager()`, `schedule_store()`) without this module knowing it: keyed by `make`,
        freed with the app. An error of `make` is raised, and it is tried
        again next time.
        """
        found = self._components.get(make)
        if found is None:
            found = self._components.setdefault(make, make(self))
        return found

    def listen(self, listener: Listener) -> None:
        """Tell `listener` about every activity this process emits from now on.

        In the order of listening; listening twice to one listener is once.
        """
        if listener not in self._listeners:
            self._listeners.append(listener)

    def wants(self, kind: str) -> bool:
        """Does a listener of this process want activities of this type (`Listener.wants`)?"""
        return any(listener.wants(kind) for listener in self._listeners)

    def emit(
        self,
        kind: str,
        data: dict[str, Any],
        *,
        pipe: Pipeline | None = None,
        complete: Complete | None = None,
        written: tuple[Activity, Activity] | None = None,
    ) -> Activity:
        """Something happened: tell the listeners, and write it to the global stream.

        Each listener sees the activity whole (`on_emit`: in a worker, the
        rules evaluate it right here and may `complete(data)` it), then as
        the stream keeps it (`on_store`: the plugins' `durable_event` hook).
        It is written in `pipe` when given, else soon, by a background
        writer, so a task's process pays no round trip; with `written` (what
        `activity()` made of it), the caller wrote it already. A listener's
        error never reaches the caller. Returns the activity as written.
        """
        activity = self._activity(kind, data) if written is None else written[0]
        for listener in self._listeners:
            _tell(listener.on_emit, activity, complete)
        # After on_emit: `complete` adds to the data what the stream keeps too.
        stored = self._stored(activity) if written is None else written[1]
        for listener in self._listeners:
            _tell(listener.on_store, stored)
        if written is None:
            if pipe is not None:  # the caller's round trip carries it
                pipe.xadd(
                    self.keys.events(),
                    {"e": stored.encode()},
                    maxlen=self.settings.events_maxlen,
                    approximate=True,
                )
            else:
                self.activity_writer.add(stored)
        return stored

    def activity(self, kind: str, data: dict[str, Any]) -> tuple[Activity, Activity]:
        """The activity `emit` tells the listeners of, and the form the stream keeps of it.

        For a caller that writes the stored form itself, in a round trip of
        its own making (a run's end), then emits with `written=` (and no
        `complete`: the stored form is made before the listeners see it).
        """
        activity = self._activity(kind, data)
        return activity, self._stored(activity)

    def _activity(self, kind: str, data: dict[str, Any]) -> Activity:
        redact = self.settings.redact_args
        return Activity(type=kind, data=argument_placeholders(data) if redact else data)

    def _stored(self, activity: Activity) -> Activity:
        """The activity as the global stream keeps it: no text longer than the limit.

        With `durable_redact_args` no task arguments either: the task's message
        (with its arguments) went to the action job only. The stream is a
        record for people and dry runs; the rules got the activity whole (a
        retry re-sends the task's message from it).
        """
        data = activity.data
        if self.settings.redact_args:
            data = without_arguments(data)
        data = bound_strings(data, self.settings.max_text_bytes)
        return activity if data is activity.data else Activity(activity.type, data, activity.ts)

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


def _tell(method: Callable[..., object], activity: Activity, *args: Any) -> None:
    try:
        method(activity, *args)
    except Exception:
        logger.exception("%s failed on %s", getattr(method, "__qualname__", method), activity.type)


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
