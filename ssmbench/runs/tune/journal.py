"""The tuner's log: JSON lines, one per verification and per round of samples, appended and
fsynced as each is taken, so a killed tune loses at most the line it was writing (a torn last
line is cut on resume, as `ssmbench.output.results.ResultsLog` does for sweeps).

Resume is replay: the search (`ssmbench.runs.tune.search`) is deterministic given its
measurements, so each measurement is keyed by (group, sequence number) and `Replaying` answers
the search from the log while the log has the answer, and from the live measurer after. A
finished measurement is never taken twice; a log from another search (the config asked for
differs from the one logged at that position) is refused, not mixed in.

Lines: ``{"type": "tune", ...}`` (the settings, once per run), ``{"type": "verify", "group",
"seq", "config", "problem"}``, ``{"type": "round", "group", "seq", "config", "samples_us"}``,
``{"type": "discard", "group", "seq", "config", "problem"}`` (that round faulted: `Fault`),
``{"type": "start", "group", "config", "source"}`` (where the group's descent starts: its table
entry or the default when the group was first run; a resumed tune starts there again even if the
table has changed since), ``{"type": "result", "group", ...}`` (a group's outcome: replay reads
only its ``stopped``).

The budget is wall-clock time, so whether the search stopped for it is not a function of the
measurements: a replay (which takes no time) would go on where the logged search had stopped,
and ask for what the log does not hold. `Replaying.out_of_time` answers the search's budget
checks from the log instead, exactly: after a check that let the search go on, its next step is a
block's verification; after one that stopped it, the confirming duel's round (or the group's end).
So at a check, a logged ``verify`` next means "go on", a logged ``round``/``discard`` next means
"stop", a group whose result is logged and nothing next means what the result says, and past
the log the live clock decides.

A `Fault` (the process can run nothing more) is logged before the tune stops: a verification's as
that config's ``verify`` line with the fault as its problem (and ``"fault": true``), a round's as a
``discard`` line. A resumed search is answered from them, and any later verification or round of
that config in that group gets the fault again without running it: the tune goes on without it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ssmbench.errors import UsageError
from ssmbench.impls.knobs import Config
from ssmbench.output.results import ResultsLog, read_results_text
from ssmbench.runs.tune.search import Discarded, Fault, Measurer, config_key

SETTINGS = ("impl", "spec_name", "rounds", "samples", "threshold_pct", "confidence", "max_passes")
"""Header fields a resumed tune must share with the log (else its replay would not match)."""


class Journal:
    def __init__(self, path: Path, settings: dict[str, Any], resume: bool,
                 complete: Callable[[Config], Config] = lambda config: config) -> None:
        """``complete``: the space's `KnobSpace.complete`, applied to every logged config as it is
        read, so a log written before a knob existed replays as the knob's legacy value."""
        self.path = Path(path)
        self.complete = complete
        self.logged: dict[tuple[str, int], dict[str, Any]] = {}
        self.starts: dict[str, tuple[Config, str]] = {}
        """group -> the logged start (``start`` lines) and why it was chosen."""
        self.stopped: dict[str, str] = {}
        """group -> how its logged search stopped (``result`` lines): the budget checks' replay."""
        self.faulted: dict[tuple[str, str], str] = {}
        """(group, `config_key`) -> the fault: configs never run again in that group."""
        self.repaired = ""
        if resume and self.path.is_file():
            self.repaired = ResultsLog.cut_torn_tail(self.path)
            self._read(settings)
        elif self.path.exists() and not resume:
            raise UsageError(f"{self.path}: a tune log is already there; continue it with --resume, or pass --fresh "
                             "to start over")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a")  # noqa: SIM115 - closed in close()
        self.write({"type": "tune", **settings})

    def _read(self, settings: dict[str, Any]) -> None:
        for number, line in enumerate(read_results_text(self.path).splitlines(), 1):  # bad bytes: UsageError
            try:
                item = json.loads(line)
            except ValueError:
                raise UsageError(f"{self.path}:{number}: not a JSON line") from None
            if not isinstance(item, dict):
                raise UsageError(f"{self.path}:{number}: expected an object")
            if item.get("type") == "tune":
                for key in SETTINGS:
                    if item.get(key) != settings.get(key):
                        raise UsageError(f"{self.path}:{number}: logged with {key}={item.get(key)!r}, this tune "
                                         f"has {settings.get(key)!r}; use another -o or --fresh")
            elif item.get("type") == "start":
                if not isinstance(item.get("group"), str) or not isinstance(item.get("config"), dict):
                    raise UsageError(f"{self.path}:{number}: a start line needs 'group' and 'config'; use another "
                                     "-o or --fresh")
                self.starts[item["group"]] = (self.complete(item["config"]), str(item.get("source", "logged")))
            elif item.get("type") == "result" and isinstance(item.get("group"), str):
                self.stopped[item["group"]] = str(item.get("stopped"))
            elif item.get("type") in ("verify", "round", "discard"):
                if (problem := _malformed(item)) is not None:
                    raise UsageError(f"{self.path}:{number}: {problem}; use another -o or --fresh")
                item["config"] = self.complete(item["config"])
                self.logged[(item["group"], item["seq"])] = item
                if item["type"] == "discard" or item.get("fault") is True:
                    self.faulted[(item["group"], config_key(item["config"]))] = item["problem"]

    def start(self, group: str, config: Config, source: str) -> tuple[Config, str]:
        """The group's start: the logged one when there is one (a resume starts where the run did),
        else ``config`` (from ``source``), logged now."""
        if group not in self.starts:
            self.write({"type": "start", "group": group, "config": config, "source": source})
            self.starts[group] = (config, source)
        return self.starts[group]

    def write(self, item: dict[str, Any]) -> None:
        self._file.write(json.dumps(item) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    def replaying(self, group: str, live: Callable[[], Measurer]) -> Replaying:
        return Replaying(self, group, live)


def _malformed(item: dict[str, Any]) -> str | None:
    """Why a verify/round line cannot be replayed (None: it can)."""
    if not isinstance(item.get("group"), str):
        return "field 'group' missing or not a string"
    if not isinstance(item.get("seq"), int) or isinstance(item["seq"], bool):
        return "field 'seq' missing or not an integer"
    if not isinstance(item.get("config"), dict):
        return "field 'config' missing or not an object"
    if item["type"] == "verify":
        if not isinstance(item.get("problem", 0), str | None):
            return "field 'problem' missing or not a string or null"
    elif item["type"] == "discard":
        if not isinstance(item.get("problem"), str):
            return "field 'problem' missing or not a string"
    elif not isinstance(item.get("samples_us"), list) or not all(
            isinstance(x, int | float) and not isinstance(x, bool) for x in item["samples_us"]):
        return "field 'samples_us' missing or not a list of numbers"
    return None


class Replaying:
    """A `Measurer` that answers from the journal where it can, else measures (``live`` is built
    on first need: a group replayed whole never touches the GPU) and logs the answer."""

    def __init__(self, journal: Journal, group: str, live: Callable[[], Measurer]) -> None:
        self.journal, self.group, self._make_live = journal, group, live
        self._live: Measurer | None = None
        self.seq = 0
        self.replayed = 0

    @property
    def live(self) -> Measurer:
        if self._live is None:
            self._live = self._make_live()
        return self._live

    def _logged(self, kind: str, config: Config) -> dict[str, Any] | None:
        item = self.journal.logged.get((self.group, self.seq))
        if item is None:
            return None
        kinds = ("round", "discard") if kind == "round" else (kind,)  # a round may have faulted
        if item["type"] not in kinds or item["config"] != config:
            raise UsageError(f"{self.journal.path}: measurement {self.seq} of {self.group} is a {item['type']} of "
                             f"{item['config']}, but the search now asks for a {kind} of {config}: the log is from "
                             "another search; use another -o or --fresh")
        self.replayed += 1
        return item

    def out_of_time(self, clock: Callable[[], bool]) -> bool:
        """The search's budget check (``clock``: the live one), answered from the log while the
        log has this group's next step (module docstring)."""
        item = self.journal.logged.get((self.group, self.seq))
        if item is not None:
            return item["type"] != "verify"
        if self.group in self.journal.stopped:
            return self.journal.stopped[self.group] == "budget"
        return clock()

    def _fault(self, config: Config) -> str | None:
        """The fault ``config`` caused in this group before (None: none)."""
        return self.journal.faulted.get((self.group, config_key(config)))

    def verify(self, configs: Sequence[Config]) -> list[str | None]:
        answers: list[Any] = []
        missing: list[tuple[int, int, Config]] = []
        for config in configs:
            item = self._logged("verify", config)
            if item is None and (fault := self._fault(config)) is not None:
                self._write_verify(self.seq, config, fault, fault=True)  # not run again
                answers.append(fault)
            else:
                answers.append(item["problem"] if item is not None else None)
                if item is None:
                    missing.append((len(answers) - 1, self.seq, config))
            self.seq += 1
        if missing:
            try:
                problems = self.live.verify([c for _, _, c in missing])
            except Fault as fault:  # log what was answered and the culprit, then stop
                for (_, seq, config), problem in zip(missing, fault.answered, strict=False):
                    self._write_verify(seq, config, problem)
                self._write_verify(missing[len(fault.answered)][1], fault.config, fault.problem, fault=True)
                raise
            for (index, seq, config), problem in zip(missing, problems, strict=True):
                answers[index] = problem
                self._write_verify(seq, config, problem)
        return answers

    def _write_verify(self, seq: int, config: Config, problem: str | None, fault: bool = False) -> None:
        self.journal.write({"type": "verify", "group": self.group, "seq": seq, "config": config, "problem": problem,
                            **({"fault": True} if fault else {})})
        if fault and problem is not None:
            self.journal.faulted[(self.group, config_key(config))] = problem

    def sample(self, config: Config) -> list[float]:
        item = self._logged("round", config)
        seq = self.seq
        self.seq += 1
        if item is None and (fault := self._fault(config)) is not None:
            item = self._write_discard(seq, config, fault)  # not run again
        if item is not None and item["type"] == "discard":
            raise Discarded(config, item["problem"])
        if item is not None:
            return [float(x) for x in item["samples_us"]]
        try:
            samples = [float(x) for x in self.live.sample(config)]
        except Fault as fault:
            self._write_discard(seq, config, fault.problem)
            raise
        self.journal.write({"type": "round", "group": self.group, "seq": seq, "config": config, "samples_us": samples})
        return samples

    def _write_discard(self, seq: int, config: Config, problem: str) -> dict[str, Any]:
        item = {"type": "discard", "group": self.group, "seq": seq, "config": config, "problem": problem}
        self.journal.write(item)
        self.journal.faulted[(self.group, config_key(config))] = problem
        return item
