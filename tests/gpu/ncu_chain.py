"""Launch one case's chain a few times eagerly (for ncu to time its kernels).

    ncu --clock-control none --metrics gpu__time_duration.sum --csv python3 tests/gpu/ncu_chain.py \
        sweeps/nemotron3-super-tp8.yaml triton.conv1d '*-b64-T6-fp32-*-w6-*'
"""

from __future__ import annotations

import fnmatch
import sys

import torch

from ssmbench.expand import expand
from ssmbench.impl import registry
from ssmbench.spec import load_sweep_file
from ssmbench.workload import make_workload


def main() -> None:
    spec, impl_name, pattern = sys.argv[1:4]
    reps = int(sys.argv[4]) if len(sys.argv) > 4 else 5
    impl = registry()[impl_name]
    for sweep in load_sweep_file(spec).sweeps:
        for case in expand(sweep).cases:
            if fnmatch.fnmatchcase(case.id, pattern):
                chain = impl.build(case, make_workload(case, "cuda"))
                for _ in range(reps):
                    if chain.restore:
                        chain.restore()
                    chain()
                torch.cuda.synchronize()
                return
    raise SystemExit(f"no case matches {pattern}")


if __name__ == "__main__":
    main()
