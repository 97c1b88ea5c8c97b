"""Test-only impl with a planted out-of-bounds access, for the sweep's isolation check on a GPU.

    SSMBENCH_PLUGINS=tools.gpu.fault_impl ssmbench sweep tools/gpu/fault.yaml

`test.oob` runs the real Triton chain, then a kernel that writes far past the end of its buffer
(an illegal address): the sweep must record that pair as error and finish every other pair.
"""

from __future__ import annotations

import triton
import triton.language as tl

from ssmbench.impls.base import Chain, register
from ssmbench.impls.triton_mamba import TritonIntermediate


@triton.jit
def out_of_bounds_kernel(ptr, offset):
    tl.store(ptr + offset + tl.arange(0, 128), tl.zeros((128,), dtype=tl.float32))


class OutOfBounds(TritonIntermediate):
    name = "test.oob"
    kind = "test"

    def build(self, case, workload) -> Chain:
        chain = super().build(case, workload)
        target = workload.start_state

        def fault() -> None:
            out_of_bounds_kernel[(1,)](target, 1 << 38)

        return Chain([*chain.launches, fault], [*chain.kernel_names, "out_of_bounds_kernel"], chain.outputs,
                     restore=chain.restore)


register(OutOfBounds())
