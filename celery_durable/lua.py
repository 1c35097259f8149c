"""Every Lua script of celery_durable, read once by one loader.

A script lives as a `.lua` file beside the code that runs it
(`journal/append.lua`), with a header that documents its KEYS and ARGV. All
of them are read here, at import, into `SOURCES`, keyed by their path in the
package without the suffix (`"journal/append"`); `script()` registers one
with a Redis client. So a new script is a new file, and a name that matches
no file fails where the script is registered (a store's constructor), not at
its first call.
"""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

from redis.commands.core import Script

from .redis_client import RedisClient


def _read_all(folder: Traversable, prefix: str = "") -> dict[str, str]:
    found: dict[str, str] = {}
    for entry in folder.iterdir():
        if entry.is_dir():
            found.update(_read_all(entry, f"{prefix}{entry.name}/"))
        elif entry.name.endswith(".lua"):
            found[prefix + entry.name.removesuffix(".lua")] = entry.read_text(encoding="utf-8")
    return found


SOURCES: dict[str, str] = _read_all(resources.files(__package__))


def script(client: RedisClient, name: str) -> Script:
    """The script `name` (`"timers/claim"`) registered with `client` (run by its SHA)."""
    try:
        source = SOURCES[name]
    except KeyError:
        known = ", ".join(sorted(SOURCES))
        raise LookupError(f"no Lua script {name!r} in celery_durable; known: {known}") from None
    return client.register_script(source)


def queue_in(pipe: Any, script: Script, keys: list[Any], args: list[Any]) -> None:
    """Queue `script` in `pipe` as a bare EVALSHA.

    Not `script(..., client=pipe)`: redis-py would then send SCRIPT EXISTS
    first, a round trip of its own on every execute. A Redis that forgot
    the script (restarted, flushed) answers that EVALSHA with
    `NoScriptError`: the caller then calls `script(keys=, args=)`, which
    loads it.
    """
    pipe.evalsha(script.sha, len(keys), *keys, *args)
