"""Test-wide settings: Triton kernels run in the interpreter on CPU machines; subprocesses import
this checkout's ssmbench and ssmbench_kernels (source root kernels/), installed or not, as pytest's
``pythonpath`` does in this process."""

import os
from pathlib import Path

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

_ROOT = Path(__file__).resolve().parent.parent
_paths = [str(_ROOT), str(_ROOT / "kernels"), *os.environ.get("PYTHONPATH", "").split(os.pathsep)]
os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(p for p in _paths if p))
