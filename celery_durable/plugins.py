"""The plugin manager: built-in plugins, entry points, and `durable_plugins`.

Order of registration: the default plugins (the built-in triggers,
conditions and actions), then the `celery_durable` entry-point group, then
the modules named in the app's `durable_plugins` setting. One plugin
manager per app and process (`plugin_manager(ext)`), loaded on first use:
by the rules, or by the first activity a process emits, which `EventHook`
shows to the `durable_event` hook.

`describe_plugins()` says which plugins loaded and what each registers,
for `celery -A app durable plugins` (datasette's `get_plugins()`): a rule
whose trigger, condition or action is unknown names something none of them
registers.

Environment variables, for debugging a deployment:
- `DURABLE_PLUGINS_TRACE=1` logs every hook call and its result;
- `DURABLE_DISABLE_ENTRYPOINTS=1` skips entry-point plugins (settings still load).
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

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


# The hooks that register rule parts, and what `describe_plugins` calls their results.
PART_HOOKS = {
    "triggers": "durable_triggers",
    "conditions": "durable_conditions",
    "actions": "durable_actions",
}


def describe_plugins(pm: pluggy.PluginManager) -> list[dict[str, Any]]:
    """Each loaded plugin, in the order of loading, and what it registers.

    `name` as registered (a module path, or an entry point's name), `source`
    (`built-in`, `entry point` or `durable_plugins`), its distribution's
    `package` and `version` for an entry point, its `hooks`, the names of
    the `triggers`, `conditions` and `actions` it returns, and whether it
    implements `durable_event`.
    """
    distributions = dict(pm.list_plugin_distinfo())
    described = []
    for name, plugin in pm.list_name_plugin():
        if plugin is None:  # blocked
            continue
        hooks = sorted(caller.name for caller in pm.get_hookcallers(plugin) or ())
        dist = distributions.get(plugin)
        if name in DEFAULT_PLUGINS:
            source = "built-in"
        else:
            source = "entry point" if dist is not None else "durable_plugins"
        entry: dict[str, Any] = {
            "name": name,
            "source": source,
            "package": dist.metadata["name"] if dist is not None else None,
            "version": dist.version if dist is not None else None,
            "hooks": hooks,
        }
        for kind, hook_name in PART_HOOKS.items():
            entry[kind] = _registered(pm, plugin, name, hook_name)
        entry["durable_event"] = "durable_event" in hooks
        described.append(entry)
    return described


def _registered(pm: pluggy.PluginManager, plugin: object, name: str, hook_name: str) -> list[str]:
    """The `name`s of the classes `plugin`'s implementation of `hook_name` returns."""
    found: list[str] = []
    for impl in getattr(pm.hook, hook_name).get_hookimpls():
        if impl.plugin is not plugin:
            continue
        try:
            classes = impl.function() or ()
        except Exception as exc:
            raise ConfigurationError(f"plugin {name!r}: {hook_name}() raised {exc!r}") from exc
        found.extend(str(getattr(cls, "name", "") or repr(cls)) for cls in classes)
    return found


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
