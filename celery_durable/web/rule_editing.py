"""Creating, editing and deleting stored rules from the dashboard, in YAML.

Over `save_rules`, `validate_rules`, `delete_rule` and `export_rules`: the
page sends the YAML text as typed; problems come back as the `RuleProblem`s
the loader found (rule, field, message), each with the line of the text
where its field is, so the page can show it next to that line. Nothing is
stored while any problem remains.
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from starlette.requests import Request
from starlette.responses import Response

from ..errors import RulesError
from .auth import check_change
from .responses import BadRequest, json_body, json_response

EDITOR = "the editor"  # the source named in problems


class YamlProblems(Exception):
    """The text is not YAML, or not rules: 400 with problems the page can place."""

    def __init__(self, problems: list[dict[str, Any]]):
        super().__init__(problems[0]["message"])
        self.problems = problems


def parse(text: Any) -> Any:
    """The rules in a YAML text, or `YamlProblems` with the line of the mistake."""
    if not isinstance(text, str) or not text.strip():
        raise YamlProblems([_problem("give the rule as YAML text", None, None)])
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        reason = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise YamlProblems([_problem(f"not valid YAML: {reason}", None, line)]) from None


def _problem(message: str, field: str | None, line: int | None, rule: str | None = None) -> Any:
    return {
        "source": EDITOR,
        "rule": rule,
        "index": None,
        "field": field,
        "message": message,
        "line": line,
    }


def placed(problems: list[Any], text: str) -> list[dict[str, Any]]:
    """Each `RuleProblem` as a dict with `line`: where its field's key is in `text`."""
    return [{**p.as_dict(), "line": field_line(text, p.field, p.rule)} for p in problems]


def field_line(text: str, field: str | None, rule: str | None) -> int | None:
    """The 1-based line of the last key of `field` (`trigger.conditions.error_pattern`,
    `actions[0] (retry).delay_seconds`) after the rule's `name:` line; None if not found."""
    lines = text.splitlines()
    start = 0
    if rule:
        for number, line in enumerate(lines):
            if re.match(rf"^\s*-?\s*name:\s*['\"]?{re.escape(rule)}['\"]?\s*$", line):
                start = number
                break
    if not field:
        return start + 1 if rule else None
    keys = [re.sub(r"(\[\d+\])?\s*(\(.*\))?$", "", part).strip() for part in field.split(".")]
    found = None
    position = start
    for key in keys:
        if not key:
            continue
        for number in range(position, len(lines)):
            if re.match(rf"^\s*-?\s*{re.escape(key)}\s*:", lines[number]):
                found, position = number + 1, number
                break
    return found


async def body_rules(request: Request) -> tuple[str, Any]:
    """The YAML text of the body and the rules it holds (parsed once)."""
    body = await json_body(request)
    if not isinstance(body, dict) or "yaml" not in body:
        raise YamlProblems([_problem('give {"yaml": "<the rule as YAML>"}', None, None)])
    text = body["yaml"]
    return str(text), parse(text)


async def validate(api: Any, request: Request) -> Response:
    """Problems the text would be refused for; stores nothing, so needs no token."""
    from ..rules.api import validate_rules

    text, rules = await body_rules(request)
    problems = await api.call(validate_rules, rules, app=api.app, source=EDITOR)
    return json_response({"problems": placed(problems, text)})


async def save(api: Any, request: Request) -> Response:
    """Store the rules of the text (one or a list); 400 with every problem, nothing stored."""
    from ..rules.api import save_rules

    check_change(request, api.token)
    text, rules = await body_rules(request)
    try:
        saved = await api.call(save_rules, rules, app=api.app, source=EDITOR)
    except RulesError as exc:
        raise YamlProblems(placed(exc.details, text)) from None
    return json_response({"saved": saved})


async def delete(api: Any, request: Request) -> Response:
    from ..rules.api import delete_rule

    check_change(request, api.token)
    name = request.path_params["name"]
    await api.call(delete_rule, name, app=api.app)
    return json_response({"rule": name, "deleted": True})


async def source(api: Any, request: Request) -> Response:
    """One rule as YAML, as `rules export` writes it: what the editor starts from."""
    from ..rules.api import export_rules

    name = request.path_params["name"]
    specs = yaml.safe_load(await api.call(export_rules, app=api.app)) or []
    for spec in specs:
        if spec.get("name") == name:
            text = yaml.safe_dump(spec, sort_keys=False, allow_unicode=True)
            return json_response({"rule": name, "yaml": text})
    from ..errors import ConfigurationError

    raise ConfigurationError(f"no rule named {name!r}")


async def try_draft(api: Any, request: Request) -> Response:
    """A dry run of a rule not saved yet: `{"yaml": ..., "event": {...}}` or `"task_id"`.

    Sends nothing and stores nothing, so needs no token: the editor's "Test".
    """
    from ..rules.dry_run import dry_run

    body = await json_body(request)
    if not isinstance(body, dict) or ("event" in body) == ("task_id" in body):
        raise BadRequest('give {"yaml": ..., "event": {...}} or {"yaml": ..., "task_id": "..."}')
    text = str(body.get("yaml") or "")
    spec = parse(text)
    if not isinstance(spec, dict):
        raise YamlProblems([_problem("test one rule at a time (a mapping, not a list)", None, 1)])
    event, task_id = body.get("event"), body.get("task_id")
    if event is not None and not isinstance(event, dict):
        raise BadRequest('"event" must be an object such as {"type": ..., "data": {...}}')
    try:
        report = await api.call(
            dry_run, spec, event, task_id=None if task_id is None else str(task_id), app=api.app
        )
    except RulesError as exc:
        raise YamlProblems(placed(exc.details, text)) from None
    except (TypeError, AttributeError, KeyError) as exc:  # a hand-written event's shape
        raise BadRequest(
            f"the event does not have the shape of a real one ({type(exc).__name__}: {exc})"
        ) from None
    return json_response(report.as_dict())
