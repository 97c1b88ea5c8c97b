"""Mamba-2 decode keeping one state per draft token, draft trees included (docs/spec.md §4, §5a;
storage §8).

- ``reference``: ``mamba2_recurrence`` (tree parents), ``mamba2_mtp_step``,
  ``mamba2_intermediate_step`` (fp64; the sequential truth every Mamba-2 kernel is judged against).
- ``kernel``: the Triton ``mamba2_intermediate`` (impl ``triton.intermediate``); its knobs:
  ``IntermediateKnobs`` and ``default_knobs`` in ``kernel.py``.
"""
