"""SASS instruction mix of the headline `triton.intermediate` kernel per storage format, compiled
for sm_90 on a machine WITHOUT a GPU (a stand-in Triton driver gives the target; ptxas and
nvdisasm ship with Triton; nothing is launched). Static counts of the fully unrolled T = 6 kernel,
divided by the 96 element-stores one thread does (a 4 x 128 tile on 32 threads, stored 6 times).

    PYTHONPATH=$PWD:$PWD/kernels python3 tools/gpu/sass_mix.py fp32,bf16,fp16,int8,fp8

Used for docs/perf-notes.md (issue 17): instruction counts before and after a kernel change,
without device time.
"""

from __future__ import annotations

import collections
import glob
import os
import subprocess
import sys
import tempfile

os.environ.pop("TRITON_INTERPRET", None)  # before triton is imported: compile, do not interpret

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.runtime import driver  # noqa: E402

H, P, N, G, T = 16, 64, 128, 1, 6
BATCH = 1024
ELEMENT_STORES = 4 * 128 // 32 * T
"""Per thread: a 4 x 128 tile on one warp holds 16 elements, each stored T times."""
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "int8": torch.int8,
          "fp8": torch.float8_e4m3fn}
CLASSES = {
    "int": ("IMAD", "IADD", "IADD3", "LOP", "LOP3", "SHF", "ISETP", "IMNMX", "LEA", "PRMT", "SEL", "IABS",
            "POPC", "FLO", "BMSK", "VIADD", "VIMNMX", "IMUL"),
    "float": ("FFMA", "FADD", "FMUL", "FSETP", "FMNMX", "FSEL", "FRND", "F2F", "F2I", "I2F", "MUFU", "FCHK",
              "HADD2", "HFMA2", "HMUL2", "F2FP", "FSET"),
}


class Compiled(Exception):
    """Raised where the binary would be loaded: compilation is done, nothing runs."""


class StandInDriver:
    """Just enough of Triton's CUDA driver to compile for sm_90 without a GPU."""

    class utils:  # noqa: N801 - Triton's attribute name
        @staticmethod
        def get_device_properties(device: int) -> dict:
            return {"max_shared_mem": 232448, "multiprocessor_count": 132}

    def get_current_device(self) -> int:
        return 0

    def set_current_device(self, device: int) -> None:
        pass

    def get_current_stream(self, device: int | None = None) -> int:
        return 0

    def get_current_target(self) -> GPUTarget:
        return GPUTarget("cuda", 90, 32)

    def get_active_torch_device(self) -> torch.device:
        return torch.device("cpu")

    def get_device_interface(self):
        return torch.cuda

    def map_python_to_cpp_type(self, ty: str) -> str:
        return ty

    @staticmethod
    def launcher_cls(src, metadata):
        raise Compiled


def compile_intermediate(fmt: str, rounding: str, cache: str) -> str:
    """Compile the kernel for one format into ``cache``; returns its cubin's path."""
    from ssmbench_kernels.mamba2_states.kernel import IntermediateKnobs, mamba2_intermediate

    os.environ["TRITON_CACHE_DIR"] = cache
    slots = BATCH * (T + 1)
    act = dict(dtype=torch.bfloat16)
    try:
        mamba2_intermediate(
            torch.zeros(slots, H, P, N, dtype=DTYPES[fmt]),
            torch.ones(slots, H, P) if fmt in ("int8", "fp8") else None,
            torch.arange(BATCH), BATCH + torch.arange(BATCH * T).reshape(BATCH, T),
            torch.zeros(BATCH * T, H * P + 2 * G * N, **act), torch.zeros(BATCH * T, H, **act),
            torch.zeros(H), torch.zeros(H), torch.zeros(H),
            nheads=H, head_dim=P, dstate=N, ngroups=G, T=T, z=torch.zeros(BATCH * T, H * P, **act),
            y=torch.zeros(BATCH * T, H * P, **act), fmt=fmt, rounding=rounding, pdl=False,
            knobs=IntermediateKnobs(block_p=4, num_warps=1), validate=False,
        )
    except Compiled:
        pass
    return glob.glob(f"{cache}/**/*.cubin", recursive=True)[0]


def opcode_counts(cubin: str) -> collections.Counter:
    nvdisasm = os.path.join(os.path.dirname(triton.__file__), "backends/nvidia/bin/nvdisasm")
    text = subprocess.run([nvdisasm, "-c", cubin], capture_output=True, text=True, check=True).stdout
    ops: collections.Counter = collections.Counter()
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("/*") and "*/" in line:
            word = line.split("*/", 1)[1].strip().lstrip("@!P0123456789T ").split(" ")[0].rstrip(";")
            if word:
                ops[word.split(".")[0]] += 1
    return ops


def main(formats: list[str]) -> None:
    driver.set_active(StandInDriver())
    for fmt in formats:
        for rounding in ("rn", "sr"):
            if fmt == "fp32" and rounding == "sr":
                continue
            ops = opcode_counts(compile_intermediate(fmt, rounding, tempfile.mkdtemp()))
            total = sum(ops.values())
            kinds = {c: sum(n for op, n in ops.items() if op in names) for c, names in CLASSES.items()}
            label = fmt + ("sr" if rounding == "sr" else "")
            print(f"{label:6} total {total:5d}  int {kinds['int']:5d}  float {kinds['float']:5d}  per element-store: "
                  f"{total / ELEMENT_STORES:5.1f} (int {kinds['int'] / ELEMENT_STORES:4.1f}, "
                  f"float {kinds['float'] / ELEMENT_STORES:4.1f})")


if __name__ == "__main__":
    main(sys.argv[1].split(",") if len(sys.argv) > 1 else list(DTYPES))
