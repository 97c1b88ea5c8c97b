"""Gated DeltaNet decode (docs/spec.md §9; pools §3, storage §8).

- ``reference``: ``gdn_recurrence``, ``gdn_decode_step`` (fp64).
- ``kernel``: the Triton ``gdn_decode`` (impl ``triton.gdn``); its knobs: ``GDNKnobs`` and
  ``default_gdn_knobs`` in ``kernel.py``. Design: docs/gdn.md.
"""
