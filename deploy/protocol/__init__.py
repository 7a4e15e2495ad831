"""The in-cluster market protocol as a Promela model, checked with the spin model checker.

`promela/` holds the model (the market controller, the negotiators, the host apiserver and the
faults); `spin.py` finds or fetches spin; `check.py` runs one verification; `scenarios.py` says
what `gpuparley protocol check` verifies (and which broken variants it must reject). README.md
maps each model step to the code it stands for.
"""
