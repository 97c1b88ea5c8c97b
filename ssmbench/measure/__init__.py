"""The measurement engine behind `ssmbench sweep` (docs/spec.md §10).

One module per job, data flowing one way:

- (``ssmbench.output.stats``, a layer below: the quantiles and the noise figure (IQR / median) a
  record carries, shared with the gate);
- ``stopping``: the adaptive stopping rule (how many samples a case gets, and why it stopped);
- ``timer``: turns "run the chain" into per-sample spans (CUPTI activity records, CUDA events as
  the labelled fallback, a wall clock for the CPU test mode);
- ``l2``: the L2 condition applied before each sample (cold / hot / realistic);
- ``bandwidth``: copy-bandwidth calibration, the datasheet table, bytes -> TB/s -> SOL %;
- ``clocks``: NVML SM clock and throttle reasons per measuring round;
- ``verify``: the correctness gate: an impl's outputs vs the fp64 reference, per-format tolerances;
- ``target``: one (case, impl) on a device: build -> run once -> verify -> prepare (restore, L2
  mode); also used by `check` and the profilers;
- ``runner``: one worker's session: workload -> correctness gate -> graph capture -> timed samples
  -> one results record per (case, impl).

GPU-only packages (cupti, pynvml) are imported lazily, so all of this imports on a CPU machine.
"""
