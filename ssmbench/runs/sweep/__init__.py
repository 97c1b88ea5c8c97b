"""`ssmbench sweep`: plan the (case, impl) pairs of a spec, measure them in worker processes,
log every result as it comes, and end with the results JSON and pivoted tables.

One module per job: `options` (the command's options and output checks, the spec), `plan`
(make_plan, filters matching, shards), `pool` (the worker process, the `WorkerPool`, worker-log
directories, stop signals), `run` (`run_sweep`: the orchestration). Each worker measures with
`ssmbench.measure.runner`.

Isolation: each worker is a spawned process owning one GPU (``--gpus 0,1`` starts one per GPU,
pulling cases from one queue). A CUDA fault, an OOM or a hang kills only that worker: the pair
it was on is recorded ``error`` with the reason (exit signal or deadline, plus the tail of the
worker's log), the case's remaining impls go back to the queue, and a fresh worker takes over.
Workers live across cases, so Triton kernels compiled for one case are reused by the next.

Deadlines come from the worker's ``phase`` messages: ``setup_timeout_s`` for workload / build
(compile) / verify / capture, the spec's ``measure.timeout_s`` plus ``grace_s`` for timing.

Two environment variables exist for testing and fault injection (documented in
docs/measurement.md): ``SSMBENCH_PLUGINS`` (modules imported first, in the parent and every
worker, that register extra impls) and ``SSMBENCH_SWEEP_DEVICE=cpu`` (a CPU test mode: wall-clock
"times", no graphs, no L2 control; never a real measurement).
"""
