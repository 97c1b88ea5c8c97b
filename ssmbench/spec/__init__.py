"""The spec layer: what to run. A sweep file is read with line numbers (`yamlpos`), validated
into the `SweepFile` / `Sweep` models (`load`), and expanded over its axes (`expand`) into the
`Case`s every later layer takes (`case`: the case model and its stable ids), with the model presets
(`presets`) and the acceptance laws (`accept`) they draw on. Pure Python, no torch: the bottom of
the data flow (above only `ssmbench.errors` and `ssmbench.resources`)."""
