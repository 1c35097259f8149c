"""Regular expressions from rules: a linear-time engine on bounded text.

`error_pattern` is matched where a task failed, in the pool process, before
the worker takes its next task. With Python's backtracking `re`, a careless
pattern (`(a+)+$`) against a hostile message (`"a" * 40 + "!"`) runs for
hours and takes the pool process with it. RE2 (google-re2) has no
backtracking: a search costs at most about (pattern size times text length), and
the text is cut to `MATCH_TEXT_LIMIT` characters and the pattern to
`MAX_PATTERN_LENGTH`, so the worst case is bounded whatever the message.
Measured here: microseconds for ordinary patterns, about 0.2 s for the most
expensive 1,000-character pattern found against 8 KB (a DFA that overflows
its cache), nothing that needs a thread or a timeout of its own.

The price is RE2's syntax: no backreferences (`\\1`) and no lookaround
(`(?=...)`, `(?!...)`, `(?<=...)`, `(?<!...)`). A pattern RE2 cannot compile is
refused when the rules load, with the reason.
"""

from __future__ import annotations

from typing import Any

import re2

MAX_PATTERN_LENGTH = 1000
MATCH_TEXT_LIMIT = 8192  # characters of "<type> <bases>: <message>" searched
CUT_MARK = "\u2026"  # an ellipsis, after a text cut at the limit

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # RE2 would print every refused pattern to stderr
_OPTIONS.never_capture = True  # only "does it match?" is asked: no groups to keep


def compile_pattern(pattern: str) -> Any:
    """The compiled pattern, or ValueError saying why RE2 refuses it."""
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise ValueError(
            f"regular expression is {len(pattern)} characters long; "
            f"at most {MAX_PATTERN_LENGTH} are allowed"
        )
    try:
        return re2.compile(pattern, _OPTIONS)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise ValueError(
            f"invalid regular expression {pattern!r}: {reason} "
            "(RE2 syntax: no backreferences such as \\1, no lookaround such as (?=...))"
        ) from None


def searched_text(text: str) -> str:
    """The part of `text` a pattern sees: its start, with a mark where it was cut.

    The mark keeps `$` from matching at the cut: `(a+)+$` must not find an
    end of message in the middle of a long one.
    """
    if len(text) <= MATCH_TEXT_LIMIT:
        return text
    return text[:MATCH_TEXT_LIMIT] + CUT_MARK


def search(compiled: Any, text: str) -> bool:
    """Whether the pattern occurs in the first `MATCH_TEXT_LIMIT` characters of `text`."""
    return compiled.search(searched_text(text)) is not None
