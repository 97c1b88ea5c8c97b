"""`triton.gdn.bv8w1`, ...: `triton.gdn` with fixed knobs on every case, registered as impls so
one sweep times tiles the tuner's coordinate descent never reached beside the shipped table and
`fla.gdn`, cell by cell (a `--plugin` module, like `conv1d_forms_plugin`). Each has its own
`Tunable` with no table, so the sweep's compile pre-pass and the build read the same fixed knobs.

    PYTHONPATH=$PWD:$PWD/kernels:$PWD/tools/gpu python3 -m ssmbench sweep sweeps/qwen35-gdn.yaml \\
        --plugin gdn_forms_plugin --impl triton.gdn --impl triton.gdn.bv8w1 ...
"""

from __future__ import annotations

from pathlib import Path

from picked import ConvChanges

from ssmbench.impls.base import register
from ssmbench.impls.triton_gdn import GDN_SPACE, TritonGDN
from ssmbench.impls.tuned import Tunable
from ssmbench_kernels.gdn.kernel import GDNKnobs

VARIANTS = {
    "triton.gdn.bv8w1": GDNKnobs(block_v=8, num_warps=1),
    "triton.gdn.bv16w1": GDNKnobs(block_v=16, num_warps=1),
    "triton.gdn.bv64w8s": GDNKnobs(block_v=64, num_warps=8, stream_tokens=True),
}
"""T = 1 tiles: FLA's 8 x 1 (the T > 1 default), 16 x 1 (fewest instructions per element without
spills in fp32, static SASS), 64 x 8 streamed (the bf16 b512 tune's fastest, inside the 3% band)."""


class _ForcedGDN(TritonGDN):
    """`triton.gdn` with fixed knobs on every case."""

    def __init__(self, name: str, knobs: GDNKnobs) -> None:
        self.name = name
        self.tunable = Tunable(name, GDN_SPACE, Path("/nonexistent-knob-tables"), lambda case: knobs)


class _ConvFormGDN(ConvChanges, TritonGDN):
    """`triton.gdn` (its table and defaults) with other conv1d knobs than the default's: the conv1d
    form and PDL-trigger questions of docs/gdn.md, timed in the chain beside the default."""


CONV_VARIANTS = {
    "triton.gdn.conv-columns": {"form": "columns"},
    "triton.gdn.conv-flat": {"form": "flat"},
    "triton.gdn.conv-first": {"trigger": "first"},
    "triton.gdn.conv-none": {"trigger": "none"},
    "triton.gdn.conv-c256": {"block_c": 256, "num_warps": 4},
    "triton.gdn.conv-loads-first": {"loads_first": True},
}
"""conv1d knobs changed from the default's in the GDN chain."""


for _name, _knobs in VARIANTS.items():
    register(_ForcedGDN(_name, _knobs))
for _name, _changes in CONV_VARIANTS.items():
    register(_ConvFormGDN(_name, **_changes))
