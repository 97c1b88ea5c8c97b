"""Model layer shapes (docs/spec.md §2) and their tensor-parallel slices."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_D_CONV = 4
"""The conv width of every preset; case ids name ``d_conv`` only when it differs."""


@dataclass(frozen=True)
class Mamba2Shape:
    """One TP rank's Mamba-2 layer: ``nheads`` heads of ``head_dim`` (P), state ``dstate`` (N),
    ``ngroups`` (G) groups sharing B and C, conv width ``d_conv``."""

    nheads: int
    head_dim: int
    dstate: int
    ngroups: int
    d_conv: int

    family = "mamba2"

    @property
    def conv_dim(self) -> int:
        return self.nheads * self.head_dim + 2 * self.ngroups * self.dstate

    def tp_slice(self, tp: int) -> Mamba2Shape:
        """Heads and groups divided by TP (groups at least 1)."""
        if self.nheads % tp:
            raise ValueError(f"tp={tp} does not divide nheads={self.nheads}")
        groups = max(1, self.ngroups // tp)
        return Mamba2Shape(self.nheads // tp, self.head_dim, self.dstate, groups, self.d_conv)

    def describe(self) -> str:
        return f"H{self.nheads} P{self.head_dim} N{self.dstate} G{self.ngroups} conv{self.d_conv}"


@dataclass(frozen=True)
class GDNShape:
    """One TP rank's Gated DeltaNet layer: H q/k heads of dim K, HV value heads of dim V."""

    num_k_heads: int
    num_v_heads: int
    head_k_dim: int
    head_v_dim: int
    d_conv: int

    family = "gdn"

    @property
    def conv_dim(self) -> int:
        return 2 * self.num_k_heads * self.head_k_dim + self.num_v_heads * self.head_v_dim

    def tp_slice(self, tp: int) -> GDNShape:
        if self.num_k_heads % tp or self.num_v_heads % tp:
            raise ValueError(f"tp={tp} does not divide H={self.num_k_heads} / HV={self.num_v_heads}")
        return GDNShape(
            self.num_k_heads // tp, self.num_v_heads // tp, self.head_k_dim, self.head_v_dim, self.d_conv
        )

    def describe(self) -> str:
        return (
            f"H{self.num_k_heads} HV{self.num_v_heads} K{self.head_k_dim} V{self.head_v_dim} conv{self.d_conv}"
        )


Shape = Mamba2Shape | GDNShape

PRESETS: dict[str, Shape] = {
    "nemotron3-super": Mamba2Shape(nheads=128, head_dim=64, dstate=128, ngroups=8, d_conv=4),
    "nemotron-h-8b": Mamba2Shape(nheads=128, head_dim=64, dstate=128, ngroups=8, d_conv=4),
    "nemotron-nano-9b-v2": Mamba2Shape(nheads=128, head_dim=80, dstate=128, ngroups=8, d_conv=4),
    "qwen3.5-397b-a17b": GDNShape(num_k_heads=16, num_v_heads=64, head_k_dim=128, head_v_dim=128, d_conv=4),
    "qwen3-next-80b-a3b": GDNShape(num_k_heads=16, num_v_heads=32, head_k_dim=128, head_v_dim=128, d_conv=4),
}
"""docs/spec.md §2 presets, full (TP=1) layer shapes."""

PRESET_NOTES: dict[str, str] = {
    "nemotron3-super": "120B-A12B; TP=8 gives the headline shape (16 heads, 1 group)",
    "nemotron-nano-9b-v2": "P=80 is not a power of two: kernels mask",
}
