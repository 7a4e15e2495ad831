"""Evaluation: tournaments of policies over seeds on one scenario, saved results, paper reports.

`policies` parses policy specs, `tournament` runs them (and `inflation` the FGD experiment),
`results` saves and reloads everything a report needs, `report` and `plots` turn saved results
into `report.md` and PNGs, so a report can always be rebuilt without re-running anything.
`cells` and `ray_sweep` run a sweep's cells as Ray tasks; `tune_report` reports Tune sweeps.
"""
