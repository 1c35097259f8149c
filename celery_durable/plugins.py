"""The plugin manager: built-in plugins, entry points, and `durable_plugins`.

Order of registration: the default plugins (the built-in triggers,
conditions and actions), then the `celery_durable` entry-point group, then
the modules named in the app's `durable_plugins` setting. One plugin
manager per app and process (`plugin_manager(ext)`), loaded on first use:
by the rules, or by the first activity a process emits, which `EventHook`
shows to the `durable_event` hook.

Environment variables, for debugging a deployment:
- `DURABLE_PLUGINS_TRACE=1` logs every hook call and its result;
- `DURABLE_DISABLE_ENTRYPOINTS=1` skips entry-point plugins (settings still load).
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

import pluggy

from . import hookspecs
from .activity import Activity, Listener
from .errors import ConfigurationError

if TYPE_CHECKING:
    from .extension import DurableExtension

logger = logging.getLogger("celery_durable.plugins")

ENTRY_POINT_GROUP = "celery_durable"

DEFAULT_PLUGINS = (
    "celery_durable.default_plugins.triggers",
    "celery_durable.default_plugins.conditions",
    "celery_durable.default_plugins.actions",
)


def make_plugin_manager(extra: Iterable[str] = ()) -> pluggy.PluginManager:
    pm = pluggy.PluginManager("celery_durable")
    pm.add_hookspecs(hookspecs)
    for name in DEFAULT_PLUGINS:
        pm.register(importlib.import_module(name), name=name)
    if not os.environ.get("DURABLE_DISABLE_ENTRYPOINTS"):
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    for name in extra:
        if pm.has_plugin(name):
            continue
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise ConfigurationError(
                f"durable_plugins: cannot import plugin module {name!r}: {exc}"
            ) from None
        if not pm.is_registered(module):  # also installed as an entry point: once is enough
            pm.register(module, name=name)
    if os.environ.get("DURABLE_PLUGINS_TRACE"):
        pm.trace.root.setwriter(logger.info)
        pm.enable_tracing()
    return pm


def plugin_manager(ext: DurableExtension) -> pluggy.PluginManager:
    """The plugins of `ext`'s app: made once per app and process, on first use."""
    return ext.component(_load)


def _load(ext: DurableExtension) -> pluggy.PluginManager:
    return make_plugin_manager(ext.settings.plugins)


class EventHook(Listener):
    """Shows every activity, as the global stream keeps it, to the `durable_event` hook.

    Listens in every process of an installed app (`install()`): in a client
    too, which writes the end of a run it cancels.
    """

    def __init__(self, ext: DurableExtension):
        self.ext = ext

    def on_store(self, activity: Activity) -> None:
        hook = plugin_manager(self.ext).hook.durable_event
        if hook.get_hookimpls():
            hook(event=activity)
