"""`report.md`: one table per scenario of mean ± 95% CI (Student t over seeds) per policy, the
best value of each row in bold, then the plots. Built only from saved `Results`, so
`gpuparley report DIR` reproduces it byte for byte from results.json.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from gpuparley.evaluation import generalisation_report, plots
from gpuparley.evaluation.fgd_inflation import DEFAULT_TARGETS, target_key
from gpuparley.evaluation.fgd_inflation import EXPERIMENT as INFLATION
from gpuparley.evaluation.generalisation import EXPERIMENT as GENERALISATION
from gpuparley.evaluation.results import Results
from gpuparley.evaluation.stats import mean_ci

REPORT_MD = "report.md"
Direction = Literal["max", "min"]


@dataclass(frozen=True)
class Row:
    """A headline metric: its key in the run metrics, its label, which way is better, format."""

    key: str
    label: str
    better: Direction
    fmt: str


HEADLINE = (
    Row("allocation_ratio_mean", "allocation ratio (time avg)", "max", "{:.3f}"),
    Row("utilisation_mean", "GPU utilisation (time avg)", "max", "{:.3f}"),
    Row("jobs_finished", "jobs finished", "max", "{:.1f}"),
    Row("jobs_unfinished", "jobs unfinished at the horizon", "min", "{:.1f}"),
    Row("unfinished_gpu_hours", "unfinished work (GPU-hours)", "min", "{:.1f}"),
    Row("jct_mean", "JCT mean (s)", "min", "{:.0f}"),
    Row("jct_p50", "JCT p50 (s)", "min", "{:.0f}"),
    Row("jct_p95", "JCT p95 (s)", "min", "{:.0f}"),
    Row("jct_p99", "JCT p99 (s)", "min", "{:.0f}"),
    Row("queueing_delay_mean", "queueing delay mean (s)", "min", "{:.0f}"),
    Row("makespan", "makespan (s)", "min", "{:.0f}"),
    Row("ftf_rho_max", "finish-time fairness ρ max", "min", "{:.2f}"),
    Row("ftf_rho_mean", "finish-time fairness ρ mean", "min", "{:.2f}"),
    Row("jain_gpu_time_normalised", "Jain's index (normalised GPU time)", "max", "{:.3f}"),
    Row("welfare", "welfare (realised value)", "max", "{:.1f}"),
    Row("gangs_partially_held", "gangs partially held", "min", "{:.1f}"),
    Row("deadlock_episodes", "deadlock episodes", "min", "{:.1f}"),
    Row("noisy_neighbour_slowdown_mean", "noisy-neighbour slowdown (mean)", "min", "{:.2f}"),
    Row("agreement_rate", "agreement rate", "max", "{:.3f}"),
    Row("messages_per_allocation", "messages per allocation", "min", "{:.1f}"),
)

INFLATION_ROWS = (
    Row("final_allocation_ratio", "final allocation ratio", "max", "{:.4f}"),
    Row("unallocated_gpus", "unallocated GPUs", "min", "{:.1f}"),
    Row("pods_unplaced", "pods unplaced", "min", "{:.1f}"),
)

MISSING = "–"


def rows_for(results: Results) -> tuple[Row, ...]:
    """The table rows of the results' experiment (inflation: each row once per target)."""
    if results.experiment != INFLATION:
        return HEADLINE
    targets = results.config.get("targets", DEFAULT_TARGETS)
    return tuple(
        Row(target_key(row.key, t), f"{row.label} ({t:.0%} arrived)", row.better, row.fmt)
        for row in INFLATION_ROWS
        for t in targets
    )


def best_policies(
    means: Mapping[str, float | None], better: Direction, fmt: str | None = None
) -> set[str]:
    """The policies whose mean is the best of the row (ties all win; missing means never).

    With `fmt`, means are compared as displayed, so two cells that read the same are both bold.
    """
    known = {
        policy: float(fmt.format(mean)) if fmt else mean
        for policy, mean in means.items()
        if mean is not None
    }
    if not known:
        return set()
    best = max(known.values()) if better == "max" else min(known.values())
    return {p for p, mean in known.items() if math.isclose(mean, best, rel_tol=1e-9, abs_tol=1e-12)}


def format_cell(mean: float | None, half_width: float | None, fmt: str, bold: bool) -> str:
    """`mean ± half-width` (just the mean from one seed), bold when best, `–` when missing."""
    if mean is None:
        return MISSING
    text = (
        fmt.format(mean) if half_width is None else f"{fmt.format(mean)} ± {fmt.format(half_width)}"
    )
    return f"**{text}**" if bold else text


def summary(
    results: Results, rows: Sequence[Row], scenario: str
) -> dict[str, dict[str, tuple[float | None, float | None]]]:
    """metric -> policy -> (mean, CI half-width) over the scenario's seeds."""
    confidence = float(results.config.get("confidence", 0.95))
    return {
        row.key: {
            policy: mean_ci(
                [run["metrics"].get(row.key) for run in results.runs_of(policy, scenario)],
                confidence,
            )
            for policy in results.policies
        }
        for row in rows
    }


def metric_table(results: Results, rows: Sequence[Row], scenario: str) -> list[str]:
    """Markdown lines of one scenario's table: a row per metric, a column per policy."""
    stats = summary(results, rows, scenario)
    lines = [
        "| metric | " + " | ".join(f"`{p}`" for p in results.policies) + " |",
        "|---|" + "---:|" * len(results.policies),
    ]
    for row in rows:
        cells = stats[row.key]
        best = best_policies({p: cell[0] for p, cell in cells.items()}, row.better, row.fmt)
        arrow = "↑" if row.better == "max" else "↓"
        rendered = [format_cell(*cells[p], row.fmt, p in best) for p in results.policies]
        lines.append(f"| {row.label} {arrow} | " + " | ".join(rendered) + " |")
    return lines


def _header(results: Results) -> list[str]:
    config = results.config
    seeds = config["seeds"]
    confidence = round(100 * float(config.get("confidence", 0.95)))
    lines = [
        f"# gpuparley evaluation: {config['experiment']} on `{config['scenario']}`",
        "",
        f"- policies: {', '.join(f'`{p}`' for p in results.policies)}",
        f"- seeds: {', '.join(map(str, seeds))} (n = {len(seeds)}; each seed's workload is "
        "shared by every policy)",
    ]
    mechanisms = {run["policy"]: run.get("mechanism") for run in results.runs}
    markets = [f"`{p}` {m}" for p, m in mechanisms.items() if m]
    if markets:
        lines.append(f"- market mechanisms: {', '.join(markets)}")
    for field, trace in config.get("trace_files", {}).items():
        lines.append(
            f"- trace `{trace['file']}` ({field}): {trace['rows']:,} rows, sha256 "
            f"`{trace['sha256'][:16]}…`"
        )
    lines += _horizon_lines(config)
    lines += [
        f"- cells: mean ± {confidence}% CI half-width (Student t over seeds; one seed: mean "
        f"only); **bold** = best of the row (↑ higher / ↓ lower is better); {MISSING} = not "
        "applicable or no data",
        "",
    ]
    return lines


def _seconds(value: float) -> str:
    return f"{value:,.0f} s ({value / 3600:,.1f} h)"


def _horizon_lines(config: Mapping[str, Any]) -> list[str]:
    """The horizon every policy shared (results before the equal-horizon rule say what they
    had instead)."""
    horizon = config.get("horizon")
    if horizon:
        caps = horizon["seconds_by_seed"]
        values = sorted(set(caps.values()))
        cap = (
            _seconds(values[0])
            if len(values) == 1
            else "per seed " + ", ".join(f"{seed}: {_seconds(v)}" for seed, v in caps.items())
        )
        source = horizon["source"]
        source = source if isinstance(source, str) else " / ".join(source)
        rule = f" = {horizon['rule']}" if "default rule" in source else ""
        return [
            f"- horizon: every policy runs until every job has finished or the cap of {cap} "
            f"of simulated time, whichever comes first (cap from the {source}{rule}); a market "
            "plays the epochs that cover the cap, its simulator stopped at the cap. Unfinished "
            "jobs realise no value, count in ρ with the cap as their finish time, and their "
            "remaining work is `unfinished work`"
        ]
    if config.get("max_epochs") is not None:
        return [f"- market episodes capped at {config['max_epochs']} epochs"]
    if config.get("experiment", "tournament") != INFLATION:
        return ["- horizon: not recorded (results from before the equal-horizon rule)"]
    return []


def _plot_section(images: Iterable[tuple[str, Path]]) -> list[str]:
    lines = ["## Plots", ""]
    for title, path in images:
        lines += [f"### {title}", "", f"![{title}]({path.name})", ""]
    return lines


def render(results: Results, images: Iterable[tuple[str, Path]] = ()) -> str:
    """The whole report.md text (tables for every scenario, then the plots)."""
    rows = rows_for(results)
    lines = _header(results)
    for scenario in results.scenarios:
        lines += [f"## Scenario `{scenario}`", "", *metric_table(results, rows, scenario), ""]
    if results.experiment != INFLATION:
        lines += [
            "JCT, queueing delay and makespan are over finished jobs only: read them with "
            "`jobs finished` and `unfinished work`. Utility in the plots is value minus net "
            "payments for a market, value for a central scheduler (which charges nothing).",
            "",
        ]
    lines += _plot_section(images)
    return "\n".join(lines).rstrip() + "\n"


def write_report(results: Results, out_dir: Path) -> list[Path]:
    """Draw the plots and write report.md into `out_dir`; returns every file written. The
    generalisation experiment has its own report (`generalisation_report`) and no plots."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / REPORT_MD
    if results.experiment == GENERALISATION:
        path.write_text(generalisation_report.render(results))
        return [path]
    images = plots.draw_all(results, out_dir)
    path.write_text(render(results, images))
    return [path, *(image for _, image in images)]
