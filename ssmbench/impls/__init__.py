"""The impls layer: what runs a case. `base` is the interface (`Impl.build(case, workload) ->
Chain`, `register`); the providers (`reference`, `triton_mamba`, `flashinfer`, `triton_checkpoint`,
`triton_gdn`) implement it over the families' workloads and register into it; `registry` (the
shipped providers + the modules named in $SSMBENCH_PLUGINS) imports them and hands every impl to
the harness. Importing this package imports none of them (no torch, no Triton)."""
