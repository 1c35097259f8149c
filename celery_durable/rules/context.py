"""What conditions and actions get besides the event: the app and helpers."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from ..activity import Activity
from ..limits import truncate_text
from ..redis_client import RedisClient
from .render import render

if TYPE_CHECKING:
    import httpx
    from celery import Celery

    from ..extension import DurableExtension


@dataclass
class RuleContext:
    ext: DurableExtension
    rule_name: str = ""
    execution_id: str = ""
    dry_run: bool = False
    # Facts computed once per event and shared by the rules evaluating it.
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def app(self) -> Celery:
        return self.ext.app

    @property
    def redis(self) -> RedisClient:
        return self.ext.redis

    @cached_property
    def http(self) -> httpx.Client:
        """An httpx client whose requests are not logged (URLs of actions are secrets)."""
        from .http import action_http_client

        return action_http_client()

    def render(self, template: str, event: Activity) -> str:
        """The rendered text, cut to `durable_max_text_bytes` (a message for people)."""
        return truncate_text(
            render(template, event, self.rule_name), self.ext.settings.max_text_bytes
        )

    def for_rule(self, rule_name: str, execution_id: str = "") -> RuleContext:
        return RuleContext(self.ext, rule_name, execution_id, self.dry_run, self.facts)
