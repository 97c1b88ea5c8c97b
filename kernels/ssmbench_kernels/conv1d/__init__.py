"""Causal conv1d update with a draft-tolerant state (docs/spec.md §6), the head of every chain
(PDL, docs/spec.md §7).

- ``reference``: ``conv1d_update``, ``conv1d_full_history`` (fp64).
- ``kernel``: the Triton ``conv1d_update``; its knobs: ``Conv1dKnobs`` and
  ``default_conv1d_knobs`` in ``kernel.py``.
"""
