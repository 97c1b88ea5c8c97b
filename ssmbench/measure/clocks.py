"""SM clock and throttle reasons per measuring round (NVML through pynvml, when importable).

A number taken while the GPU was power- or thermally-throttled is not the kernel's number: each
round of samples is tagged with the SM clock and the throttle reasons NVML reports right after
it, and a case records how many of its samples fell in throttled rounds. Without pynvml (or
NVML) the results say the clock is unknown; nothing else changes. The clocks are only read,
never set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

NVML_CLOCK_SM = 1
NVML_CLOCK_MEM = 2
THROTTLE_REASONS: dict[int, str] = {
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x20: "sw_thermal",
    0x40: "hw_thermal",
    0x80: "hw_power_brake",
}
"""NVML clock-event reasons that mean the kernel ran slower than it would have. Idle (0x1),
application-clock setting (0x2), sync boost (0x10) and display (0x100) are not throttling."""


def throttle_names(mask: int) -> list[str]:
    return [name for bit, name in THROTTLE_REASONS.items() if mask & bit]


@dataclass(frozen=True)
class ClockReading:
    sm_mhz: int
    reasons: int

    @property
    def throttled(self) -> bool:
        return bool(throttle_names(self.reasons))


class ClockMonitor:
    """Reads one device's SM clock through pynvml. Build with `open_clock_monitor`."""

    source = "nvml"

    def __init__(self, nvml: Any, handle: Any) -> None:
        self._nvml, self._handle = nvml, handle
        self.max_sm_mhz = int(nvml.nvmlDeviceGetMaxClockInfo(handle, NVML_CLOCK_SM))
        # The memory clock bounds a memory-bound chain: recorded so two machines' runs can be told apart.
        try:
            self.max_mem_mhz: int | None = int(nvml.nvmlDeviceGetMaxClockInfo(handle, NVML_CLOCK_MEM))
        except Exception:  # noqa: BLE001 - optional: an unknown memory clock is not a failed start
            self.max_mem_mhz = None
        # Renamed in newer NVML; the old name is kept as an alias there.
        self._reasons = (getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None)
                         or nvml.nvmlDeviceGetCurrentClocksThrottleReasons)

    def read(self) -> ClockReading | None:
        try:
            return ClockReading(int(self._nvml.nvmlDeviceGetClockInfo(self._handle, NVML_CLOCK_SM)),
                                int(self._reasons(self._handle)))
        except Exception:  # noqa: BLE001 - a failed read is an unknown clock, not a failed case
            return None


def open_clock_monitor(uuid: str | None) -> tuple[ClockMonitor | None, str]:
    """A monitor for the device with this UUID, or None and why not."""
    try:
        import pynvml  # nvidia-ml-py
    except ImportError:
        return None, "pynvml not importable (pip install nvidia-ml-py)"
    try:
        pynvml.nvmlInit()
        if uuid:
            try:
                handle = pynvml.nvmlDeviceGetHandleByUUID(uuid)
            except (TypeError, pynvml.NVMLError):  # older bindings want bytes
                handle = pynvml.nvmlDeviceGetHandleByUUID(uuid.encode())
        elif pynvml.nvmlDeviceGetCount() == 1:
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        else:
            return None, "no device UUID to find the device in NVML"
        return ClockMonitor(pynvml, handle), ""
    except Exception as exc:  # noqa: BLE001
        return None, f"NVML unavailable: {exc}"


def driver_version() -> str | None:
    """The display driver version (e.g. 580.159.04) from NVML, if it can be read."""
    try:
        import pynvml

        pynvml.nvmlInit()
        version = pynvml.nvmlSystemGetDriverVersion()
        return version.decode() if isinstance(version, bytes) else str(version)
    except Exception:  # noqa: BLE001
        return None


def summarize_clocks(rounds: Sequence[tuple[int, ClockReading | None]], max_sm_mhz: int | None,
                     source: str | None) -> dict[str, Any]:
    """The ``clock`` field of a result from (samples in round, reading after it) pairs."""
    readings = [r for _, r in rounds if r is not None]
    if not readings:
        return {"source": None, "sm_mhz_min": None, "sm_mhz_max": None, "max_sm_mhz": max_sm_mhz,
                "throttled_samples": None, "throttle_reasons": []}
    reasons = 0
    for r in readings:
        reasons |= r.reasons
    return {
        "source": source,
        "sm_mhz_min": min(r.sm_mhz for r in readings),
        "sm_mhz_max": max(r.sm_mhz for r in readings),
        "max_sm_mhz": max_sm_mhz,
        "throttled_samples": sum(n for n, r in rounds if r is not None and r.throttled),
        "throttle_reasons": throttle_names(reasons),
    }
