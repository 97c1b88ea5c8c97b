"""The tuner's search on a fake impl with a known cost surface (no GPU, no Triton): it finds the
optimum, crowns no false winner when the machine drifts 5% mid-run, discards a config that fails
verification, and a tune killed mid-way and resumed from its log loses no finished measurement."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from ssmbench.errors import UsageError
from ssmbench.impls.knobs import Config, Constraint, Knob, KnobSpace
from ssmbench.output.compare import Gate
from ssmbench.runs.tune.journal import Journal
from ssmbench.runs.tune.search import descend

SPACE = KnobSpace(
    knobs=(
        Knob("block", (4, 8, 16, 32, 64), "tile"),
        Knob("warps", (1, 2, 4, 8), "warps"),
        Knob("fused", (False, True), "one kernel"),
        Knob("grid", (2, 4), "programs per SM", constexpr=False, active=lambda c: c["fused"]),
    ),
    constraints=(Constraint("block >= 16 when fused", lambda c: not c["fused"] or c["block"] >= 16),),
    blocks=(("fused", "block"),),
)
DEFAULT: Config = {"block": 4, "warps": 1, "fused": False, "grid": 2}


def bowl(config: Config) -> float:
    """A known surface: 100 us at the default, optimum 40 us at fused, block 32, 4 warps, grid 4."""
    cost = 60.0 if config["fused"] else 100.0
    cost *= 1 + 0.1 * abs([4, 8, 16, 32, 64].index(config["block"]) - 3)
    cost *= 1 + 0.15 * abs([1, 2, 4, 8].index(config["warps"]) - 2)
    if config["fused"] and config["grid"] == 4:
        cost *= 0.9
    return cost


class Fake:
    """Samples of ``cost(config)`` with 1% noise, times a drift factor that may step mid-run;
    configs in ``broken`` fail verification. Counts every measurement it takes."""

    def __init__(self, cost, drift_at: int | None = None, drift: float = 1.05, broken=(), n: int = 24,
                 seed: int = 7) -> None:
        self.cost, self.drift_at, self.drift, self.broken, self.n = cost, drift_at, drift, broken, n
        self.rng = random.Random(seed)
        self.rounds = 0
        self.verified: list[Config] = []

    def verify(self, configs):
        self.verified += configs
        return ["y differs from the reference" if c in self.broken else None for c in configs]

    def sample(self, config):
        self.rounds += 1
        factor = self.drift if self.drift_at is not None and self.rounds > self.drift_at else 1.0
        return [self.cost(config) * factor * (1 + self.rng.gauss(0, 0.01)) for _ in range(self.n)]


GATE = Gate(threshold_pct=3.0, confidence=0.99)


def test_descent_finds_the_optimum_of_a_known_surface() -> None:
    result = descend(SPACE, DEFAULT, Fake(bowl), GATE, rounds=2)
    assert result.best == {"block": 32, "warps": 4, "fused": True, "grid": 4}
    assert result.stopped == "converged"
    assert result.confirmation is not None and result.confirmation.verdict == "FASTER"
    assert result.confirmation.interval.ratio == pytest.approx(bowl(result.best) / bowl(DEFAULT), rel=0.02)


def test_challengers_respect_constraints_and_inactive_knobs() -> None:
    first = SPACE.neighbours(DEFAULT, ("fused", "block"))
    assert all(not c["fused"] or c["block"] >= 16 for c in first)
    assert SPACE.neighbours(DEFAULT, ("grid",)) == []  # grid does not matter unfused: never measured
    assert SPACE.problem({**DEFAULT, "fused": 1}) == "fused=1: allowed: False, True"


@pytest.mark.parametrize("drift", [1.05, 1 / 1.05])
@pytest.mark.parametrize("at", [5, 14, 40])
def test_a_machine_that_drifts_5pct_mid_run_crowns_no_false_winner(drift: float, at: int) -> None:
    # The first duel has 7 challengers: 9 measurements a round. The step lands mid-round (5, 14)
    # or in a later duel (40); unpaired, a 5% step would crown a false winner past the 3% band.
    flat = Fake(lambda c: 50.0, drift_at=at, drift=drift)
    result = descend(SPACE, DEFAULT, flat, GATE, rounds=3)
    assert all(d.winner is None for d in result.duels)
    assert result.best == DEFAULT and result.confirmation is None


def test_a_failing_config_is_discarded_and_reported() -> None:
    broken = {"block": 32, "warps": 1, "fused": True, "grid": 2}
    fake = Fake(bowl, broken=[broken])
    result = descend(SPACE, DEFAULT, fake, GATE, rounds=2)
    assert (broken, "y differs from the reference") in result.discarded
    assert all(broken not in d.challengers for d in result.duels)
    assert result.best != broken and result.best["fused"]  # the next best fused config won


class Killed(Exception):
    pass


class Dying(Fake):
    """Killed (an exception out of the search) after ``die_after`` rounds."""

    def __init__(self, *args, die_after: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.die_after = die_after

    def sample(self, config):
        if self.rounds >= self.die_after:
            raise Killed
        return super().sample(config)


SETTINGS = {"impl": "fake", "spec_name": "s", "rounds": 2, "samples": 24, "threshold_pct": 3.0, "confidence": 0.99,
            "max_passes": 3}


def test_resume_after_a_kill_loses_no_finished_measurement(tmp_path: Path) -> None:
    log = tmp_path / "tune.jsonl"
    uninterrupted = descend(SPACE, DEFAULT, Fake(bowl), GATE, rounds=2)

    journal = Journal(log, SETTINGS, resume=False)
    dying = Dying(bowl, die_after=23)
    with pytest.raises(Killed):
        descend(SPACE, DEFAULT, journal.replaying("g", lambda: dying), GATE, rounds=2)
    journal.close()
    with open(log, "a") as f:
        f.write('{"type": "round", "group": "g", "se')  # the kill tore the line being written
    taken = sum(1 for line in log.read_text().splitlines() if '"round"' in line and line.endswith("}"))
    assert taken == 23

    journal = Journal(log, SETTINGS, resume=True)
    assert "cut a torn last line" in journal.repaired
    rest = Fake(bowl)
    rest.rng.seed(99)
    replay = journal.replaying("g", lambda: rest)
    result = descend(SPACE, DEFAULT, replay, GATE, rounds=2)
    journal.close()
    assert replay.replayed >= 23  # every finished round came from the log ...
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    seqs = [(x["group"], x["seq"]) for x in lines if x["type"] in ("round", "verify")]
    assert len(seqs) == len(set(seqs))  # ... and none was measured twice
    assert result.best == uninterrupted.best


def _tune_group(journal: Journal, measurer, clock) -> object:
    """One group as `run_tune` runs it: the search with the journal's budget checks, then its
    result line."""
    replay = journal.replaying("g", lambda: measurer)
    result = descend(SPACE, DEFAULT, replay, GATE, rounds=2, out_of_time=lambda: replay.out_of_time(clock))
    journal.write({"type": "result", "group": "g", "default": DEFAULT, "best": result.best,
                   "stopped": result.stopped})
    return result, replay


@pytest.mark.parametrize("stop_after", [4, 9, 14])
def test_a_group_stopped_by_its_budget_replays_the_same_on_resume(tmp_path: Path, stop_after: int) -> None:
    """The budget is wall-clock time, not a function of the measurements: a resumed tune (any
    budget) replays the logged group to the same result, measuring nothing, where it once went
    on past the logged stop and asked for what the log did not hold (the H200 tune of 2026-11-29:
    "the log is from another search")."""
    log = tmp_path / "tune.jsonl"
    first = Fake(bowl)
    journal = Journal(log, SETTINGS, resume=False)
    stopped, _ = _tune_group(journal, first, clock=lambda: first.rounds >= stop_after)
    journal.close()
    assert stopped.stopped == "budget"

    journal = Journal(log, SETTINGS, resume=True)
    again = Fake(bowl)
    resumed, replay = _tune_group(journal, again, clock=lambda: False)  # a resume with all the time
    journal.close()
    assert (resumed.best, resumed.stopped) == (stopped.best, "budget")
    assert again.rounds == 0 and again.verified == [] and replay.replayed > 0


def test_a_group_killed_mid_way_goes_on_by_the_live_clock(tmp_path: Path) -> None:
    """No result logged (the tune was killed in the group): the logged steps replay, then the
    live clock decides, and the search goes on from where it was."""
    log = tmp_path / "tune.jsonl"
    journal = Journal(log, SETTINGS, resume=False)
    dying = Dying(bowl, die_after=10)
    with pytest.raises(Killed):
        descend(SPACE, DEFAULT, journal.replaying("g", lambda: dying), GATE, rounds=2)
    journal.close()
    journal = Journal(log, SETTINGS, resume=True)
    rest = Fake(bowl)
    result, replay = _tune_group(journal, rest, clock=lambda: False)
    journal.close()
    assert replay.replayed >= 10 and rest.rounds > 0
    assert result.best == descend(SPACE, DEFAULT, Fake(bowl), GATE, rounds=2).best


def test_a_log_of_another_search_is_refused(tmp_path: Path) -> None:
    log = tmp_path / "tune.jsonl"
    journal = Journal(log, SETTINGS, resume=False)
    descend(SPACE, DEFAULT, journal.replaying("g", lambda: Fake(bowl)), GATE, rounds=2, max_passes=1)
    journal.close()
    with pytest.raises(UsageError, match="rounds=2"):
        Journal(log, {**SETTINGS, "rounds": 3}, resume=True)
    with pytest.raises(UsageError, match="--resume"):
        Journal(log, SETTINGS, resume=False)
    journal = Journal(log, SETTINGS, resume=True)
    other = {**DEFAULT, "warps": 2}
    with pytest.raises(UsageError, match="another search"):
        descend(SPACE, other, journal.replaying("g", lambda: Fake(bowl)), GATE, rounds=2)
    journal.close()


@pytest.mark.parametrize(("line", "field"), [
    ('{"type": "round", "group": "g", "config": {}, "samples_us": [1.0]}', "seq"),
    ('{"type": "round", "group": "g", "seq": 0, "config": {}, "samples_us": "fast"}', "samples_us"),
    ('{"type": "verify", "group": "g", "seq": 0, "problem": null}', "config"),
    ('{"type": "discard", "group": "g", "seq": 0, "config": {}}', "problem"),
])
def test_a_malformed_log_line_is_a_usage_error(tmp_path: Path, line: str, field: str) -> None:
    log = tmp_path / "tune.jsonl"
    Journal(log, SETTINGS, resume=False).close()
    with open(log, "a") as f:
        f.write(line + "\n")
    with pytest.raises(UsageError, match=rf"tune.jsonl:2: field '{field}'"):
        Journal(log, SETTINGS, resume=True)


def test_a_log_that_is_not_text_is_a_usage_error(tmp_path: Path) -> None:
    log = tmp_path / "tune.jsonl"
    log.write_bytes(b'{"type": "tune"}\n\xff\xfe\n')
    with pytest.raises(UsageError, match="not UTF-8 text"):
        Journal(log, SETTINGS, resume=True)


def test_a_log_written_before_a_knob_existed_replays_with_its_legacy_value(tmp_path: Path) -> None:
    """A tune resumed after its impl gained a knob (with a `Knob.legacy` value): the logged start
    and measurements read as that value, so nothing measured is taken again; a knob without one
    leaves the logged start outside the space (the tune then stops with a usage error)."""
    log = tmp_path / "tune.jsonl"
    journal = Journal(log, SETTINGS, resume=False)
    journal.start("g", DEFAULT, "the default")
    before = Fake(bowl)
    journal.replaying("g", lambda: before).verify([DEFAULT, {**DEFAULT, "warps": 2}])
    journal.close()

    grown = KnobSpace(knobs=(*SPACE.knobs, Knob("cols", (0, 16), "column tile", legacy=0)),
                      constraints=SPACE.constraints, blocks=SPACE.blocks)
    journal = Journal(log, SETTINGS, resume=True, complete=grown.complete)
    start, _ = journal.start("g", {**DEFAULT, "cols": 16}, "the default")
    assert start == {**DEFAULT, "cols": 0} and grown.problem(start) is None
    after = Fake(bowl)
    replay = journal.replaying("g", lambda: after)
    assert replay.verify([start, {**start, "warps": 2}]) == [None, None]
    assert replay.replayed == 2 and after.verified == []  # both answered by the log
    journal.close()

    strict = KnobSpace(knobs=(*SPACE.knobs, Knob("cols", (0, 16), "column tile")), blocks=SPACE.blocks)
    journal = Journal(log, SETTINGS, resume=True, complete=strict.complete)
    start, _ = journal.start("g", DEFAULT, "the default")
    assert strict.problem(start) == "knob 'cols' missing"
    journal.close()
