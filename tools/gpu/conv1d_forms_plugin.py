"""`triton.conv1d.columns`, `.flat`, ...: the conv1d update alone with other knobs than
the default's, registered as impls so one sweep times the forms side by side, cell by cell (a
`--plugin` module, like `checkpoint_bw_plugin`): each is one `Conv1dKnobs.form` (``columns``,
``flat``) at the tile `VARIANTS` names.

    PYTHONPATH=$PWD:$PWD/kernels:$PWD/tools/gpu python3 -m ssmbench sweep tools/gpu/conv1d-forms.yaml \\
        --plugin conv1d_forms_plugin
"""

from __future__ import annotations

from ssmbench.impls.base import register
from ssmbench.impls.triton_mamba import TritonConv1d
from ssmbench.spec.case import Case
from ssmbench_kernels.conv1d.kernel import Conv1dKnobs

VARIANTS = {
    "triton.conv1d.columns": Conv1dKnobs(block_c=128, num_warps=2, form="columns"),
    "triton.conv1d.flat": Conv1dKnobs(block_c=128, num_warps=2, form="flat"),
    "triton.conv1d.flat256": Conv1dKnobs(block_c=256, num_warps=4, form="flat"),
    "triton.conv1d.flat512": Conv1dKnobs(block_c=512, num_warps=4, form="flat"),
    "triton.conv1d.flat64w1": Conv1dKnobs(block_c=64, num_warps=1, form="flat"),
    "triton.conv1d.flat64w2": Conv1dKnobs(block_c=64, num_warps=2, form="flat"),
    "triton.conv1d.flat256w2": Conv1dKnobs(block_c=256, num_warps=2, form="flat"),
    "triton.conv1d.columns+first": Conv1dKnobs(block_c=128, num_warps=2, form="columns", loads_first=True),
    "triton.conv1d.flat+first": Conv1dKnobs(block_c=128, num_warps=2, form="flat", loads_first=True),
}
"""The forms timed beside the default (`triton.conv1d`: `default_conv1d_knobs`)."""


class _ForcedConv1d(TritonConv1d):
    """`triton.conv1d` with fixed knobs on every case."""

    def __init__(self, name: str, knobs: Conv1dKnobs) -> None:
        self.name = name
        self.fixed = knobs

    def conv_knobs(self, case: Case) -> Conv1dKnobs:
        del case
        return self.fixed


for _name, _knobs in VARIANTS.items():
    register(_ForcedConv1d(_name, _knobs))
