"""The tuner's search: block coordinate descent over a knob space, pure (no GPU, no files), so it
is tested with a fake cost function. The measuring side is a `Measurer`; `ssmbench.runs.tune.gpu`
is the real one, `ssmbench.runs.tune.journal` the one that replays a log.

The algorithm, all of it:

1. The incumbent starts at the impl's default config.
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
6. A final duel of the result against the default (same rule) confirms it; unconfirmed, the
   default stays. Its pooled interval is what the report shows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ssmbench.impls.knobs import Config, KnobSpace, describe_config
from ssmbench.output.compare import Gate, Row, compare_samples


class Measurer(Protocol):
    """What the search asks of the machine, for one tuning group (one case)."""

    def verify(self, configs: Sequence[Config]) -> list[str | None]:
        """Build, run once and verify each config: None when it passes, else why not. Given all
        of a duel's challengers at once, so the real one compiles them in parallel first."""

    def sample(self, config: Config) -> list[float]:
        """One round of timed samples (us) of ``config``."""


@dataclass
class Duel:
    """One block's duel: who challenged, who was discarded and why, who won."""

    block: tuple[str, ...]
    incumbent: Config
    challengers: list[Config]
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
    """``converged`` (a pass changed nothing), ``max passes`` or ``budget``."""

    @property
    def discarded(self) -> list[tuple[Config, str]]:
        return [d for duel in self.duels for d in duel.discarded]


def duel(incumbent: Config, challengers: Sequence[Config], measurer: Measurer, gate: Gate,
         rounds: int) -> tuple[Config | None, list[Row]]:
    """Steps 3 and 4: the winner (None: the incumbent stays) and each challenger's pooled row."""
    if rounds < 1:
        raise ValueError("a duel needs at least one round")
    inc_rounds: list[list[float]] = []
    ch_rounds: list[list[list[float]]] = [[] for _ in challengers]
    order = list(range(len(challengers)))
    for r in range(rounds):
        before = measurer.sample(incumbent)
        for i in (order if r % 2 == 0 else order[::-1]):
            ch_rounds[i].append(measurer.sample(challengers[i]))
        inc_rounds.append(before + measurer.sample(incumbent))
    pooled_inc = [x for samples in inc_rounds for x in samples]
    rows, winners = [], []
    for i, config in enumerate(challengers):
        pooled = [x for samples in ch_rounds[i] for x in samples]
        row = compare_samples("tune", describe_config(config), "", pooled, pooled_inc, gate)
        rows.append(row)
        if row.verdict == "FASTER" and all(  # each round's bootstrap only for a pooled winner
                compare_samples("tune", "", "", ch_rounds[i][r], inc_rounds[r], gate).verdict == "FASTER"
                for r in range(rounds)):
            winners.append((row.interval.ratio if row.interval else 1.0, i))
    if not winners:
        return None, rows
    return challengers[min(winners)[1]], rows


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
            if step.challengers:
                step.winner, step.rows = duel(incumbent, step.challengers, measurer, gate, rounds)
            duels.append(step)
            if step.winner is not None:
                incumbent, changed = step.winner, True
        if stopped == "budget":
            break
        if not changed:
            stopped = "converged"
            break
    result = SearchResult(dict(default), dict(default), duels, stopped=stopped)
    if incumbent != default:
        winner, rows = duel(default, [incumbent], measurer, gate, rounds)
        result.confirmation = rows[0]
        if winner is not None:
            result.best = incumbent
    return result
