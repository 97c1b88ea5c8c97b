"""Mamba-2 checkpoint replay: a state checkpoint plus a history ring of window W (docs/spec.md §5b;
storage §8, the PDL chain §7).

- ``reference``: ``ReplayState``, ``new_replay_state``, ``replay_step``, ``replay_commit``,
  ``replay_implied_state`` (fp64; builds on ``mamba2_states.reference``).
- ``kernel``: the Triton precompute + main kernels (``replay_step``, ``make_scratch``, ``commit``;
  impl ``triton.checkpoint``); its knobs: ``CheckpointKnobs`` and ``default_knobs`` in
  ``kernel.py``. Design: docs/checkpoint.md.
"""
