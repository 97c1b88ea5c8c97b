"""Workloads: the inputs of one decode step of a case (docs/spec.md §6 layout), for callers that
do not care which family a case belongs to. Each family's builder, workload dataclass and pools
live in ssmbench/families/<family>.py (shared draws in ssmbench/families/common.py);
`make_workload` picks the case's family through `ssmbench.families`.
"""

from __future__ import annotations

from ssmbench.families import make_workload

__all__ = ["make_workload"]
