"""Hostile spec files: whatever the bytes, `load_sweep_file` raises SpecError(s) with file (and line
where there is one), quickly, and the CLI exits 2 without a traceback (issue 15, "Trust")."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from ssmbench.cli import app
from ssmbench.errors import SpecError, SpecErrors, UsageError
from ssmbench.impls.registry import registry
from ssmbench.spec.case import DEFAULT_ACCEPT, measured_law
from ssmbench.spec.expand import expand
from ssmbench.spec.load import DEFAULT_MAX_CASES, MAX_CASES_ENV, load_sweep_file
from ssmbench.spec.yamlpos import MAX_DEPTH, MAX_SPEC_BYTES

BASE = b"name: t\nfamily: mamba2\nmodel: nemotron3-super\ntp: 8\nimpls: [triton.intermediate]\n"
GDN = b"name: g\nfamily: gdn\nmodel: qwen3.5-397b-a17b\nimpls: [triton.gdn]\n"
BOMB = b"a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + b"".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n".encode() for p, n in zip("abcdefgh", "bcdefghi", strict=True))
runner = CliRunner()


def write(tmp_path: Path, data: bytes, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def problems(path: Path) -> list[SpecError]:
    """The SpecErrors of loading ``path`` (failing the test if it loads or raises anything else)."""
    with pytest.raises(UsageError) as info:
        load_sweep_file(path, impl_names=list(registry()))
    exc = info.value
    assert isinstance(exc, (SpecError, SpecErrors)), repr(exc)
    errors = exc.errors if isinstance(exc, SpecErrors) else [exc]
    assert all(e.file == str(path) for e in errors)
    return errors


def text_of(errors: list[SpecError]) -> str:
    return "\n".join(map(str, errors))


HOSTILE = {
    # bytes that are not a UTF-8 text spec
    "empty": (b"", "empty", None),
    "blank": (b"  \n\n", "empty", None),
    "comments only": (b"# nothing\n", "holds no sweep", None),
    "utf-16 with BOM": (BASE.decode().encode("utf-16"), "not a UTF-8 text file", None),
    "utf-16 without BOM": (BASE.decode().encode("utf-16-le"), "not a UTF-8 text file", 1),
    "utf-32": (BASE.decode().encode("utf-32"), "not a UTF-8 text file", None),
    "latin-1": (BASE + "description: caf\xe9\n".encode("latin-1"), "not a UTF-8 text file", 6),
    "NUL byte": (BASE + b"seed: 0\x00\n", "not a UTF-8 text file", 6),
    "binary": (bytes(range(256)) * 4, "not a UTF-8 text file", 1),
    "control character": (BASE + b"description: \x07\n", "not valid YAML", 6),
    # tags
    "python object": (BASE + b"seed: !!python/object/apply:os.system [ls]\n", "unsupported YAML tag", 6),
    "python name": (BASE + b"description: !!python/name:os.system ''\n", "unsupported YAML tag", 6),
    "custom tag": (BASE + b"description: !custom x\n", "unsupported YAML tag", 6),
    "binary tag": (BASE + b"description: !!binary aGVsbG8=\n", "unsupported YAML tag", 6),
    "timestamp tag": (BASE + b"description: !!timestamp 2020-01-01\n", "unsupported YAML tag", 6),
    "set tag": (BASE + b"options: !!set {z_gate, tree}\n", "unsupported YAML tag", 6),
    "omap tag": (BASE + b"options: !!omap [{z_gate: true}]\n", "unsupported YAML tag", 6),
    "bad int": (BASE + b"seed: !!int twelve\n", "not a valid int", 6),
    # keys
    "int key": (BASE + b"1: x\n", "key must be a string", 6),
    "null key": (BASE + b"~: x\n", "key must be a string", 6),
    "bool key": (BASE + b"axes:\n  true: [1]\n", "key must be a string", 7),
    "float key": (BASE + b"1.5: x\n", "key must be a string", 6),
    "sequence key": (BASE + b"? [a, b]\n: x\n", "key must be a string", 6),
    "mapping key": (BASE + b"? {a: 1}\n: x\n", "key must be a string", 6),
    "duplicate key": (BASE + b"seed: 1\nseed: 2\n", "duplicate key", 7),
    # aliases and nesting
    "recursive alias": (BASE + b"x-a: &a [*a]\n", "recursive alias", 6),
    "recursive mapping": (BASE + b"axes: &a {batch: *a}\n", "recursive alias", 6),
    "billion laughs": (BOMB, "more than 100000 values", None),
    "deep flow lists": (b"[" * 10000, f"more than {MAX_DEPTH} levels", 1),
    "deep closed lists": (b"a: " + b"[" * 5000 + b"]" * 5000 + b"\n", f"more than {MAX_DEPTH} levels", 1),
    "deep mappings": (b"a: " + b"{a: " * 3000 + b"1" + b"}" * 3000 + b"\n", f"more than {MAX_DEPTH} levels", 1),
    "deep via aliases": (b"a0: &a0 [1]\n" + b"".join(f"a{i}: &a{i} [*a{i - 1}]\n".encode() for i in range(1, 60)),
                         f"more than {MAX_DEPTH} levels", None),
    "undefined alias": (BASE + b"seed: *nope\n", "not valid YAML", 6),
    "bad merge": (BASE + b"axes:\n  <<: 5\n", "merge key", 7),
    "too big": (b"# " + b"x" * MAX_SPEC_BYTES + b"\n", f"at most {MAX_SPEC_BYTES} bytes", None),
    "document flood": (b"{}\n---\n" * 2000, "more than 100 documents", None),
    "too many documents": (b"".join(b"name: d%d\n---\n" % i for i in range(101)), "more than 100 documents", 201),
    # not a mapping
    "scalar document": (b"5\n", "a sweep spec is a YAML mapping", 1),
    "list document": (b"[1, 2]\n", "a sweep spec is a YAML mapping", 1),
    # NaN, infinities, bools and huge ints where numbers are expected
    "histogram inf": (BASE + b"axes: {T: 2, accept: [{histogram: [1, .inf]}]}\n", "finite", 6),
    "histogram nan": (BASE + b"axes: {T: 2, accept: [{histogram: [.nan, 1]}]}\n", "finite", 6),
    "histogram bool": (BASE + b"axes: {T: 2, accept: [{histogram: [true, 1]}]}\n", "histogram", 6),
    "rate nan": (BASE + b"axes: {accept: [{rate: .nan}]}\n", "rate", 6),
    "rate bool": (BASE + b"axes: {accept: [{rate: true}]}\n", "rate", 6),
    "rate string": (BASE + b"axes: {accept: [{rate: '0.5'}]}\n", "rate", 6),
    "fixed bool": (BASE + b"axes: {accept: [{fixed: [true]}]}\n", "fixed", 6),
    "fixed huge": (BASE + b"axes: {accept: [{fixed: [100000000000]}]}\n", "fixed", 6),
    "scale nan": (GDN + b"options: {scale: .nan}\n", "finite", 5),
    "scale inf": (GDN + b"options: {scale: .inf}\n", "finite", 5),
    "scale negative": (GDN + b"options: {scale: -0.1}\n", "greater than 0", 5),
    "scale zero": (GDN + b"options: {scale: 0}\n", "greater than 0", 5),
    "timeout inf": (BASE + b"measure: {timeout_s: .inf}\n", "finite", 6),
    "min_time nan": (BASE + b"measure: {min_time_s: .nan}\n", "finite", 6),
    "exclude pdl null": (BASE + b"exclude:\n  - {pdl: }\n", "Input should be 'on' or 'off'", 7),  # was a TypeError
    "median ci negative": (BASE + b"measure: {max_median_ci: -0.01}\n", "greater than or equal to 0", 6),
    "median ci one": (BASE + b"measure: {max_median_ci: 1}\n", "less than 1", 6),
    "gate nan": (BASE + b"gate: {threshold_pct: .nan}\n", "finite", 6),
    "confidence inf": (BASE + b"gate: {confidence: .inf}\n", "finite", 6),
    "batch bool": (BASE + b"axes: {batch: [true]}\n", "valid integer", 6),
    "batch float": (BASE + b"axes: {batch: [1.0]}\n", "valid integer", 6),
    "batch string": (BASE + b"axes: {batch: ['4']}\n", "valid integer", 6),
    "T bool": (BASE + b"axes: {T: true}\n", "valid integer", 6),
    "window bool": (BASE + b"axes: {window: [false]}\n", "or an integer", 6),
    "tp bool": (BASE.replace(b"tp: 8", b"tp: true"), "valid integer", 4),
    "seed bool": (BASE + b"seed: false\n", "valid integer", 6),
    "warmup bool": (BASE + b"measure: {warmup: true}\n", "valid integer", 6),
    "shape bool": (b"family: mamba2\nshape: {nheads: true, head_dim: 4, dstate: 4, ngroups: 1}\nimpls: [x]\n",
                   "valid integer", 2),
    "huge batch": (BASE + b"axes: {batch: [1000000000000000000000000000000]}\n", "less than or equal", 6),
    "huge seed": (BASE + b"seed: 1000000000000000000000000000000\n", "less than or equal", 6),
    "huge tp": (BASE.replace(b"tp: 8", b"tp: 1000000000000000000000"), "less than or equal", 4),
    "5000-digit int": (BASE + b"seed: " + b"9" * 5000 + b"\n", "not a valid int", 6),
    "negative seed": (BASE + b"seed: -1\n", "greater than or equal", 6),
    # names that would escape the output directory or hide a file
    "name dotdot": (BASE.replace(b"name: t", b"name: ../../x"), "name", 1),
    "name slash": (BASE.replace(b"name: t", b"name: a/b"), "name", 1),
    "name dot": (BASE.replace(b"name: t", b"name: .hidden"), "name", 1),
    "name space": (BASE.replace(b"name: t", b"name: a b"), "name", 1),
    "name long": (BASE.replace(b"name: t", b"name: " + b"a" * 65), "name", 1),
    "name empty": (BASE.replace(b"name: t", b"name: ''"), "name", 1),
    "name int": (BASE.replace(b"name: t", b"name: 5"), "valid string", 1),
    # grids
    "huge grid": (BASE + b"axes: {batch: [" + b",".join(b"%d" % i for i in range(1, 1001)) + b"], T: [1,2,3,4,5,6,"
                  b"7,8,9,10], state_dtype: [fp32,bf16,fp16,int8,fp8], rounding: [rn, sr], pool: [direct,pool,padded],"
                  b" window: [T, 16, 32, 48, 64], pdl: [on, off], l2: [cold, hot, realistic]}\n", "9000000 points", 6),
    "too many exclude rules": (BASE + b"exclude:\n" + b"  - {batch: 7}\n" * 300, "at most 256", 6),
    "max_cases zero": (BASE + b"max_cases: 0\n", "greater than or equal to 1", 6),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_spec_is_a_clear_error(tmp_path: Path, name: str) -> None:
    data, needle, line = HOSTILE[name]
    path = write(tmp_path, data)
    start = time.perf_counter()
    errors = problems(path)
    assert time.perf_counter() - start < 1.0, "a hostile spec must be refused quickly"
    assert needle in text_of(errors), text_of(errors)
    if line is not None:
        assert any(e.line == line for e in errors if needle in str(e)), text_of(errors)


@pytest.mark.parametrize("command", ["plan", "check", "sweep"])
@pytest.mark.parametrize("name", ["billion laughs", "deep flow lists", "utf-16 with BOM", "huge grid", "int key"])
def test_cli_exits_2_without_traceback(tmp_path: Path, command: str, name: str) -> None:
    path = write(tmp_path, HOSTILE[name][0])
    result = runner.invoke(app, [command, str(path)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and HOSTILE[name][1] in result.output


def test_size_error_says_size(tmp_path: Path) -> None:
    data = b"# " + b"x" * (2 * MAX_SPEC_BYTES) + b"\n"
    (error,) = problems(write(tmp_path, data))
    assert str(len(data)) in str(error) and "1 MiB" in str(error)


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    assert load_sweep_file(write(tmp_path, b"\xef\xbb\xbf" + BASE)).sweeps[0].name == "t"


def test_trailing_and_inner_empty_documents_are_skipped(tmp_path: Path) -> None:
    assert len(load_sweep_file(write(tmp_path, BASE + b"---\n")).sweeps) == 1
    second = BASE.replace(b"name: t", b"name: u") + b"axes: {batch: 2}\n"
    sweeps = load_sweep_file(write(tmp_path, BASE + b"---\n---\n...\n---\n" + second + b"---\n", "b.yaml")).sweeps
    assert [s.name for s in sweeps] == ["t", "u"]


def test_standard_tags_are_harmless(tmp_path: Path) -> None:
    data = BASE + b"description: !!str 5\nseed: !!int '3'\naxes: !!map {batch: !!seq [!!int 2]}\n"
    spec = load_sweep_file(write(tmp_path, data)).sweeps[0].spec
    assert spec.description == "5" and spec.seed == 3 and spec.axes.batch == [2]


def test_dates_and_yes_no_stay_strings(tmp_path: Path) -> None:
    spec = load_sweep_file(write(tmp_path, BASE + b"description: 2026-01-01\n")).sweeps[0].spec
    assert spec.description == "2026-01-01"


def test_merge_keys(tmp_path: Path) -> None:
    """``<<: *defaults`` works as YAML 1.1 says: explicit keys win, earlier merged mappings win
    over later ones; ``x-`` top-level keys hold the anchors and are otherwise ignored."""
    data = BASE + (b"x-small: &small {batch: [1, 2], T: 6, pdl: [off]}\n"
                   b"x-formats: &formats {state_dtype: [bf16], batch: [64]}\n"
                   b"axes:\n  <<: [*small, *formats]\n  pdl: [on]\n")
    axes = load_sweep_file(write(tmp_path, data)).sweeps[0].spec.axes
    assert axes.batch == [1, 2] and axes.T == [6] and axes.pdl == ["on"] and axes.state_dtype == ["bf16"]
    # a merged value's errors point into the anchor's lines
    bad = BASE + b"x-small: &small\n  batch: [0]\naxes:\n  <<: *small\n"
    (error,) = problems(write(tmp_path, bad, "bad.yaml"))
    assert error.field == "axes.batch.0" and error.line == 7


def test_limits_are_quick_for_a_full_size_file(tmp_path: Path) -> None:
    data = BASE + b"exclude:\n" + b"  - {batch: 7}\n" * 60000
    start = time.perf_counter()
    problems(write(tmp_path, data))
    assert time.perf_counter() - start < 5.0


# -- grid size limit -------------------------------------------------------------------------

BIG = BASE + b"axes: {batch: [" + b",".join(b"%d" % i for i in range(1, 301)) + b"], state_dtype: [fp32, bf16], " \
    b"pdl: [on, off], l2: [cold, hot, realistic], pool: [direct, pool, padded], window: [T, 16]}\n"  # 21600 points


def test_grid_limit_counts_before_building(tmp_path: Path) -> None:
    (error,) = problems(write(tmp_path, BIG))
    assert "21600 points" in str(error) and str(DEFAULT_MAX_CASES) in str(error)
    assert "max_cases" in str(error) and MAX_CASES_ENV in str(error) and error.line == 6


def test_grid_limit_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_sweep_file(write(tmp_path, BIG + b"max_cases: 30000\n")).sweeps[0].grid_points == 21600
    monkeypatch.setenv(MAX_CASES_ENV, "25000")
    assert load_sweep_file(write(tmp_path, BIG, "env.yaml")).sweeps
    monkeypatch.setenv(MAX_CASES_ENV, "100")
    assert "more than the limit of 100" in text_of(problems(write(tmp_path, BASE + b"axes: {batch: [" + b",".join(
        b"%d" % i for i in range(1, 102)) + b"]}\n", "small.yaml")))
    monkeypatch.setenv(MAX_CASES_ENV, "lots")
    assert MAX_CASES_ENV in text_of(problems(write(tmp_path, BASE, "base.yaml")))


def test_grid_limit_counts_the_whole_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MAX_CASES_ENV, "150")
    doc = BASE + b"axes: {batch: [" + b",".join(b"%d" % i for i in range(1, 101)) + b"]}\n"
    other = doc.replace(b"name: t", b"name: u").replace(b"tp: 8", b"tp: 4")
    assert "200 grid points in all" in text_of(problems(write(tmp_path, doc + b"---\n" + other)))


# -- the default T and acceptance law -----------------------------------------------------------

MINIMAL = b"family: mamba2\nshape: {nheads: 2, head_dim: 4, dstate: 4, ngroups: 1}\nimpls: [reference.sequential]\n"


def test_defaults_give_cases(tmp_path: Path) -> None:
    """No axes at all: T=1 under docs/spec.md §10's law (folded to one token), not an empty grid."""
    cases = expand(load_sweep_file(write(tmp_path, MINIMAL)).sweeps[0]).cases
    assert len(cases) == 1 and cases[0].T == 1 and cases[0].accept.label() == "hist"
    many = MINIMAL + b"axes: {T: [1, 2, 4, 6, 8, 16], window: [16]}\n"
    cases = expand(load_sweep_file(write(tmp_path, many, "t.yaml")).sweeps[0]).cases
    assert [c.T for c in cases] == [1, 2, 4, 6, 8, 16]
    assert all(len(c.accept.values) == c.T and c.id.endswith("-hist-pdl-realistic") for c in cases)


def test_measured_law() -> None:
    assert measured_law(6) == DEFAULT_ACCEPT
    for T in range(1, 17):
        law = measured_law(T)
        assert len(law.values) == T and sum(law.values) == pytest.approx(sum(DEFAULT_ACCEPT.values))
    assert measured_law(4).values == (*DEFAULT_ACCEPT.values[:3], sum(DEFAULT_ACCEPT.values[3:]))
    assert measured_law(8).values[:5] == DEFAULT_ACCEPT.values[:5]


# -- fuzz ------------------------------------------------------------------------------------

GOOD = (b"name: t\nfamily: mamba2\nmodel: nemotron3-super\ntp: 8\nimpls: [triton.intermediate]\n"
        b"axes:\n  batch: [1, 4]\n  T: 6\n  state_dtype: [fp32, bf16]\n  accept: [histogram, {rate: 0.5}]\n"
        b"  window: [T, 16]\nexclude:\n  - {batch: 4, pdl: on}\noptions: {z_gate: true}\nseed: 1\n")
FRAGMENTS = [b"[", b"]", b"{", b"}", b": ", b"- ", b"\n", b"  ", b"&a ", b"*a", b"<<: ", b"!!", b"!x ", b"? ",
             b"---\n", b"...\n", b"'", b'"', b"#", b"%YAML 1.1\n", b"|\n", b">\n", b".inf", b".nan", b"~", b"true",
             b"1e999", b"-1", b"0x1F", b"1_000", b"1:30", b"axes", b"batch", b"T", b"accept", b"histogram", b"rate",
             b"exclude", b"options", b"\x00", b"\xff", b"\xef\xbb\xbf", b"\t", b"\x85", b"\xe2\x80\xa8"]


def _assert_only_spec_errors(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    try:
        load_sweep_file(path, impl_names=list(registry()))
    except (SpecError, SpecErrors):
        pass


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pieces=st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.binary(max_size=6)), max_size=40))
def test_fuzz_fragments(tmp_path: Path, pieces: list[bytes]) -> None:
    _assert_only_spec_errors(tmp_path / "fuzz.yaml", b"".join(pieces))


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(st.tuples(st.integers(0, len(GOOD)), st.integers(0, 3), st.sampled_from(FRAGMENTS)),
                      min_size=1, max_size=4))
def test_fuzz_mutated_good_spec(tmp_path: Path, edits: list[tuple[int, int, bytes]]) -> None:
    data = GOOD
    for at, cut, piece in edits:
        data = data[:at] + piece + data[at + cut:]
    _assert_only_spec_errors(tmp_path / "fuzz.yaml", data)
