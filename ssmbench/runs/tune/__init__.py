"""`ssmbench tune`: block coordinate descent over an impl's declared knob space, per tuning
group (shape, T, batch bucket, format, rounding, window), measured on one GPU with drift
control, resumable from its log; the winners become a per-device knob table
(`ssmbench.impls.tuned`). One module per job: `search` (the algorithm, pure), `journal` (the
log and its replay), `gpu` (the real measurer), `run` (the command: groups, budget, table,
report). docs/tuning.md."""
