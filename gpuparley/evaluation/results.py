"""Saved results: `results.json` (everything a report needs) and `results.csv` (long format).

`results.json` holds the configuration and one record per policy x seed: scalar metrics plus
the downsampled series the plots need (timeline, JCTs, per-agent utility, or an inflation
curve), so `gpuparley report DIR` rebuilds the report without re-running a simulation.
`results.csv` has one row per policy x seed x metric (policy, seed, metric, value) for pandas
or R, and a `scenario` column first when the runs span several scenarios (the generalisation
experiment); a metric a policy does not have (agreement rate of a scheduler) has an empty value.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RESULTS_JSON = "results.json"
RESULTS_CSV = "results.csv"
FORMAT_VERSION = 1


@dataclass
class Results:
    """A finished evaluation. `config['experiment']` says which: tournament or fgd-inflation.

    Every run is a JSON-native dict with at least `policy`, `seed`, `scenario` and `metrics`
    (metric name -> number or None), so saving and loading is lossless."""

    config: dict[str, Any]
    runs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def experiment(self) -> str:
        return str(self.config.get("experiment", "tournament"))

    @property
    def policies(self) -> list[str]:
        """Policies in the order they were asked for (tables and legends keep it)."""
        return list(self.config["policies"])

    def runs_of(self, policy: str, scenario: str | None = None) -> list[dict[str, Any]]:
        return [
            run
            for run in self.runs
            if run["policy"] == policy and (scenario is None or run["scenario"] == scenario)
        ]

    @property
    def scenarios(self) -> list[str]:
        return list(dict.fromkeys(run["scenario"] for run in self.runs))


def write_results(results: Results, out_dir: Path) -> list[Path]:
    """Write results.json and results.csv into `out_dir` (created if needed)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / RESULTS_JSON
    document = {"format": FORMAT_VERSION, "config": results.config, "runs": results.runs}
    json_path.write_text(json.dumps(document, indent=1, allow_nan=False) + "\n")
    csv_path = out_dir / RESULTS_CSV
    where = ("scenario",) if len(results.scenarios) > 1 else ()
    with csv_path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow((*where, "policy", "seed", "metric", "value"))
        for run in results.runs:
            scenario = (run["scenario"],) if where else ()
            for metric, value in run["metrics"].items():
                writer.writerow(
                    (*scenario, run["policy"], run["seed"], metric, "" if value is None else value)
                )
    return [json_path, csv_path]


def load_results(out_dir: Path) -> Results:
    """Read `out_dir/results.json`; FileNotFoundError/ValueError say what is wrong with it."""
    path = out_dir / RESULTS_JSON
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; run `gpuparley eval --out {out_dir}`")
    try:
        document = json.loads(path.read_text())
        if document.get("format") != FORMAT_VERSION:
            raise ValueError(f"unsupported format {document.get('format')!r}")
        return Results(config=document["config"], runs=document["runs"])
    except (json.JSONDecodeError, KeyError, AttributeError, ValueError) as error:
        raise ValueError(f"{path} is not a gpuparley results file: {error}") from None
