"""Static SASS of the GDN decode kernels at the Qwen3.5 shape, compiled for sm_90 on a machine
WITHOUT a GPU (sass_mix.py's stand-in Triton driver; ptxas, cuobjdump and nvdisasm ship with
Triton; nothing is launched): registers, stack, and the instruction classes the T > 1 analysis
of docs/gdn.md is about (shuffles, barriers, shared-memory traffic, FP32, tensor-core
instructions, spills), for `gdn_decode_kernel` (today's knobs, and its streamed-token form) and, when fla-core is
installed, FLA's fused_recurrent kernel.

    python3 -m tools.gpu.sass_gdn [T ...]      (repo root on the path; default T: 1 2 4 6)

Counts are static, per thread: the token loops are unrolled in ours; FLA's is a runtime loop
(`do_not_specialize=['T']`: one kernel for every T, listed once, one token's worth in its body)."""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import tempfile

os.environ.pop("TRITON_INTERPRET", None)  # before triton is imported: compile, do not interpret

import torch  # noqa: E402
import triton  # noqa: E402
from triton.runtime import driver  # noqa: E402

from tools.gpu.sass_mix import Compiled, StandInDriver, opcode_counts  # noqa: E402

driver.set_active(StandInDriver())

from ssmbench_kernels.gdn.kernel import GDNKnobs, gdn_decode  # noqa: E402

BIN = os.path.join(os.path.dirname(triton.__file__), "backends/nvidia/bin")
H, HV, K, V, BATCH = 16, 64, 128, 128, 8
STREAM_WARPS = (2, 4, 8)
CLASSES = {
    "SHFL": ("SHFL",), "BAR": ("BAR",), "LDS/STS": ("LDS", "STS", "LDSM", "STSM"),
    "FP32": ("FFMA", "FADD", "FMUL", "FSEL", "FSETP", "FMNMX", "MUFU"), "HMMA/HGMMA": ("HMMA", "HGMMA"),
    "LDG/STG": ("LDG", "STG"), "LDL/STL (spills)": ("LDL", "STL"),
}


def compiled(run) -> tuple[dict, str]:
    """Compile ``run``'s kernel into a fresh cache; its SASS opcode counts and resource usage."""
    cache = tempfile.mkdtemp()
    os.environ["TRITON_CACHE_DIR"] = cache
    try:
        run()
    except Compiled:
        pass
    cubin = glob.glob(f"{cache}/**/*.cubin", recursive=True)[0]
    usage = subprocess.run([f"{BIN}/cuobjdump", "--dump-resource-usage", cubin], capture_output=True,
                           text=True).stdout
    res = next((ln.strip() for ln in usage.splitlines() if "REG:" in ln), "?")
    return opcode_counts(cubin), res


def gdn_inputs(T: int, fmt: torch.dtype, inter: bool):
    rows = BATCH * T
    return dict(
        pool_data=torch.zeros(2 * BATCH, HV, V, K, dtype=fmt), read_idx=torch.arange(BATCH), write_idx=None,
        conv_out=torch.zeros(rows, 2 * H * K + HV * V, dtype=torch.bfloat16),
        a=torch.zeros(rows, HV, dtype=torch.bfloat16), b=torch.zeros(rows, HV, dtype=torch.bfloat16),
        A_log=torch.zeros(HV), dt_bias=torch.zeros(HV), num_k_heads=H, num_v_heads=HV, head_k_dim=K,
        head_v_dim=V, T=T, intermediate=torch.zeros(BATCH, T, HV, V, K, dtype=fmt) if inter else None,
        write_final=not inter, out=torch.zeros(rows, HV * V, dtype=torch.bfloat16), validate=False,
    )


def fla_run(T: int):
    # fla.utils.hardware asks torch.cuda about the device at import: answer as an H200 would.
    torch.cuda.get_device_name = lambda *a, **k: "NVIDIA H200"
    torch.cuda.get_device_capability = lambda *a, **k: (9, 0)
    from fla.ops.gated_delta_rule.fused_recurrent import fused_recurrent_gated_delta_rule_fwd

    q = torch.zeros(BATCH, T, H, K, dtype=torch.bfloat16)
    v = torch.zeros(BATCH, T, HV, V, dtype=torch.bfloat16)
    g = torch.zeros(BATCH, T, HV, dtype=torch.bfloat16)
    return lambda: fused_recurrent_gated_delta_rule_fwd(
        q, q, v, g=g, beta=g, A_log=torch.zeros(HV), dt_bias=torch.zeros(HV), scale=K**-0.5,
        initial_state=torch.zeros(BATCH, HV, V, K), output_final_state=True, use_qk_l2norm_in_kernel=True,
        use_beta_sigmoid_in_kernel=True, state_v_first=True)


def main(ts: list[int]) -> None:
    print("| kernel | T | state, stores | resources | " + " | ".join(CLASSES) + " | total |")
    print("|---|---:|---|---|" + "---:|" * (len(CLASSES) + 1))
    cases = [(T, torch.float32, False) for T in ts] + [(4, torch.bfloat16, True)]
    for T, fmt, inter in cases:
        what = f"{'fp32' if fmt == torch.float32 else 'bf16'}, {'intermediate' if inter else 'final'}"
        kw = gdn_inputs(T, fmt, inter)
        runs = [("gdn_decode_kernel", lambda kw=kw: gdn_decode(**kw))]
        for warps in STREAM_WARPS:  # the streamed-token form (GDNKnobs.stream_tokens)
            knobs = GDNKnobs(block_v=32, num_warps=warps, stream_tokens=True)
            runs.append((f"gdn_decode_kernel streamed, {warps} warps",
                         lambda kw=kw, k=knobs: gdn_decode(**kw, knobs=k)))
        if fmt == torch.float32 and not inter and T == ts[0]:  # one kernel for every T (a runtime loop)
            try:
                runs.append(("fla fused_recurrent", fla_run(T)))
            except Exception as exc:  # noqa: BLE001 - fla-core absent or not importable here
                print(f"| fla fused_recurrent | {T} | {what} | not compiled: {type(exc).__name__}: {exc} |")
        for name, run in runs:
            try:
                ops, res = compiled(run)
            except Exception as exc:  # noqa: BLE001 - report a compile failure, go on
                print(f"| {name} | {T} | {what} | error: {type(exc).__name__}: {str(exc).splitlines()[0][:100]} |")
                continue
            counts = [sum(n for op, n in ops.items() if op.startswith(CLASSES[c])) for c in CLASSES]
            print(f"| {name} | {T} | {what} | {res} | " + " | ".join(map(str, counts)) + f" | {sum(ops.values())} |",
                  flush=True)


if __name__ == "__main__":
    main([int(t) for t in sys.argv[1:]] or [1, 2, 4, 6])
