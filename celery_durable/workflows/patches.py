"""`patched()` and `deprecated_patch()`: changing a workflow under runs in flight.

A run replays its history against whatever code the worker has now. Code
that asks for other steps at recorded positions cannot replay; `patched()`
lets one function hold both the old and the new path, and chooses per run:

- the new path (True) in a run that reaches the call under the new code. A
  `patch.marked` event records that, with the run's next write, so every
  later replay chooses the same;
- the old path (False) in a run whose history already went past this point
  under code without the call: its recorded steps are the old ones.

A marker takes no position: removing the call later does not move any
recorded step. Retiring a patch takes two deploys (as in Temporal):

1. `if patched("x"): new() else: old()`  - until no run needs `old()`
   (`celery durable replay-check` with the next code tells when);
2. `deprecated_patch("x"); new()`  - the old branch is gone; a run that would
   have needed it is blocked with a clear reason instead of diverging later;
3. `new()` alone, once the runs that were past step 1 when it was deployed
   have finished.
"""

from __future__ import annotations

from ..errors import NotInWorkflowError
from .context import current_execution


def patched(change_id: str) -> bool:
    """True where this run takes the new code of change `change_id` (see the module).

    Call it in the workflow function (not in a step's body) with a change id
    that names the change and is never reused for another one.
    """
    execution = current_execution.get()
    if execution is None:
        raise NotInWorkflowError(
            f"patched({change_id!r}) can only be called inside a running workflow"
        )
    _check_id(change_id, "patched")
    return execution.patched(change_id)


def deprecated_patch(change_id: str) -> None:
    """Mark where the retired `patched(change_id)` stood; only the new path is left.

    A run whose history went past this point under code without the patch
    cannot replay the new path: it is blocked (a `NonDeterminismError` naming
    the change) rather than failing or diverging further on.
    """
    execution = current_execution.get()
    if execution is None:
        raise NotInWorkflowError(
            f"deprecated_patch({change_id!r}) can only be called inside a running workflow"
        )
    _check_id(change_id, "deprecated_patch")
    execution.patched(change_id, deprecated=True)


def _check_id(change_id: object, where: str) -> None:
    if not isinstance(change_id, str) or not change_id.strip():
        raise ValueError(f"{where}(): the change id must be a non-empty string, got {change_id!r}")


__all__ = ["deprecated_patch", "patched"]
