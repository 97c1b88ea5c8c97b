"""Timers, L2 modes, bandwidth / SOL arithmetic and clocks, on the CPU: CUPTI and NVML are
replaced by fakes that behave like the real bindings (records in the same time base as
``get_timestamp``, delivered on a forced flush)."""

from __future__ import annotations

import sys
import types

import pytest
import torch

from ssmbench.measure.bandwidth import copy_bytes_for, datasheet_tbps, sol_pct, tbps
from ssmbench.measure.clocks import ClockReading, open_clock_monitor, summarize_clocks, throttle_names
from ssmbench.measure.l2 import L2Flusher, compose, in_proj_outputs, l2_action
from ssmbench.measure.timer import CuptiTimer, Sample, TimerError, WallTimer, attribute, kernel_medians

# -- attributing CUPTI records to samples -----------------------------------------------------


def test_span_is_first_start_to_last_end_and_overlap_counts_once() -> None:
    brackets = [(1000, 5000), (10_000, 15_000)]
    records = [
        ("flush", 200, 900),  # before the first bracket: preparation, ignored
        ("conv", 1500, 2500), ("ssu", 2300, 4000),  # PDL overlap: ssu starts before conv ends
        ("flush", 6000, 9000),  # between brackets: ignored
        ("conv", 10_500, 11_000), ("ssu", 11_000, 14_000), ("ssu", 14_000, 14_500),
    ]
    first, second = attribute(records, brackets)
    assert first.span_us == pytest.approx(2.5)  # 1500 -> 4000 ns, not 1.0 + 1.7
    assert first.kernels_us == {"conv": pytest.approx(1.0), "ssu": pytest.approx(1.7)}
    assert second.span_us == pytest.approx(4.0)
    assert second.kernels_us["ssu"] == pytest.approx(3.5)  # same name twice: summed


def test_slack_absorbs_small_clock_skew() -> None:
    brackets = [(1000, 5000), (10_000, 15_000)]
    records = [("k", 900, 1200), ("k", 9_800, 10_100)]  # starts 100-200 ns before t0
    with pytest.raises(TimerError):
        attribute(records, brackets)
    first, second = attribute(records, brackets, slack_ns=500)
    assert first.span_us == pytest.approx(0.3) and second.span_us == pytest.approx(0.3)


def test_a_sample_without_records_is_an_error() -> None:
    with pytest.raises(TimerError, match="sample 1"):
        attribute([("k", 1500, 1600)], [(1000, 2000), (3000, 4000)])


def test_kernel_medians_keep_the_slowest_names() -> None:
    samples = [Sample(10.0, {f"k{i}": float(i) for i in range(12)}) for _ in range(3)]
    medians = kernel_medians(samples, keep=4)
    assert list(medians)[:4] == ["k8", "k9", "k10", "k11"]
    assert medians["(other)"] == pytest.approx(sum(range(8)))
    assert kernel_medians([Sample(1.0, {"a": 1.0}), Sample(1.0, {})]) == {"a": 0.5}


def test_wall_timer_prepares_before_every_run() -> None:
    calls: list[str] = []
    samples = WallTimer().measure(lambda: calls.append("run"), lambda: calls.append("prep"), 3)
    assert calls == ["prep", "run"] * 3
    assert len(samples) == 3 and all(s.span_us >= 0 for s in samples)


class FakeCupti(types.SimpleNamespace):
    """Enough of ``cupti.cupti`` for CuptiTimer: kernels 'run' by appending activity records that
    CUPTI delivers to the registered callback on a forced flush."""

    def __init__(self) -> None:
        kind = types.SimpleNamespace(CONCURRENT_KERNEL=10, MEMCPY=1)
        super().__init__(ActivityKind=kind, clock=0, pending=[], enabled=set(), flushes=0)

    def activity_register_callbacks(self, requested, completed) -> None:
        self.requested, self.completed = requested, completed

    def activity_enable(self, kind) -> None:
        self.enabled.add(kind)

    def activity_disable(self, kind) -> None:
        self.enabled.discard(kind)

    def get_timestamp(self) -> int:
        self.clock += 100
        return self.clock

    def activity_flush_all(self, flag: int) -> None:
        assert flag == 1
        self.flushes += 1
        size, _ = self.requested()
        assert size > 0
        records, self.pending = self.pending, []
        self.completed(records)

    def kernel(self, name: str, duration: int, kind: int = 10) -> None:
        start = self.clock + 50
        self.pending.append(types.SimpleNamespace(kind=kind, name=name, start=start, end=start + duration))
        self.clock = start + duration


@pytest.fixture
def fake_cupti(monkeypatch):
    fake = FakeCupti()
    package = types.ModuleType("cupti")
    package.cupti = fake
    monkeypatch.setitem(sys.modules, "cupti", package)
    return fake


def test_cupti_timer_brackets_samples(fake_cupti) -> None:
    syncs: list[int] = []
    timer = CuptiTimer(lambda: syncs.append(1))
    assert fake_cupti.ActivityKind.CONCURRENT_KERNEL in fake_cupti.enabled
    fake_cupti.kernel("left over from the gate", 5000)  # before measure: dropped

    def prepare() -> None:
        fake_cupti.kernel("flush", 3000)

    def run() -> None:
        fake_cupti.kernel("conv1d_update_kernel", 1000)
        fake_cupti.kernel("memcpy", 400, kind=1)  # not a kernel record: ignored
        fake_cupti.kernel("mamba2_intermediate_kernel", 7000)

    samples = timer.measure(run, prepare, 4)
    assert len(samples) == 4
    for s in samples:
        assert set(s.kernels_us) == {"conv1d_update_kernel", "mamba2_intermediate_kernel"}
        assert s.kernels_us["mamba2_intermediate_kernel"] == pytest.approx(7.0)
        assert s.span_us == pytest.approx((1000 + 50 + 400 + 50 + 7000) / 1e3)
    assert len(syncs) == 1 + 2 * 4  # before the round, then around each run
    timer.close()
    assert not fake_cupti.enabled


def test_cupti_timer_without_records_raises(fake_cupti) -> None:
    timer = CuptiTimer(lambda: None)
    with pytest.raises(TimerError):
        timer.measure(lambda: None, lambda: None, 2)


# -- bandwidth and SOL -------------------------------------------------------------------------


def test_bytes_tbps_and_sol_arithmetic() -> None:
    assert tbps(3_000_000, 1.0) == pytest.approx(3.0)  # 3 MB in 1 us = 3 TB/s
    assert tbps(6e9, 2000.0) == pytest.approx(3.0)
    assert sol_pct(3_000_000, 1.0, 3.0) == pytest.approx(100.0)
    assert sol_pct(1_500_000, 1.0, 3.0) == pytest.approx(50.0)
    assert tbps(None, 1.0) is None and tbps(100, 0.0) is None and tbps(100, None) is None
    assert sol_pct(100, 1.0, None) is None


def test_datasheet_table() -> None:
    assert datasheet_tbps("NVIDIA H100 80GB HBM3") == 3.35
    assert datasheet_tbps("NVIDIA H100 PCIe") == 2.0
    assert datasheet_tbps("NVIDIA H200") == 4.8
    assert datasheet_tbps("NVIDIA GH200 480GB") == 4.0  # not matched as an H200
    assert datasheet_tbps("NVIDIA B200") == 8.0
    assert datasheet_tbps("Some Future GPU") is None


def test_copy_is_at_least_four_times_l2() -> None:
    assert copy_bytes_for(50 << 20) == 1 << 30  # H100: 1 GiB floor
    assert copy_bytes_for(300 << 20) == 1200 << 20
    assert copy_bytes_for(300 << 20) >= 4 * (300 << 20)


# -- L2 modes ----------------------------------------------------------------------------------


def test_l2_modes_on_cpu_tensors() -> None:
    flusher = L2Flusher(1 << 12, "cpu")
    assert flusher.nbytes == 2 << 12
    hot = torch.tensor([1.5, -0.0, float("nan"), 3.0], dtype=torch.bfloat16)
    before = hot.view(torch.int16).clone()
    l2_action("realistic", flusher, [hot])()
    assert torch.equal(hot.view(torch.int16), before)  # re-touch leaves every bit pattern alone
    assert flusher._buffer[0].item() == 1
    l2_action("cold", flusher, [hot])()
    assert flusher._buffer[-1].item() == 0  # another value: every line rewritten
    l2_action("hot", flusher, [hot])()
    assert flusher._buffer[-1].item() == 0
    l2_action("realistic", None, [hot])()  # no flusher (CPU test mode): a no-op
    with pytest.raises(ValueError, match="allowed"):
        l2_action("lukewarm", flusher, [])


def test_compose_runs_steps_in_order() -> None:
    order: list[int] = []
    compose(lambda: order.append(1), None, lambda: order.append(2))()
    assert order == [1, 2]


def test_in_proj_outputs() -> None:
    mamba = types.SimpleNamespace(xbc=torch.ones(2), z=None, dt_raw=torch.ones(3))
    assert [t.numel() for t in in_proj_outputs(mamba)] == [2, 3]
    gdn = types.SimpleNamespace(qkv=torch.ones(4), a=torch.ones(1), b=torch.ones(1))
    assert len(in_proj_outputs(gdn)) == 3


# -- clocks ------------------------------------------------------------------------------------


def test_throttle_reasons_and_summary() -> None:
    assert throttle_names(0x1 | 0x2) == []  # idle and application clocks are not throttling
    assert throttle_names(0x4 | 0x40) == ["sw_power_cap", "hw_thermal"]
    rounds = [(10, ClockReading(1980, 0x0)), (20, ClockReading(1600, 0x4)), (5, None)]
    summary = summarize_clocks(rounds, 1980, "nvml")
    assert summary["sm_mhz_min"] == 1600 and summary["sm_mhz_max"] == 1980
    assert summary["throttled_samples"] == 20 and summary["throttle_reasons"] == ["sw_power_cap"]
    assert summarize_clocks([(5, None)], None, None)["throttled_samples"] is None


def test_clock_monitor_degrades_without_pynvml(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails
    monitor, why = open_clock_monitor("GPU-123")
    assert monitor is None and "pynvml" in why


def test_clock_monitor_with_fake_nvml(monkeypatch) -> None:
    class NVMLError(Exception):
        pass

    fake = types.SimpleNamespace(
        NVMLError=NVMLError, nvmlInit=lambda: None,
        nvmlDeviceGetHandleByUUID=lambda uuid: f"handle:{uuid}",
        nvmlDeviceGetMaxClockInfo=lambda h, clock: {1: 1980, 2: 3201}[clock],
        nvmlDeviceGetClockInfo=lambda h, clock: 1755,
        nvmlDeviceGetCurrentClocksThrottleReasons=lambda h: 0x20,
    )
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monitor, why = open_clock_monitor("GPU-abc")
    assert why == "" and monitor is not None and monitor.max_sm_mhz == 1980 and monitor.max_mem_mhz == 3201
    reading = monitor.read()
    assert reading == ClockReading(1755, 0x20) and reading.throttled
