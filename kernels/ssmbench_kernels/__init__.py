"""ssmbench's kernels: one folder per kernel family, its fp64 PyTorch reference (``reference.py``)
beside its Triton kernel (``kernel.py``); the contract is docs/spec.md.

- ``storage``: state storage formats, RN / SR rounding (docs/spec.md §8)
- ``conv1d``: the causal conv1d update, head of every chain (§6)
- ``mamba2_states``: Mamba-2 with per-token states, draft trees included (§4, §5a)
- ``mamba2_replay``: Mamba-2 checkpoint replay over a history ring (§5b)
- ``gdn``: Gated DeltaNet decode (§9)
- ``common``: helpers several families share (Triton: dots, activation, launch / PDL, input
  validation; references: ``common.reference``)

A reference may import another family's reference (replay builds on ``mamba2_states``, every
stateful family on ``storage``); references never import kernels. Importing this package (or a
family's package) imports nothing else: the Triton modules load only when a ``kernel`` module or
a ``common`` Triton helper is imported (``TRITON_INTERPRET`` must be set before that, on a CPU).

The folder ``kernels/`` of the repository is a source root, not a package: the wheel installs
``ssmbench_kernels`` (a top-level ``kernels`` would collide with an unrelated PyPI package).
"""
