"""SASS instruction mix of the headline `triton.intermediate` kernel per storage format, compiled
for sm_90 on a machine WITHOUT a GPU (a stand-in Triton driver gives the target; ptxas and
nvdisasm ship with Triton; nothing is launched). Static counts of the fully unrolled T = 6 kernel,
divided by the 96 element-stores one thread does (a 4 x 128 tile on 32 threads, stored 6 times).

    PYTHONPATH=$PWD:$PWD/kernels python3 tools/gpu/sass_mix.py fp32,bf16,fp16,int8,fp8

Used for docs/perf-notes.md (issue 17): instruction counts before and after a kernel change,
without device time."""
import os, sys, glob, subprocess, collections, tempfile
os.environ.pop("TRITON_INTERPRET", None)
import torch, triton
from triton.backends.compiler import GPUTarget
from triton.runtime import driver
class Stop(Exception): pass
class Fake:
    class utils:
        @staticmethod
        def get_device_properties(d): return {"max_shared_mem": 232448, "multiprocessor_count": 132}
    def get_current_device(self): return 0
    def set_current_device(self, d): pass
    def get_current_stream(self, d=None): return 0
    def get_current_target(self): return GPUTarget("cuda", 90, 32)
    def get_active_torch_device(self): return torch.device("cpu")
    def get_device_interface(self): return torch.cuda
    def map_python_to_cpp_type(self, t): return t
    @staticmethod
    def launcher_cls(src, md): raise Stop()
driver.set_active(Fake())
from ssmbench_kernels.mamba2_states.kernel import mamba2_intermediate, IntermediateKnobs
NVDIS = os.path.join(os.path.dirname(triton.__file__), "backends/nvidia/bin/nvdisasm")
H, P, N, G, T = 16, 64, 128, 1, 6
dt = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "int8": torch.int8, "fp8": torch.float8_e4m3fn}
CLASSES = {"int": ("IMAD", "IADD", "LOP", "SHF", "ISETP", "IMNMX", "LEA", "PRMT", "SEL", "IABS", "POPC", "FLO", "BMSK", "I2IP", "VIADD", "VIMNMX", "IMUL"),
           "float": ("FFMA", "FADD", "FMUL", "FSETP", "FMNMX", "FSEL", "FRND", "F2F", "F2I", "I2F", "MUFU", "FCHK", "HADD2", "HFMA2", "HMUL2", "F2FP", "FSET")}
for fmt, rnd in [(f, r) for f in sys.argv[1].split(",") for r in ("rn", "sr") if not (f == "fp32" and r == "sr")]:
    batch = 1024
    cache = tempfile.mkdtemp()
    os.environ["TRITON_CACHE_DIR"] = cache
    pool = torch.zeros(batch*(T+1), H, P, N, dtype=dt[fmt])
    scale = torch.ones(batch*(T+1), H, P) if fmt in ("int8","fp8") else None
    src = torch.arange(batch); dst = batch + torch.arange(batch*T).reshape(batch, T)
    args = (pool, scale, src, dst, torch.zeros(batch*T, H*P+2*G*N, dtype=torch.bfloat16), torch.zeros(batch*T, H, dtype=torch.bfloat16),
            torch.zeros(H), torch.zeros(H), torch.zeros(H))
    try:
        mamba2_intermediate(*args, nheads=H, head_dim=P, dstate=N, ngroups=G, T=T, z=torch.zeros(batch*T, H*P, dtype=torch.bfloat16),
                            y=torch.zeros(batch*T, H*P, dtype=torch.bfloat16), fmt=fmt, rounding=rnd, pdl=False,
                            knobs=IntermediateKnobs(block_p=4, num_warps=1), validate=False)
    except Stop:
        pass
    cubins = glob.glob(f"{cache}/**/*.cubin", recursive=True)
    out = subprocess.run([NVDIS, "-c", cubins[0]], capture_output=True, text=True).stdout
    ops = collections.Counter()
    for line in out.splitlines():
        line = line.strip()
        if not line.startswith("/*") or "*/" not in line: continue
        ins = line.split("*/", 1)[1].strip().lstrip("@!P0123456789T ").split(" ")[0].rstrip(";")
        if ins: ops[ins.split(".")[0]] += 1
    total = sum(ops.values())
    cls = {c: sum(n for op, n in ops.items() if op in names) for c, names in CLASSES.items()}
    mem = sum(n for op, n in ops.items() if op.startswith(("LDG", "STG", "LDS", "STS")))
    # per thread: a 4 x 128 tile on 32 threads = 16 elements, stored T = 6 times: 96 element-stores
    print(f"{fmt}{'sr' if rnd=='sr' else '':2} total {total:5d}  int {cls['int']:5d}  float {cls['float']:5d}  mem {mem:4d}  "
          f"per element-store: {total/96:5.1f} (int {cls['int']/96:4.1f}, float {cls['float']/96:4.1f})")
