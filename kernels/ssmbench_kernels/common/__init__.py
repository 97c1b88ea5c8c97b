"""Helpers shared by several kernel families.

Triton side: ``dots`` (the one ``tl.dot`` wrapper, interpreter-safe), ``activation``
(``softplus_thresholded``, docs/spec.md §4, §9), ``launch`` (interpreter detection, PDL launch
options, docs/spec.md §7), ``validation`` (host-side input checks, docs/spec.md §3).
Reference side: ``reference`` (``check_slots``, ``softplus_thresholded``; docs/spec.md §3, §4).
No knobs here: each family's ``kernel.py`` owns its own.
"""
