"""Which impls run which case, and why the others skip (shown by `plan`, obeyed by `check`/`sweep`)."""

from __future__ import annotations

from ssmbench.case import Case
from ssmbench.impl import Impl
from ssmbench.spec import Sweep


def first_window(sweep: Sweep, T: int) -> int:
    """The window at which window-independent impls run: the first value of the window axis."""
    w = sweep.spec.axes.window[0]
    return T if w == "T" else int(w)


def impl_plan(impl: Impl, case: Case, sweep: Sweep) -> str | None:
    """None when ``impl`` runs ``case``, else the reason it is skipped."""
    reason = impl.supports(case)
    if reason is not None:
        return reason
    if not impl.uses_window and case.window is not None and case.window != first_window(sweep, case.T):
        return f"window does not apply (runs at w{first_window(sweep, case.T)})"
    return None
