"""The tuner's search: block coordinate descent over a knob space, pure (no GPU, no files), so it
is tested with a fake cost function. The measuring side is a `Measurer`; `ssmbench.runs.tune.gpu`
is the real one, `ssmbench.runs.tune.journal` the one that replays a log.

The algorithm, all of it:

1. The incumbent starts at the group's start config (`run.starting_config`: what the impl runs
   today on this GPU model, its table's entry, else the hand-picked default).
2. A pass visits the space's blocks in order (`KnobSpace.all_blocks`). For a block, the
   challengers are the valid configs that differ from the incumbent only in that block
   (`KnobSpace.neighbours`); each is verified against the reference first, and one that fails is
   discarded (and reported).
3. A duel: ``rounds`` rounds, each measuring the incumbent, then every challenger, then the
   incumbent again (drift control: the incumbent is re-measured around the challengers of every
   round, and the challenger order alternates between rounds).
4. A challenger wins only if the gate's own statistics (`ssmbench.output.compare.compare_samples`:
   the bootstrap interval of the median ratio against the ±threshold band) call it ``FASTER``
   than the incumbent in **every** round, each round against that round's incumbent samples: a
   machine that slows down or speeds up mid-duel shifts one round, never all of them. Of the
   winners, the lowest median ratio takes the incumbent's place; no winner: the incumbent stays.
5. Passes repeat until one changes nothing, ``max_passes`` is reached or time runs out.
6. A final duel of the result against the start (same rule) confirms it; unconfirmed, the
   start stays. Its pooled interval is what the report shows.

A config that faults (a CUDA error: the process can run nothing more) raises `Fault` out of the
search; the journal logs it as discarded first, and a resumed search gets its verification's
answer as a problem, or `Discarded` from the round it faulted in: a challenger is dropped from
its duel, an incumbent ends the group (``stopped: fault``, the default kept).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ssmbench.impls.knobs import Config, KnobSpace, describe_config
from ssmbench.output.compare import Gate, Row, compare_samples


def config_key(config: Config) -> str:
    """A config as a dict key (the same config, the same key)."""
    return json.dumps(config, sort_keys=True)


class Fault(Exception):  # noqa: N818 - a fault, as the CUDA error it carries says
    """The measurer's process can run nothing more (a CUDA fault) since preparing or measuring
    ``config``: the journal logs ``config`` as discarded with ``problem``, then the tune stops.
    ``answered``: a `Measurer.verify`'s answers for the configs before ``config``, in order."""

    def __init__(self, config: Config, problem: str, answered: Sequence[str | None] = ()) -> None:
        super().__init__(f"{describe_config(config)}: {problem}")
        self.config, self.problem, self.answered = config, problem, list(answered)


class Discarded(Exception):  # noqa: N818 - the config is discarded, not an error of the search
    """`Measurer.sample` of a config logged as faulted in this round: the search goes on without it."""

    def __init__(self, config: Config, problem: str) -> None:
        super().__init__(f"{describe_config(config)}: {problem}")
        self.config, self.problem = config, problem


class Measurer(Protocol):
    """What the search asks of the machine, for one tuning group (one case)."""

    def verify(self, configs: Sequence[Config]) -> list[str | None]:
        """Build, run once and verify each config: None when it passes, else why not. Given all
        of a duel's challengers at once, so the real one compiles them in parallel first."""

    def sample(self, config: Config) -> list[float]:
        """One round of timed samples (us) of ``config``. Raises `Fault` when the process can
        run nothing more, `Discarded` when a resumed log says this round faulted."""


CONFIRM = ("confirm",)
"""The block of step 6's duel (the result against the default)."""


@dataclass
class Duel:
    """One block's duel: who challenged, who was discarded and why, who won."""

    block: tuple[str, ...]
    incumbent: Config
    challengers: list[Config]
    """Those verified and measured to the duel's end."""
    discarded: list[tuple[Config, str]] = field(default_factory=list)
    winner: Config | None = None
    rows: list[Row] = field(default_factory=list)
    """Each challenger's pooled comparison with the incumbent (the report's numbers)."""


@dataclass
class SearchResult:
    default: Config
    best: Config
    """The confirmed winner, or the default."""
    duels: list[Duel]
    confirmation: Row | None = None
    """The final duel's pooled comparison of ``best`` with the default (None: best is the default)."""
    stopped: str = "converged"
    """``converged`` (a pass changed nothing), ``max passes``, ``budget`` or ``fault`` (an
    incumbent faulted: `Discarded`)."""

    @property
    def discarded(self) -> list[tuple[Config, str]]:
        return [d for duel in self.duels for d in duel.discarded]


def duel(incumbent: Config, challengers: Sequence[Config], measurer: Measurer, gate: Gate,
         rounds: int) -> tuple[Config | None, list[Row], list[tuple[Config, str]]]:
    """Steps 3 and 4: the winner (None: the incumbent stays), each remaining challenger's pooled
    row, and the challengers dropped mid-duel (`Discarded`). An incumbent's `Discarded` is raised."""
    if rounds < 1:
        raise ValueError("a duel needs at least one round")
    inc_rounds: list[list[float]] = []
    ch_rounds: list[list[list[float]]] = [[] for _ in challengers]
    dropped: dict[int, str] = {}
    order = list(range(len(challengers)))
    for r in range(rounds):
        before = measurer.sample(incumbent)
        for i in (order if r % 2 == 0 else order[::-1]):
            if i in dropped:
                continue
            try:
                ch_rounds[i].append(measurer.sample(challengers[i]))
            except Discarded as gone:
                dropped[i] = gone.problem
        inc_rounds.append(before + measurer.sample(incumbent))
    pooled_inc = [x for samples in inc_rounds for x in samples]
    rows, winners = [], []
    for i, config in enumerate(challengers):
        if i in dropped:
            continue
        pooled = [x for samples in ch_rounds[i] for x in samples]
        row = compare_samples("tune", describe_config(config), "", pooled, pooled_inc, gate)
        rows.append(row)
        if row.verdict == "FASTER" and all(  # each round's bootstrap only for a pooled winner
                compare_samples("tune", "", "", ch_rounds[i][r], inc_rounds[r], gate).verdict == "FASTER"
                for r in range(rounds)):
            winners.append((row.interval.ratio if row.interval else 1.0, i))
    gone = [(challengers[i], problem) for i, problem in sorted(dropped.items())]
    if not winners:
        return None, rows, gone
    return challengers[min(winners)[1]], rows, gone


def descend(space: KnobSpace, default: Config, measurer: Measurer, gate: Gate, *, rounds: int = 3,
            max_passes: int = 3, out_of_time: Callable[[], bool] = lambda: False) -> SearchResult:
    """Steps 1-6 (module docstring) from ``default``."""
    if (problem := space.problem(default)) is not None:
        raise ValueError(f"the default config is not a point of the knob space: {problem}")
    incumbent, duels, stopped = dict(default), [], "max passes"
    for _ in range(max_passes):
        changed = False
        for block in space.all_blocks():
            if out_of_time():
                stopped = "budget"
                break
            candidates = space.neighbours(incumbent, block)
            if not candidates:
                continue
            step = Duel(block, incumbent, [])
            for config, problem in zip(candidates, measurer.verify(candidates), strict=True):
                if problem is None:
                    step.challengers.append(config)
                else:
                    step.discarded.append((config, problem))
            duels.append(step)
            if step.challengers:
                try:
                    step.winner, step.rows, dropped = duel(incumbent, step.challengers, measurer, gate, rounds)
                except Discarded as gone:  # the incumbent faulted: nothing to measure against
                    step.discarded.append((gone.config, gone.problem))
                    return SearchResult(dict(default), dict(default), duels, stopped="fault")
                step.discarded += dropped
                step.challengers = [c for c in step.challengers if all(c != d for d, _ in dropped)]
            if step.winner is not None:
                incumbent, changed = step.winner, True
        if stopped == "budget":
            break
        if not changed:
            stopped = "converged"
            break
    result = SearchResult(dict(default), dict(default), duels, stopped=stopped)
    if incumbent != default:
        final = Duel(CONFIRM, default, [incumbent])
        duels.append(final)
        try:
            final.winner, final.rows, final.discarded = duel(default, [incumbent], measurer, gate, rounds)
        except Discarded as gone:  # the default faulted
            final.discarded, result.stopped = [(gone.config, gone.problem)], "fault"
        result.confirmation = final.rows[0] if final.rows else None
        if final.winner is not None:
            result.best = incumbent
    return result
