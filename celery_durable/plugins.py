"""The plugin manager: built-in plugins, entry points, and `durable_plugins`.

Order of registration: the default plugins (the built-in triggers,
conditions and actions), then the `celery_durable` entry-point group, then
the modules named in the app's `durable_plugins` setting.

Environment variables, for debugging a deployment:
- `DURABLE_PLUGINS_TRACE=1` logs every hook call and its result;
- `DURABLE_DISABLE_ENTRYPOINTS=1` skips entry-point plugins (settings still load).
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Iterable

import pluggy

from . import hookspecs
from .errors import ConfigurationError

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
