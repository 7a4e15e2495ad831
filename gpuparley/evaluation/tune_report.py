"""The results of a Tune sweep (`train.tune`) as evaluation results and a report.

Each trial becomes one record of `Results` (experiment `tune`): the variant plays the part of
the policy and the training seed that of the seed, so `results.json`/`results.csv` have their
usual form and `report.md` the usual table of mean ± 95% CI over seeds, one column per variant
(`report.metric_table`): the best checkpoint's evaluation utility (per budget, overall and per
game), when it was taken, and the run's wall time and throughput.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gpuparley.evaluation.report import REPORT_MD, Row, metric_table
from gpuparley.evaluation.results import Results

EXPERIMENT = "tune"
ROWS = (
    Row("mean_budget_utility", "evaluation utility / budget per epoch (score)", "max", "{:.2f}"),
    Row("mean_utility", "evaluation utility (credits, mean over games)", "max", "{:.1f}"),
    Row("best_timesteps", "steps at the best checkpoint", "max", "{:.0f}"),
    Row("wall_seconds", "training wall time (s)", "min", "{:.0f}"),
    Row("steps_per_second", "training steps/s", "max", "{:.0f}"),
)


def sweep_results(
    records: Sequence[dict[str, Any]], config_name: str, grid: dict[str, list[Any]]
) -> Results:
    """`Results` of the sweep's trial records (`train.tune.run_sweep`)."""
    variants = list(dict.fromkeys(record["variant"] for record in records))
    seeds = list(dict.fromkeys(record["seed"] for record in records))
    config = {
        "experiment": EXPERIMENT,
        "scenario": config_name,
        "policies": variants,
        "seeds": seeds,
        "grid": grid,
        "confidence": 0.95,
    }
    runs = [
        {
            "policy": record["variant"],
            "seed": record["seed"],
            "scenario": config_name,
            "metrics": record["metrics"],
            "best_checkpoint": record["best"],
        }
        for record in records
    ]
    return Results(config=config, runs=runs)


def render(results: Results) -> str:
    name = results.config["scenario"]
    games = sorted({key for run in results.runs for key in run["metrics"] if " " in key})
    rows = [*ROWS, *(Row(key, key, "max", "{:.1f}") for key in games)]
    seeds = results.config["seeds"]
    lines = [
        f"# gpuparley Tune sweep of training config `{name}`",
        "",
        f"- variants: {', '.join(f'`{p}`' for p in results.policies)}",
        f"- training seeds: {', '.join(map(str, seeds))} (n = {len(seeds)})",
        "- each trial's best checkpoint, evaluated against the config's evaluation opponents "
        "(`train.evaluate`); cells: mean ± 95% CI half-width (Student t over seeds); **bold** = "
        "best of the row",
        "",
        *metric_table(results, rows, name),
        "",
    ]
    return "\n".join(lines)


def write_tune_report(results: Results, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / REPORT_MD
    path.write_text(render(results))
    return path
