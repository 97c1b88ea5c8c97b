"""Quick GPU timing of an impl's chain (CUDA-graph replay, L2 flushed, CUDA events) for the
headline shape; a stopgap until `ssmbench sweep` times with CUPTI. Prints a markdown table.

    python3 tests/gpu/bench_chain.py triton.intermediate 1,64,256 > $OUT/bench.md
"""

from __future__ import annotations

import sys

import torch

from ssmbench.expand import expand
from ssmbench.impl import registry
from ssmbench.spec import load_sweep_file
from ssmbench.workload import make_workload


def time_chain(chain, flush: torch.Tensor, reps: int = 40, reset=None) -> float:
    """Median us of a CUDA-graph replay of ``chain`` with L2 flushed (and ``reset()`` run, when
    given, to put mutated buffers back) before each replay."""
    chain()  # warm (compile)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        chain()
    times = []
    for _ in range(reps):
        if reset is not None:
            reset()
        flush.zero_()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1000)
    return sorted(times)[len(times) // 2]


def main() -> None:
    impl_name, batches = sys.argv[1], [int(b) for b in sys.argv[2].split(",")]
    sweep = load_sweep_file("sweeps/nemotron3-super-tp8.yaml").sweeps[0]
    impl = registry()[impl_name]
    flush = torch.empty(100 * 2**20, dtype=torch.uint8, device="cuda")
    print(f"{impl_name} chain span (CUDA events, graph replay, L2 flushed, median us), {torch.cuda.get_device_name()}")
    print("| batch | format | us |")
    print("|---|---|---|")
    for case in expand(sweep).cases:
        if case.batch not in batches or case.window != case.T:
            continue
        fmt = case.state_dtype + ("-sr" if case.rounding == "sr" else "")
        chain = impl.build(case, make_workload(case, "cuda"))
        print(f"| {case.batch} | {fmt} | {time_chain(chain, flush):.1f} |", flush=True)
        del chain
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
