"""State storage formats (docs/spec.md §8): fp32, bf16, fp16, int8, fp8-e4m3 (+ exact fp64),
round-to-nearest or stochastic rounding with Philox uniforms.

- ``reference``: ``quantize`` / ``dequantize``, ``StoredState``, ``sr_uniform``, ``FORMATS``, ...
- ``kernel``: the Triton ``store_state_rows`` / ``load_state_rows`` every stateful kernel uses
  (bit-identical rounding to the reference). No knobs: the callers' kernels own theirs.
"""
