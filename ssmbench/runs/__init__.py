"""The runs layer: what a command does with the cases. `planning` picks the impls for each case,
`check` runs every (case, impl) once against its reference (the correctness gate), and `sweep`
plans, shards and resumes a timed sweep over worker processes. Each (case, impl) is one target of
`ssmbench.measure.target`; the records go to `ssmbench.output`. Imports nothing heavy here."""
