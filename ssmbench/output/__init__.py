"""The output layer: what a run leaves behind and what reads it. `results` is the record and the
results file / log (schema ``ssmbench.results/1``), `stats` the order statistics a record carries
(median, p10/p90, noise: shared with the stopping rule), `report` the tables, Markdown and progress
lines, `compare` the regression gate's decisions (pure), `baselines` the stored reference results.
No torch: a results file is read and compared without a GPU."""
