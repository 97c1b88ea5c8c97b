"""The regression gate's decisions: match two results files by (sweep, case id, impl), give each
pair a verdict from the raw ``samples_us``, and turn the verdicts into an exit code.

Pure functions, no I/O (the command in `ssmbench.cli.compare` reads files and prints); the
Markdown and JUnit renderings are built here as strings.

Statistics (justified in docs/gate.md): the ratio of medians new/old with a percentile bootstrap
interval at the gate's confidence. The bootstrap distribution of a sample's median is known in
closed form (a binomial tail per order statistic), so each replicate is drawn exactly in O(1):
20,000 draws for a whole sweep take milliseconds, and a fixed seed makes verdicts reproducible.

Verdicts, with the threshold band [1 - t, 1 + t] around a ratio of 1:

- ``SLOWER``: median ratio > 1 + t **and** the whole interval above 1 + t;
- ``FASTER``: median ratio < 1 - t **and** the whole interval below 1 - t;
- ``SAME``: the whole interval inside the band;
- ``AMBIGUOUS``: anything else (the interval straddles a band edge, or too few samples);
- ``NEW`` (no usable baseline record), ``MISSING`` (in the baseline, not measured now),
  ``FAILED`` (the new record's status is ``fail`` or ``error``: always gates), ``REDRAWN`` (both
  records carry a workload digest and they differ: the two runs timed different work, e.g. after
  a change to how workloads are drawn; not compared, exit 2 until the baseline is re-stored).

A baseline stored from several runs (``run_medians_us``) widens the band to the range of states
the pair was seen in, [(1 - t) low, (1 + t) high] (`baseline_span`, `verdict_for`).

Never green on nothing: two files that share no pair measured on both sides, or an ``ok`` record
without usable samples, are unusable input (`input_problem`, exit 2), and ``--fail-on-missing``
makes MISSING pairs exit 2 too. Beside the verdicts, `shift_diagnosis` tells a machine-wide shift
(every pair moved alike: another machine's clocks or bandwidth) from a regression of some pairs;
it is information for the reader and changes no verdict.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from ssmbench.output.results import CaseRecord, LogContents, usable_samples
from ssmbench.output.stats import median

DEFAULT_THRESHOLD_PCT = 3.0
DEFAULT_CONFIDENCE = 0.99
CLOCK_WARN_FRACTION = 0.05
"""Clocks (SM MHz) of the two runs differing by more than this fraction get a warning."""
MIN_SAMPLES = 8
"""Below this many samples on either side the interval is not computed: AMBIGUOUS."""

VERDICTS = ("FAILED", "REDRAWN", "SLOWER", "AMBIGUOUS", "MISSING", "NEW", "SAME", "FASTER")
"""Worst first: the order of the table."""
GATING = ("FAILED", "REDRAWN", "SLOWER")
"""Verdicts that fail the gate (JUnit failures)."""

COMPARED = ("SLOWER", "AMBIGUOUS", "SAME", "FASTER")
"""Verdicts of pairs measured on both sides (the ones a shift diagnosis looks at)."""

EXIT_OK, EXIT_SLOWER, EXIT_FAILED, EXIT_AMBIGUOUS = 0, 1, 2, 3


@dataclass(frozen=True)
class Gate:
    """How a sweep is gated: the band half-width (percent) and the interval's confidence."""

    threshold_pct: float = DEFAULT_THRESHOLD_PCT
    confidence: float = DEFAULT_CONFIDENCE


# -- statistics ------------------------------------------------------------------------------


RESAMPLES = 20_000
"""Bootstrap draws of the ratio. Each draw is exact (see `_median_rank_cdf`), so this only sets
the Monte Carlo error of the interval's ends: about 0.07 percentile points at the 0.5% tail."""
SEED = 20_260_101
"""Fixed: the same two files always give the same verdicts."""
EXACT_RANK_MAX_N = 6000
"""Above this many samples the rank distribution uses the normal approximation of the binomial."""


@lru_cache(maxsize=64)
def _median_rank_cdf(n: int) -> np.ndarray:
    """F[j-1] = P(the lower median of a bootstrap resample of n sorted values is <= the j-th).

    A resample's lower median (rank m = ceil(n/2)) is <= x_(j) exactly when at least m of its n
    draws are among the j smallest values: P = P(Binomial(n, j/n) >= m). So the bootstrap
    distribution of the median is known without resampling; drawing from it is exact and costs
    O(1) per draw instead of O(n)."""
    m = (n + 1) // 2
    j = np.arange(1, n + 1, dtype=np.float64)
    p = j / n
    if n > EXACT_RANK_MAX_N:  # normal approximation with continuity correction: error << 1e-3
        sd = np.sqrt(np.maximum(n * p * (1 - p), 1e-300))
        z = (m - 0.5 - n * p) / sd
        cdf = 0.5 * np.vectorize(math.erfc)(z / math.sqrt(2.0))
    else:
        i = np.arange(m, n + 1, dtype=np.float64)
        log_comb = np.array([math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) for k in i])
        with np.errstate(divide="ignore", invalid="ignore"):
            log_terms = (log_comb[None, :] + i[None, :] * np.log(p)[:, None]
                         + (n - i)[None, :] * np.log1p(-p)[:, None])
        log_terms[-1, :-1] = -np.inf  # p = 1: all mass at i = n
        log_terms[-1, -1] = 0.0
        top = np.max(log_terms, axis=1, keepdims=True)
        cdf = np.exp(top[:, 0]) * np.sum(np.exp(log_terms - top), axis=1)
    cdf = np.minimum(np.maximum.accumulate(cdf), 1.0)
    cdf[-1] = 1.0
    return cdf


def bootstrap_medians(samples: Sequence[float], draws: int, rng: np.random.Generator) -> np.ndarray:
    """``draws`` bootstrap replicates of the (lower) median of ``samples``."""
    ordered = np.sort(np.asarray(samples, dtype=np.float64))
    cdf = _median_rank_cdf(len(ordered))
    ranks = np.searchsorted(cdf, rng.random(draws), side="left")
    return ordered[np.minimum(ranks, len(ordered) - 1)]


@dataclass(frozen=True)
class RatioInterval:
    ratio: float
    """median(new) / median(old)"""
    lo: float
    hi: float


def ratio_interval(new: Sequence[float], old: Sequence[float], confidence: float,
                   draws: int = RESAMPLES, seed: int = SEED) -> RatioInterval:
    """The ratio of medians new/old and its two-sided percentile-bootstrap ``confidence``
    interval (the two runs resampled independently; seeded, so reproducible)."""
    if not 0.5 < confidence < 1.0:
        raise ValueError(f"confidence {confidence}; allowed: 0.5 < confidence < 1")
    new, old = [float(x) for x in new], [float(x) for x in old]
    for label, values in (("new", new), ("old", old)):
        if len(values) < MIN_SAMPLES:
            raise ValueError(f"{len(values)} {label} samples; need at least {MIN_SAMPLES}")
        if not min(values) > 0:
            raise ValueError(f"{label} samples must be positive")
    rng = np.random.default_rng(seed)
    ratios = bootstrap_medians(new, draws, rng) / bootstrap_medians(old, draws, rng)
    tail = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(ratios, [tail, 1.0 - tail])
    return RatioInterval(median(new) / median(old), float(lo), float(hi))


SINGLE_RUN = (1.0, 1.0)
"""`baseline_span` of a baseline measured in one run."""


def verdict_for(interval: RatioInterval, threshold_pct: float, span: tuple[float, float] = SINGLE_RUN) -> str:
    """SLOWER / FASTER / SAME / AMBIGUOUS from the interval and the band (module docstring).

    ``span``: the lowest and highest state the baseline pair was seen in, as ratios to its
    samples' median (`baseline_span`; one run: (1, 1)). The band is laid around that range:
    SLOWER must be beyond +t of the slowest state, FASTER beyond -t of the fastest, SAME inside
    the band around the range."""
    lower, upper = band(threshold_pct, span)
    if interval.ratio > upper and interval.lo > upper:
        return "SLOWER"
    if interval.ratio < lower and interval.hi < lower:
        return "FASTER"
    if interval.lo >= lower and interval.hi <= upper:
        return "SAME"
    return "AMBIGUOUS"


def band(threshold_pct: float, span: tuple[float, float] = SINGLE_RUN) -> tuple[float, float]:
    """The band's edges as ratios to the baseline's median: ``(1 - t) low`` and ``(1 + t) high``."""
    t = threshold_pct / 100.0
    return (1 - t) * span[0], (1 + t) * span[1]


def baseline_span(old: CaseRecord) -> tuple[float, float]:
    """The range of a baseline pair's run medians relative to its samples' median (1 included):
    (1, 1) for a baseline of one run."""
    runs = old.run_medians_us
    if len(runs) < 2 or not usable_samples(old.samples_us):
        return SINGLE_RUN
    own = median(old.samples_us)
    return min(1.0, min(runs) / own), max(1.0, max(runs) / own)


# -- one pair --------------------------------------------------------------------------------


@dataclass
class Row:
    """One (sweep, case, impl) of the comparison."""

    sweep: str
    id: str
    impl: str
    verdict: str
    old_median_us: float | None = None
    new_median_us: float | None = None
    interval: RatioInterval | None = None
    old_n: int = 0
    new_n: int = 0
    note: str = ""
    threshold_pct: float = DEFAULT_THRESHOLD_PCT
    reruns: int = 0
    """Fresh measurements the verdict was decided on (0: the NEW file's samples)."""
    devices: tuple[str, str] | None = None
    """(NEW's GPU, the baseline's GPU) of a compared pair, as the records name them (uuid)."""

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.sweep, self.id, self.impl)

    @property
    def change_pct(self) -> float | None:
        return None if self.interval is None else (self.interval.ratio - 1.0) * 100.0

    def interval_text(self) -> str:
        if self.interval is None:
            return ""
        return f"[{(self.interval.lo - 1) * 100:+.1f}, {(self.interval.hi - 1) * 100:+.1f}]%"


def compare_samples(sweep: str, case_id: str, impl: str, new: Sequence[float], old: Sequence[float],
                    gate: Gate, span: tuple[float, float] = SINGLE_RUN) -> Row:
    """The verdict of two sample lists of the same pair (``span``: `verdict_for`)."""
    row = Row(sweep, case_id, impl, "AMBIGUOUS", old_median_us=median(old) if old else None,
              new_median_us=median(new) if new else None, old_n=len(old), new_n=len(new),
              threshold_pct=gate.threshold_pct)
    try:
        row.interval = ratio_interval(new, old, gate.confidence)
    except ValueError as exc:
        if row.old_median_us and row.new_median_us:
            ratio = row.new_median_us / row.old_median_us
            row.interval = RatioInterval(ratio, -math.inf, math.inf)
        row.note = f"no interval: {exc}"
        return row
    row.verdict = verdict_for(row.interval, gate.threshold_pct, span)
    if span != SINGLE_RUN:
        row.note = f"baseline runs {(span[0] - 1) * 100:+.1f}..{(span[1] - 1) * 100:+.1f}%"
    return row


def compare_pair(new: CaseRecord | None, old: CaseRecord | None, gate: Gate) -> Row | None:
    """One matched key; None when there is nothing to say (skipped on both sides)."""
    some = new or old
    assert some is not None
    sweep, case_id, impl = some.sweep, some.id, some.impl
    if new is not None and new.status in ("fail", "error"):
        return Row(sweep, case_id, impl, "FAILED", old_median_us=old.median_us if old else None,
                   note=f"{new.status}: {new.message}"[:300], threshold_pct=gate.threshold_pct)
    old_ok = old is not None and old.status == "ok" and usable_samples(old.samples_us)
    new_ok = new is not None and new.status == "ok" and usable_samples(new.samples_us)
    if new_ok and old_ok and new.workload and old.workload and new.workload != old.workload:
        return Row(sweep, case_id, impl, "REDRAWN", old_median_us=old.median_us, new_median_us=new.median_us,
                   old_n=len(old.samples_us), new_n=len(new.samples_us), threshold_pct=gate.threshold_pct,
                   note=f"workload {old.workload} in the baseline, {new.workload} now: the case's slots, "
                        "acceptance or pnat were drawn differently; re-store the baseline")
    if new_ok and old_ok:
        row = compare_samples(sweep, case_id, impl, new.samples_us, old.samples_us, gate, baseline_span(old))
        row.devices = (new.gpu or "?", old.gpu or "?")
        return row
    if new_ok:
        why = "not in the baseline" if old is None else f"baseline status {old.status}"
        return Row(sweep, case_id, impl, "NEW", new_median_us=new.median_us, new_n=len(new.samples_us),
                   note=why, threshold_pct=gate.threshold_pct)
    if old is not None and old.status == "ok":  # without samples too: `input_problem` refuses it if NEW has it
        why = "not in NEW" if new is None else f"now {new.status}: {new.message}"[:300]
        return Row(sweep, case_id, impl, "MISSING", old_median_us=old.median_us, old_n=len(old.samples_us),
                   note=why, threshold_pct=gate.threshold_pct)
    return None


def decide_rerun(sweep: str, case_id: str, impl: str, rounds: Sequence[Sequence[float]], old: Sequence[float],
                 gate: Gate, span: tuple[float, float] = SINGLE_RUN) -> Row:
    """The verdict from fresh re-measurements (``--rerun``): the rounds' samples pooled against the
    baseline's, and a SLOWER / FASTER kept only when every round's own median is beyond the band
    on the same side. Each round is a separate sweep run (fresh worker, fresh CUDA context), so
    this is the between-run check a single run's samples cannot give."""
    pooled = [x for r in rounds for x in r]
    row = compare_samples(sweep, case_id, impl, pooled, old, gate, span)
    row.reruns = len(rounds)
    old_median = median(list(old))
    changes = [(median(list(r)) / old_median - 1.0) * 100.0 for r in rounds if r]
    below, above = ((edge - 1.0) * 100.0 for edge in band(gate.threshold_pct, span))
    row.note = (f"{row.note}; " if row.note else "") + "rounds " + ", ".join(f"{c:+.1f}%" for c in changes)
    if row.verdict == "SLOWER" and not all(c > above for c in changes):
        row.verdict, row.note = "AMBIGUOUS", row.note + f": not every round beyond {above:+.3g}%"
    elif row.verdict == "FASTER" and not all(c < below for c in changes):
        row.verdict, row.note = "AMBIGUOUS", row.note + f": not every round beyond {below:+.3g}%"
    return row


# -- two files -------------------------------------------------------------------------------


@dataclass
class Comparison:
    rows: list[Row]
    warnings: list[str] = field(default_factory=list)
    calibration: list[DeviceCalibration] = field(default_factory=list)
    """Both runs' GPUs as their files record them (NEW first)."""
    fail_on_missing: bool = False
    """``--fail-on-missing``: MISSING pairs exit 2."""

    @property
    def counts(self) -> dict[str, int]:
        return verdict_counts(self.rows)

    @property
    def exit_code(self) -> int:
        return exit_code(self.rows, self.fail_on_missing)

    @property
    def gating(self) -> tuple[str, ...]:
        return gating_verdicts(self.fail_on_missing)

    @property
    def shift(self) -> ShiftDiagnosis:
        return shift_diagnosis(self.rows, self.calibration)

    @property
    def by_device(self) -> list[str]:
        return device_breakdown(self.rows, self.calibration)


# -- can the two files be compared at all ---------------------------------------------------


def _pair_name(key: tuple[str, str, str]) -> str:
    return "/".join(key)


def _without_samples(results: LogContents, keys: Iterable[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    """Keys among ``keys`` whose record is ``ok`` but carries no usable samples."""
    return [k for k in keys if results.records[k].status == "ok" and not usable_samples(results.records[k].samples_us)]


def _describe_side(results: LogContents) -> str:
    ok = [k for k, r in results.records.items() if r.status == "ok"]
    sweeps = sorted({k[0] for k in results.records})
    return (f"{len(ok)} ok pair(s) of {len(results.records)}, sweep(s) {', '.join(sweeps[:4]) or 'none'}"
            + (", ..." if len(sweeps) > 4 else ""))


def input_problem(new: LogContents, old: LogContents) -> str | None:
    """Why NEW and the baseline cannot be gated against each other (exit 2), or None.

    - an ``ok`` record of NEW without usable samples (an ok record must carry its samples);
    - the same for a baseline record NEW also has (the pair would be compared on nothing);
    - no (sweep, case id, impl) pair measured with samples on both sides and no FAILED pair:
      the wrong baseline, or a NEW of another sweep. A gate that compared nothing is not green.
    """
    for label, results, keys in (("NEW", new, list(new.records)),
                                 ("the baseline", old, [k for k in old.records if k in new.records])):
        bad = _without_samples(results, keys)
        if bad:
            return (f"{label} has {len(bad)} ok record(s) without usable samples (e.g. {_pair_name(bad[0])}); "
                    "an ok record must carry its samples_us")
    shared = [k for k in new.records if k in old.records and new.records[k].status == "ok"
              and old.records[k].status == "ok"]
    failed = any(r.status in ("fail", "error") for r in new.records.values())
    if not shared and not failed:
        return (f"NEW and the baseline share no (sweep, case id, impl) pair measured ok on both sides "
                f"(NEW: {_describe_side(new)}; baseline: {_describe_side(old)}): the wrong baseline, or a NEW "
                "from another sweep?")
    return None


def gpu_names(results: LogContents) -> list[str]:
    """The GPU model names of a results file (``env.gpus[].name``), sorted, distinct."""
    return sorted({str(d.get("name")) for d in results.devices.values() if d.get("name")})


def device_mismatch(new: LogContents, old: LogContents) -> str | None:
    """Why the two files were measured on different GPU models, or None."""
    new_names, old_names = gpu_names(new), gpu_names(old)
    if new_names == old_names:
        return None
    return (f"NEW was measured on {', '.join(new_names) or 'no recorded GPU'}, the baseline on "
            f"{', '.join(old_names) or 'no recorded GPU'}")


def _clock_mid(record: CaseRecord) -> float | None:
    clock = record.clock or {}
    lo, hi = clock.get("sm_mhz_min"), clock.get("sm_mhz_max")
    if lo is None or hi is None:
        return None
    return (float(lo) + float(hi)) / 2.0


def environment_warnings(new: LogContents, old: LogContents,
                         pairs: Iterable[tuple[CaseRecord | None, CaseRecord | None]]) -> list[str]:
    """Differences that make a comparison less trustworthy (but not meaningless): clocks more
    than 5% apart, different timers, a run interrupted, the test slowdown knob."""
    warnings: list[str] = []
    new_max = {d.get("max_sm_mhz") for d in new.devices.values()} - {None}
    old_max = {d.get("max_sm_mhz") for d in old.devices.values()} - {None}
    if new_max and old_max and abs(max(new_max) / max(old_max) - 1) > CLOCK_WARN_FRACTION:
        warnings.append(f"max SM clocks differ: NEW {sorted(new_max)} MHz, baseline {sorted(old_max)} MHz")
    apart = []
    for n, o in pairs:
        if n is None or o is None:
            continue
        cn, co = _clock_mid(n), _clock_mid(o)
        if cn and co and abs(cn / co - 1) > CLOCK_WARN_FRACTION:
            apart.append(f"{n.id} ({co:.0f} -> {cn:.0f} MHz)")
    if apart:
        warnings.append(f"SM clocks differ by more than {CLOCK_WARN_FRACTION:.0%} in {len(apart)} pair(s), e.g. "
                        + "; ".join(apart[:3]))
    timers_new = {str(d.get("timer")) for d in new.devices.values()}
    timers_old = {str(d.get("timer")) for d in old.devices.values()}
    if timers_new and timers_old and timers_new != timers_old:
        warnings.append(f"timers differ: NEW {', '.join(sorted(timers_new))}, baseline "
                        f"{', '.join(sorted(timers_old))} (cuda-event spans include launch gaps)")
    for label, results in (("NEW", new), ("baseline", old)):
        if results.env.get("complete") is False:
            warnings.append(f"{label} is from an interrupted run (env.complete false)")
        if results.env.get("test_slowdown"):
            warnings.append(f"{label} was measured with the TEST slowdown knob "
                            f"(SSMBENCH_TEST_SLOWDOWN={results.env['test_slowdown']}): not a real measurement")
    return warnings


def compare_results(new: LogContents, old: LogContents, gates: dict[str, Gate] | None = None,
                    default: Gate = Gate()) -> Comparison:
    """Every key of either file, matched by (sweep, case id, impl), with its verdict. ``gates``
    gives a sweep's own settings (from its spec); others use ``default``."""
    gates = gates or {}
    keys = list(new.records) + [k for k in old.records if k not in new.records]
    rows, pairs = [], []
    for key in keys:
        n, o = new.records.get(key), old.records.get(key)
        pairs.append((n, o))
        row = compare_pair(n, o, gates.get(key[0], default))
        if row is not None:
            rows.append(row)
    return Comparison(sort_rows(rows), environment_warnings(new, old, pairs),
                      device_calibrations(new, "NEW") + device_calibrations(old, "baseline"))


# -- calibration and the shift diagnosis -----------------------------------------------------


def _number(value: Any) -> float | None:
    """A finite number from a device field, else None (records built in code are not validated)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


@dataclass(frozen=True)
class DeviceCalibration:
    """One GPU of one run as its results record it (``env.gpus[]`` and ``env.hostname``)."""

    run: str
    name: str
    uuid: str
    hostname: str
    copy_tbps: float | None
    datasheet_tbps: float | None
    max_sm_mhz: float | None
    max_mem_mhz: float | None
    l2_bytes: float | None
    driver: str


def device_calibrations(results: LogContents, run: str) -> list[DeviceCalibration]:
    """The run's GPUs: measured copy bandwidth, datasheet bandwidth, max clocks, L2, driver."""
    out = []
    for device in results.devices.values():
        bandwidth = device.get("bandwidth") if isinstance(device.get("bandwidth"), dict) else {}
        out.append(DeviceCalibration(
            run, _text(device.get("name")), _text(device.get("uuid")), _text(results.env.get("hostname")),
            _number(bandwidth.get("measured_tbps")), _number(bandwidth.get("datasheet_tbps")),
            _number(device.get("max_sm_mhz")), _number(device.get("max_mem_mhz")), _number(device.get("l2_bytes")),
            _text(device.get("driver"))))
    return out


def copy_bandwidth(calibration: Iterable[DeviceCalibration], run: str) -> float | None:
    """The median measured copy bandwidth of one run's GPUs (TB/s), None when not measured."""
    values = [c.copy_tbps for c in calibration if c.run == run and c.copy_tbps]
    return float(np.median(values)) if values else None


CALIBRATION_HEADER = ["run", "GPU", "uuid", "host", "copy TB/s", "datasheet TB/s", "max SM MHz", "max mem MHz",
                      "L2 MiB", "driver"]


def calibration_rows(calibration: Sequence[DeviceCalibration]) -> list[list[str]]:
    """Cells of the calibration table, one row per GPU of either run (NEW first); ``-`` = not recorded."""
    def num(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    return [[c.run, c.name or "-", c.uuid or "-", c.hostname or "-", num(c.copy_tbps, ".3f"),
             num(c.datasheet_tbps, ".2f"), num(c.max_sm_mhz, ".0f"), num(c.max_mem_mhz, ".0f"),
             num(None if c.l2_bytes is None else c.l2_bytes / 2**20, ".0f"), c.driver or "-"] for c in calibration]


SHIFT_MIN_PAIRS = 3
"""Fewer compared pairs than this: no diagnosis (a median of two says nothing about a machine)."""
SHIFT_SAME_SIDE = 0.9
"""A machine-wide shift moves at least this fraction of the pairs the way the median moved."""
SHIFT_MAX_SPREAD = 0.5
"""... and its spread (IQR of the changes) is at most this fraction of the median change."""


@dataclass(frozen=True)
class ShiftDiagnosis:
    """Whether the pairs moved together (docs/gate.md, "Machine-wide shift or regression")."""

    kind: str
    """``machine-wide``, ``some-pairs``, ``none`` or ``too-few``."""
    pairs: int
    median_pct: float | None = None
    spread_pct: float | None = None
    same_side: int = 0
    slower: int = 0
    copy_change_pct: float | None = None

    @property
    def text(self) -> str:
        if self.kind == "too-few":
            return f"no shift diagnosis: {self.pairs} compared pair(s), need {SHIFT_MIN_PAIRS}"
        moved = f"{self.median_pct:+.1f}%"
        copy = ("copy bandwidth not recorded on both runs" if self.copy_change_pct is None
                else f"copy bandwidth differs by {self.copy_change_pct:+.1f}%")
        if self.kind == "machine-wide":
            who = "all" if self.same_side == self.pairs else f"{self.same_side} of"
            return (f"machine-wide shift: {who} {self.pairs} compared pairs moved {moved} "
                    f"(spread {self.spread_pct:.1f}%), {copy}")
        if self.kind == "some-pairs":
            return (f"regression of some pairs: {self.slower} of {self.pairs} pairs SLOWER while the median "
                    f"pair moved {moved} (spread {self.spread_pct:.1f}%)")
        return f"no shift: the median pair moved {moved} (spread {self.spread_pct:.1f}%), {copy}"


def shift_diagnosis(rows: Sequence[Row], calibration: Sequence[DeviceCalibration] = ()) -> ShiftDiagnosis:
    """Machine-wide shift vs regression of some pairs, from the compared pairs' changes.

    With m the median change, s the IQR of the changes and t the band (percent): a
    **machine-wide shift** when |m| > t/2, at least 90% of the pairs changed with the sign of m,
    and s <= |m|/2 (the pairs moved together); else a **regression of some pairs** when any pair
    is SLOWER; else **no shift**. Information only: verdicts and exit codes do not depend on it.
    """
    compared = [r for r in rows if r.verdict in COMPARED and r.change_pct is not None]
    new_copy, old_copy = copy_bandwidth(calibration, "NEW"), copy_bandwidth(calibration, "baseline")
    copy_change = (new_copy / old_copy - 1.0) * 100.0 if new_copy and old_copy else None
    if len(compared) < SHIFT_MIN_PAIRS:
        return ShiftDiagnosis("too-few", len(compared), copy_change_pct=copy_change)
    changes = np.array([r.change_pct for r in compared], dtype=np.float64)
    m = float(np.median(changes))
    q25, q75 = np.percentile(changes, [25, 75])
    spread = float(q75 - q25)
    same = int(np.sum(changes > 0)) if m > 0 else int(np.sum(changes < 0)) if m < 0 else 0
    t = float(np.median([r.threshold_pct for r in compared]))
    slower = sum(r.verdict == "SLOWER" for r in compared)
    if abs(m) > t / 2 and same >= SHIFT_SAME_SIDE * len(compared) and spread <= SHIFT_MAX_SPREAD * abs(m):
        kind = "machine-wide"
    elif slower:
        kind = "some-pairs"
    else:
        kind = "none"
    return ShiftDiagnosis(kind, len(compared), m, spread, same, slower, copy_change)


def device_breakdown(rows: Sequence[Row], calibration: Sequence[DeviceCalibration] = ()) -> list[str]:
    """The compared pairs grouped by (NEW's GPU, the baseline's GPU), one line each, when the runs
    used more than one device pairing (a ``--gpus`` or sharded run on one side): each group's
    pairs, median change and SLOWER count, and the GPUs' copy bandwidth. GPUs of one model differ
    by a few percent, and more on latency-bound pairs (docs/gpu-runs.md, issue 23), so a group
    that moved alone points at a device, not at the code. Information only, like the shift
    diagnosis; empty when every pair was compared on one device pairing."""
    groups: dict[tuple[str, str], list[Row]] = {}
    for row in rows:
        if row.verdict in COMPARED and row.change_pct is not None and row.devices is not None:
            groups.setdefault(row.devices, []).append(row)
    if len(groups) < 2:
        return []
    copy = {(c.run, c.uuid): c.copy_tbps for c in calibration}

    def name(run: str, uuid: str) -> str:
        tbps = copy.get((run, uuid))
        return uuid[:12] + (f" ({tbps:.3f} TB/s)" if tbps else "")

    lines = []
    for (new_gpu, old_gpu), group in sorted(groups.items(), key=lambda item: -len(item[1])):
        change = float(np.median([r.change_pct for r in group]))
        slower = sum(r.verdict == "SLOWER" for r in group)
        lines.append(f"NEW on {name('NEW', new_gpu)} vs baseline on {name('baseline', old_gpu)}: "
                     f"{len(group)} pairs, median {change:+.1f}%, {slower} slower")
    return lines


# -- verdicts to outcomes --------------------------------------------------------------------


def sort_rows(rows: Iterable[Row]) -> list[Row]:
    """Worst first: by verdict (VERDICTS order), then by change, largest slowdown first."""
    def key(row: Row) -> tuple[int, float, str, str]:
        change = row.change_pct
        return (VERDICTS.index(row.verdict), -(change if change is not None else math.inf), row.id, row.impl)

    return sorted(rows, key=key)


def verdict_counts(rows: Iterable[Row]) -> dict[str, int]:
    counts = dict.fromkeys(VERDICTS, 0)
    for row in rows:
        counts[row.verdict] += 1
    return counts


def gating_verdicts(fail_on_missing: bool = False) -> tuple[str, ...]:
    """Verdicts that fail the gate: FAILED, REDRAWN and SLOWER, and MISSING with ``--fail-on-missing``."""
    return GATING + (("MISSING",) if fail_on_missing else ())


def exit_code(rows: Iterable[Row], fail_on_missing: bool = False) -> int:
    """2 a FAILED or REDRAWN pair (or, with ``fail_on_missing``, a MISSING one), else 1 a SLOWER one, else 3 an
    AMBIGUOUS one, else 0 (FASTER, SAME, NEW and MISSING never fail the gate). An empty comparison
    is unusable input: 2. Exit 1 means SLOWER and nothing else."""
    counts = verdict_counts(rows)
    if not sum(counts.values()):
        return EXIT_FAILED
    if counts["FAILED"] or counts["REDRAWN"] or (fail_on_missing and counts["MISSING"]):
        return EXIT_FAILED
    if counts["SLOWER"]:
        return EXIT_SLOWER
    if counts["AMBIGUOUS"]:
        return EXIT_AMBIGUOUS
    return EXIT_OK


PRESENCE = ("MISSING", "NEW")
"""Verdicts of pairs on one side only: always counted in the summary, also when 0."""


def summary_line(rows: Sequence[Row]) -> str:
    """``3 SLOWER, 52 SAME; 0 MISSING, 1 NEW``: the verdicts that occurred, then MISSING and NEW
    always (a pair the baseline has and NEW lacks must be visible in a green run)."""
    counts = verdict_counts(rows)
    verdicts = ", ".join(f"{n} {v}" for v, n in counts.items() if n and v not in PRESENCE) or "nothing compared"
    return verdicts + "; " + ", ".join(f"{counts[v]} {v}" for v in PRESENCE)


def _us(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def _change(row: Row) -> str:
    change = row.change_pct
    return "" if change is None else f"{change:+.1f}%"


def table_rows(rows: Sequence[Row]) -> list[list[str]]:
    """Cells of the table: case id, impl, old, new, change, interval, verdict, note."""
    return [[row.id, row.impl, _us(row.old_median_us), _us(row.new_median_us), _change(row), row.interval_text(),
             row.verdict + (f" (rerun x{row.reruns})" if row.reruns else ""), row.note] for row in rows]


TABLE_HEADER = ["case id", "impl", "old us", "new us", "change", "interval", "verdict", "note"]


def to_markdown(comparison: Comparison, new_name: str, old_name: str, gate: Gate) -> str:
    """A job summary: verdict counts, warnings, and the table (worst first)."""
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    missing = comparison.counts["MISSING"]
    lines = [f"## ssmbench compare: {summary_line(comparison.rows)}", "",
             f"NEW `{new_name}` vs baseline `{old_name}`; band ±{gate.threshold_pct:g}%, "
             f"{gate.confidence:.0%} interval of the median ratio; exit code {comparison.exit_code}"
             + (f" ({missing} MISSING with --fail-on-missing)" if comparison.fail_on_missing and missing else "")
             + ".", "", f"**diagnosis**: {cell(comparison.shift.text)}", ""]
    lines += [f"- by GPU: {cell(line)}" for line in comparison.by_device] + ([""] if comparison.by_device else [])
    for warning in comparison.warnings:
        lines.append(f"> **warning**: {cell(warning)}")
    if comparison.warnings:
        lines.append("")
    lines.append("| " + " | ".join(TABLE_HEADER) + " |")
    lines.append("|" + "---|" * len(TABLE_HEADER))
    for cells in table_rows(comparison.rows):
        cells[-2] = f"**{cells[-2]}**" if cells[-2].split()[0] in comparison.gating else cells[-2]
        lines.append("| " + " | ".join(cell(c) for c in cells) + " |")
    if comparison.calibration:
        lines += ["", "### Calibration (each run's GPUs, `env.gpus[]`)", ""]
        for cells in calibration_rows(comparison.calibration):
            lines.append(f"- **{cell(cells[0])}** " + "; ".join(
                f"{name} {cell(value)}" for name, value in zip(CALIBRATION_HEADER[1:], cells[1:], strict=True)))
    return "\n".join(lines) + "\n"


def to_junit(comparison: Comparison, suite: str = "ssmbench compare") -> str:
    """JUnit XML: one testcase per (case, impl); SLOWER, FAILED and REDRAWN are failures, AMBIGUOUS and
    MISSING carry a message in system-out."""
    gating = comparison.gating
    failures = sum(1 for r in comparison.rows if r.verdict in gating)
    root = ET.Element("testsuites", name=suite, tests=str(len(comparison.rows)), failures=str(failures))
    ts = ET.SubElement(root, "testsuite", name=suite, tests=str(len(comparison.rows)), failures=str(failures),
                       errors="0", skipped="0")
    for row in comparison.rows:
        case = ET.SubElement(ts, "testcase", classname=_xml_text(f"{row.sweep}.{row.impl}"), name=_xml_text(row.id),
                             time="0")
        text = _xml_text(f"{row.verdict}: old {_us(row.old_median_us) or '-'} us, new {_us(row.new_median_us) or '-'} "
                         f"us, change {_change(row) or '-'}, interval {row.interval_text() or '-'}"
                         + (f"; {row.note}" if row.note else ""))
        if row.verdict in gating:
            failure = ET.SubElement(case, "failure", message=text, type=row.verdict)
            failure.text = text
        else:
            ET.SubElement(case, "system-out").text = text
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _xml_text(text: str) -> str:
    """Drop the characters XML 1.0 cannot hold (control characters in an error message)."""
    return "".join(c for c in text if c in "\t\n\r" or (" " <= c and c not in "\ufffe\uffff"))


def gates_from_spec(sweeps: Iterable[Any]) -> dict[str, Gate]:
    """{sweep name: Gate} from a loaded sweep file's documents (their ``gate:`` sections)."""
    return {s.name: Gate(s.spec.gate.threshold_pct, s.spec.gate.confidence) for s in sweeps}
