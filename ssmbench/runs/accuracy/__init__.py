"""`ssmbench accuracy` (docs/accuracy.md): how far each state format drifts over a long decode.

For each (case, impl), N consecutive decode steps run with an fp64 chain in lockstep: the impl
continues from its OWN stored state (rounded every store, so drift accumulates), the fp64 chain
from the exact, unrounded state; both see the same inputs. `stream` draws the inputs and the
slow-decay heads, `steppers` drives each impl step after step, `run` holds the loop, the records
and the command's flow. Results: `ssmbench.output.accuracy_report`.
"""
