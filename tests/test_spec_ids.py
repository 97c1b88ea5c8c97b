"""Case ids identify the workload: two different cases never share an id, the headline keeps its
ids (so its stored baselines stay matched), ids stay readable and glob-friendly, and
`case_params` carries the whole workload."""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
from pathlib import Path

import pytest

from ssmbench.errors import SpecError, SpecErrors
from ssmbench.output.results import case_params
from ssmbench.spec.case import DEFAULT_ACCEPT, AcceptLaw, Case, measured_law
from ssmbench.spec.expand import expand, id_of
from ssmbench.spec.load import load_sweep_file
from ssmbench.spec.presets import GDNShape, Mamba2Shape

ROOT = Path(__file__).resolve().parent.parent
SWEEPS = ROOT / "sweeps"
BASELINES = ROOT / "baselines" / "nvidia-h100-80gb-hbm3"
ID_CHARS = re.compile(r"[A-Za-z0-9._-]+")

M = Mamba2Shape(16, 64, 128, 1, 4)
G = GDNShape(16, 64, 128, 128, 4)
BASE = Case(id="", sweep="s", family="mamba2", preset=None, tp=1, shape=M, batch=64, T=6, state_dtype="fp32",
            rounding="rn", pool="pool", accept=DEFAULT_ACCEPT, window=16, pdl=True, l2="realistic", seed=0,
            act_dtype="bf16", extras=(("tree", False), ("z_gate", False)))
GBASE = dataclasses.replace(BASE, family="gdn", shape=G, window=None,
                            extras=(("intermediate", False), ("scale", None), ("write_final", True)))


def _variants() -> list[Case]:
    """Cases differing from a base case in one or two workload fields at a time."""
    changes = {
        "shape": [Mamba2Shape(16, 64, 128, 1, 3), Mamba2Shape(16, 64, 128, 1, 2), Mamba2Shape(8, 64, 128, 1, 4),
                  Mamba2Shape(16, 80, 128, 1, 4), Mamba2Shape(16, 64, 64, 1, 4), Mamba2Shape(16, 64, 128, 2, 4)],
        "batch": [1, 640], "T": [4], "state_dtype": ["bf16", "fp16", "int8", "fp8"], "rounding": ["sr"],
        "pool": ["direct", "padded", "split"], "window": [6, 61], "pdl": [False], "l2": ["cold", "hot"],
        "seed": [1, 10, 2**32 - 1], "act_dtype": ["fp16", "fp32"],
        "accept": [measured_law(5), AcceptLaw("histogram", (1.0,) * 6), AcceptLaw("histogram", (2.0,) * 6),
                   AcceptLaw("histogram", (1.0, 2.0, 3.0, 4.0, 5.0, 7.0)), AcceptLaw("rate", (0.6,)),
                   AcceptLaw("rate", (0.6000000000000001,)), AcceptLaw("rate", (0.123456789,)),
                   AcceptLaw("rate", (0.12345678,)), AcceptLaw("rate", (1e-05,)), AcceptLaw("rate", (1.0,)),
                   AcceptLaw("rate", (0.0,)), AcceptLaw("fixed", (0.0, 3.0)), AcceptLaw("fixed", (0.0, 3.0, 5.0)),
                   AcceptLaw("fixed", (3.0, 0.0))],
        "extras": [(("tree", True), ("z_gate", False)), (("tree", False), ("z_gate", True)),
                   (("tree", True), ("z_gate", True))],
    }
    cases = [BASE, GBASE]
    singles = [(f, v) for f, values in changes.items() for v in values]
    for (f1, v1), (f2, v2) in itertools.combinations(singles, 2):
        if f1 != f2:
            cases.append(dataclasses.replace(BASE, **{f1: v1, f2: v2}))
    cases += [dataclasses.replace(BASE, **{f: v}) for f, v in singles]
    for extras in [(("intermediate", True), ("scale", None), ("write_final", True)),
                   (("intermediate", False), ("scale", None), ("write_final", False)),
                   (("intermediate", True), ("scale", None), ("write_final", False)),
                   (("intermediate", False), ("scale", 0.088), ("write_final", True)),
                   (("intermediate", False), ("scale", 0.0883883), ("write_final", True))]:
        cases.append(dataclasses.replace(GBASE, extras=extras))
        cases.append(dataclasses.replace(GBASE, extras=extras, shape=GDNShape(16, 64, 128, 128, 3)))
    return cases


def test_different_workloads_never_share_an_id() -> None:
    by_id: dict[str, Case] = {}
    for case in _variants():
        cid = id_of(case)
        assert ID_CHARS.fullmatch(cid), cid
        other = by_id.setdefault(cid, case)
        assert other == case, f"{cid}: {other} vs {case}"
    assert len(by_id) > 800


@pytest.mark.parametrize(("change", "token"), [
    ({"seed": 1}, "-s1"),
    ({"act_dtype": "fp16"}, "-actfp16"),
    ({"extras": (("tree", True), ("z_gate", True))}, "-tree-zgate"),
    ({"shape": Mamba2Shape(16, 64, 128, 1, 3)}, "H16P64N128G1c3-"),
    ({"accept": AcceptLaw("rate", (0.123456789,))}, "-rate0.123456789-"),
    ({"accept": AcceptLaw("rate", (1e-05,))}, "-rate0.00001-"),
    ({"accept": AcceptLaw("rate", (1.0,))}, "-rate1-"),
    ({"accept": AcceptLaw("fixed", (0.0, 3.0))}, "-pnat0-3-"),
])
def test_id_tokens(change: dict, token: str) -> None:
    assert token in id_of(dataclasses.replace(BASE, **change))


def test_histogram_labels() -> None:
    assert DEFAULT_ACCEPT.label() == "hist" and measured_law(4).label() == "hist"
    flat = AcceptLaw("histogram", (1.0,) * 6).label()
    assert re.fullmatch(r"hist-[0-9a-f]{6}", flat) and flat != AcceptLaw("histogram", (1.0,) * 5 + (2.0,)).label()


def test_gdn_option_tokens() -> None:
    extras = (("intermediate", True), ("scale", 0.088), ("write_final", False))
    assert id_of(dataclasses.replace(GBASE, extras=extras)) == \
        "H16HV64K128V128-b64-T6-fp32-pool-hist-pdl-realistic-inter-scale0.088-nofinal"


def test_headline_ids_unchanged_and_match_the_stored_baseline() -> None:
    """The headline (default histogram, seed 0, default options) keeps its ids exactly, so its
    stored H100 baseline still matches case by case."""
    cases = expand(load_sweep_file(SWEEPS / "nemotron3-super-tp8.yaml").sweeps[0]).cases
    ids = {c.id for c in cases}
    assert "H16P64N128G1-b64-T6-fp32-pool-w6-hist-pdl-realistic" in ids
    assert all(re.fullmatch(r"H16P64N128G1-b\d+-T6-\w+-pool-w(6|16)-hist-pdl-realistic", i) for i in ids)
    stored = json.loads((BASELINES / "nemotron3-super-tp8.json").read_text())["cases"]
    assert {r["id"] for r in stored} == ids


@pytest.mark.parametrize("name", ["smoke", "qwen35-gdn", "nemotron3-super-tp8"])
def test_stored_baselines_match_their_sweeps(name: str) -> None:
    """Every stored record names a case of the shipped sweep, with that case's params."""
    sweep_file = load_sweep_file(SWEEPS / f"{name}.yaml")
    cases = {(s.name, c.id): c for s in sweep_file.sweeps for c in expand(s).cases}
    for record in json.loads((BASELINES / f"{name}.json").read_text())["cases"]:
        case = cases[(record["sweep"], record["id"])]
        assert record["params"] == case_params(case)


@pytest.mark.parametrize("spec", sorted(SWEEPS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_ids_unique_and_glob_friendly(spec: Path) -> None:
    ids = [c.id for s in load_sweep_file(spec).sweeps for c in expand(s).cases]
    assert len(set(ids)) == len(ids)
    assert all(ID_CHARS.fullmatch(i) for i in ids)


SPEC = "family: gdn\nmodel: qwen3.5-397b-a17b\nimpls: [triton.gdn]\naxes: {batch: [1, 8]}\n"


def test_duplicate_ids_across_documents_are_an_error(tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text("name: a\n" + SPEC + "---\nname: b\n" + SPEC.replace("[1, 8]", "[8, 64]"))
    with pytest.raises(SpecError) as info:
        load_sweep_file(path)
    assert "'a' and 'b'" in str(info.value) and "b8" in str(info.value) and info.value.line == 7
    # differing only in options is fine: the options are in the id
    path.write_text("name: a\n" + SPEC + "---\nname: b\n" + SPEC + "options: {intermediate: true}\n")
    assert len(load_sweep_file(path).sweeps) == 2


def test_colliding_ids_within_a_document_are_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A (hypothetical) hash collision must not silently drop a different workload."""
    path = tmp_path / "s.yaml"
    path.write_text(SPEC.replace("{batch: [1, 8]}", "{T: 2, accept: [{histogram: [1, 1]}, {histogram: [1, 2]}]}"))
    assert len(expand(load_sweep_file(path).sweeps[0]).cases) == 2
    monkeypatch.setattr(AcceptLaw, "label", lambda self, T=None: "hist-000000")
    with pytest.raises((SpecError, SpecErrors), match="two different grid points get the case id"):
        load_sweep_file(path)


def test_case_params_carry_the_whole_workload() -> None:
    case = dataclasses.replace(GBASE, seed=7, act_dtype="fp16", shape=GDNShape(16, 64, 128, 128, 3),
                               accept=AcceptLaw("histogram", (1.0, 2.0, 3.0, 4.0, 5.0, 6.0)),
                               extras=(("intermediate", True), ("scale", 0.5), ("write_final", False)))
    params = case_params(case)
    assert json.loads(json.dumps(params)) == params  # a stored record compares equal after a round trip
    assert params["accept"] == case.accept.label()  # the readable label tables pivot on
    assert params["accept_law"] == {"kind": "histogram", "values": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]}
    assert params["dims"]["d_conv"] == 3 and params["seed"] == 7 and params["act_dtype"] == "fp16"
    assert params["options"] == {"intermediate": True, "scale": 0.5, "write_final": False}
    assert params["format"] == "fp32" and params["batch"] == 64 and params["window"] is None
    different = [dataclasses.replace(case, **c) for c in ({"seed": 8}, {"accept": AcceptLaw("rate", (0.5,))},
                                                           {"shape": G}, {"act_dtype": "bf16"})]
    assert all(case_params(d) != params for d in different)
