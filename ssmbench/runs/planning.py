"""Which impls run which case, and why the others skip (shown by `plan`, obeyed by `check`/`sweep`);
which impls a sweep runs at all (`select_impls`: the spec's, narrowed or extended by ``--impl``)."""

from __future__ import annotations

from ssmbench.impls.base import Impl
from ssmbench.spec.case import Case
from ssmbench.spec.load import Sweep


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


def check_impl_names(impl_names: list[str] | None, impls: dict[str, Impl] | None = None) -> dict[str, Impl]:
    """The registry (``impls``, default: `ssmbench.impls.registry.registry`), once every ``--impl`` name
    is known to it; an unknown one is a usage error naming the allowed ones."""
    from ssmbench.errors import UsageError

    if impls is None:
        from ssmbench.impls.registry import registry

        impls = registry()
    unknown = [n for n in impl_names or [] if n not in impls]
    if unknown:
        raise UsageError(f"--impl {', '.join(unknown)}: unknown; allowed: {', '.join(sorted(impls))}")
    return impls


def select_impls(sweep: Sweep, impl_names: list[str] | None, impls: dict[str, Impl] | None = None) -> list[str]:
    """The impls to run for ``sweep`` (`check`, `sweep`, `validate-bytes`): the sweep's own, only
    those named when ``impl_names`` is given, then the named impls of the sweep's family that it
    does not list. A name no impl has is a usage error (`check_impl_names`)."""
    impls = check_impl_names(impl_names, impls)
    wanted = list(impl_names or [])
    names = [n for n in sweep.spec.impls if not wanted or n in wanted]
    names += [n for n in wanted if n not in names and impls[n].family == sweep.family]
    return names
