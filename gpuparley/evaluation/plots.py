"""The report's PNGs, drawn from saved results only (matplotlib, Agg backend: no display).

Series are averaged across seeds per policy on a common time grid; each run's downsampled
timeline is a step function that holds its last value after the run ends. Central schedulers
are solid lines, market policies dashed, so the two families read apart at a glance.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gpuparley.evaluation.fgd_inflation import EXPERIMENT as INFLATION
from gpuparley.evaluation.results import Results
from gpuparley.evaluation.stats import mean_ci

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

GRID_POINTS = 400
HOUR = 3600.0
Run = dict[str, Any]


@functools.cache
def _pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend (no display), imported when a figure is drawn:
    the commands that draw none -- the market and the negotiators among them -- start without
    it (a quarter of a second of every `gpuparley` start)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after use("Agg")

    return plt


def _style(policy: str) -> dict[str, Any]:
    return {"linestyle": "--" if policy.startswith(("scripted:", "learned:")) else "-"}


def _seeds_note(results: Results, how: str = "mean") -> str:
    return f"{how} over {len(results.config['seeds'])} seed(s)"


def mean_series(runs: list[Run], column: str, grid: np.ndarray) -> np.ndarray:
    """The mean across runs of a timeline column, each run read as a step function on `grid`."""
    curves = []
    for run in runs:
        times = np.asarray(run["timeline"]["time"])
        values = np.asarray(run["timeline"][column])
        if len(times) == 0:
            continue
        index = np.clip(np.searchsorted(times, grid, side="right") - 1, 0, len(times) - 1)
        curves.append(values[index])
    return np.mean(curves, axis=0) if curves else np.zeros_like(grid)


def _time_grid(results: Results) -> np.ndarray:
    ends = [run["timeline"]["time"][-1] for run in results.runs if run["timeline"]["time"]]
    return np.linspace(0.0, max(ends, default=0.0), GRID_POINTS)


def _finish(fig: Figure, ax: Axes, path: Path, legend: bool = True) -> Path:
    if legend:
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    _pyplot().close(fig)
    return path


def allocation_over_time(results: Results, path: Path) -> Path:
    grid = _time_grid(results)
    fig, ax = _pyplot().subplots(figsize=(9, 4.5))
    for policy in results.policies:
        curve = mean_series(results.runs_of(policy), "allocation_ratio", grid)
        ax.step(grid / HOUR, curve, where="post", label=policy, **_style(policy))
    ax.set(
        title=f"GPU allocation ratio over time ({_seeds_note(results)})",
        xlabel="simulated time (h)",
        ylabel="allocation ratio (allocated / total GPU capacity)",
        ylim=(0, 1.05),
    )
    return _finish(fig, ax, path)


def jct_cdf(results: Results, path: Path) -> Path:
    fig, ax = _pyplot().subplots(figsize=(9, 4.5))
    pooled = {
        p: np.sort(np.concatenate([r["jct_sorted"] for r in results.runs_of(p)] or [[]]))
        for p in results.policies
    }
    positive = np.concatenate([v[v > 0] for v in pooled.values()] or [[]])
    for policy, jcts in pooled.items():
        if len(jcts):
            share = np.arange(1, len(jcts) + 1) / len(jcts)
            ax.step(jcts / HOUR, share, where="post", label=policy, **_style(policy))
    if len(positive) and positive.max() / positive.min() > 100:
        ax.set_xscale("log")
    ax.set(
        title=f"Job completion time CDF (finished jobs, {_seeds_note(results, 'pooled')})",
        xlabel="job completion time (h)",
        ylabel="share of finished jobs",
        ylim=(0, 1.02),
    )
    return _finish(fig, ax, path)


def agent_utility(results: Results, path: Path) -> Path:
    agents = list(dict.fromkeys(a for run in results.runs for a in run["utility_by_agent"]))
    policies = results.policies
    width = 0.8 / max(1, len(policies))
    bars = len(agents) * max(1, len(policies))
    fig, ax = _pyplot().subplots(figsize=(min(18.0, max(8.0, 3 + 0.35 * bars)), 4.5))
    x = np.arange(len(agents))
    for i, policy in enumerate(policies):
        stats = [
            mean_ci([run["utility_by_agent"].get(a) for run in results.runs_of(policy)])
            for a in agents
        ]
        means = [m or 0.0 for m, _ in stats]
        errors = [h or 0.0 for _, h in stats]
        hatch = "//" if _style(policy)["linestyle"] == "--" else None
        ax.bar(
            x + (i - (len(policies) - 1) / 2) * width,
            means,
            width,
            yerr=errors,
            capsize=2,
            label=policy,
            hatch=hatch,
        )
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(x, agents)
    ax.set(
        title=f"Utility per agent ({_seeds_note(results)}, 95% CI)",
        xlabel="agent (tenant)",
        ylabel="utility (value − net payments; value units)",
    )
    return _finish(fig, ax, path)


def occupancy(results: Results, path: Path) -> Path:
    grid = _time_grid(results)
    fig, (gpus_ax, mig_ax) = _pyplot().subplots(2, 1, figsize=(9, 6.5), sharex=True)
    any_mig = False
    for policy in results.policies:
        runs = results.runs_of(policy)
        total = np.mean([run["gpus"] for run in runs]) if runs else 0.0
        in_use = total - mean_series(runs, "idle_gpus", grid)
        slices = mean_series(runs, "mig_slices_used", grid)
        any_mig |= bool(slices.any())
        gpus_ax.step(grid / HOUR, in_use, where="post", label=policy, **_style(policy))
        mig_ax.step(grid / HOUR, slices, where="post", label=policy, **_style(policy))
    gpus_ax.set(
        title=f"GPU and MIG-slice occupancy over time ({_seeds_note(results)})",
        ylabel="GPUs in use (count)",
    )
    mig_ax.set(xlabel="simulated time (h)", ylabel="MIG compute slices in use (count)")
    if not any_mig:
        mig_ax.set_ylim(0, 1)
        mig_ax.text(
            0.5,
            0.5,
            "no MIG slices used in this scenario",
            ha="center",
            transform=mig_ax.transAxes,
            color="grey",
        )
    mig_ax.grid(alpha=0.3)
    return _finish(fig, gpus_ax, path)


def inflation_curves(results: Results, path: Path) -> Path:
    fig, ax = _pyplot().subplots(figsize=(9, 4.5))
    top = 100 * max(results.config.get("targets", [1.3]))
    for policy in results.policies:
        runs = results.runs_of(policy)
        if not runs:
            continue
        arrived = 100 * np.asarray(runs[0]["arrived"])
        curve = 100 * np.mean([run["allocation_ratio"] for run in runs], axis=0)
        ax.plot(arrived, curve, label=policy, **_style(policy))
    ax.plot([0, 100, max(top, 100)], [0, 100, 100], color="grey", linestyle=":", label="ideal")
    ax.set(
        title=f"FGD inflation: GPU allocation vs arrived workload ({_seeds_note(results)})",
        xlabel="arrived workload (% of GPU capacity)",
        ylabel="GPU allocation ratio (%)",
        xlim=(0, top),
        ylim=(0, 102),
    )
    return _finish(fig, ax, path)


def draw_all(results: Results, out_dir: Path) -> list[tuple[str, Path]]:
    """Every plot the experiment has, as (title, path) for the report."""
    if results.experiment == INFLATION:
        figures = [("Allocation ratio vs arrived workload", inflation_curves, "inflation.png")]
    else:
        figures = [
            ("Allocation ratio over time", allocation_over_time, "allocation_over_time.png"),
            ("JCT CDF", jct_cdf, "jct_cdf.png"),
            ("Utility per agent", agent_utility, "agent_utility.png"),
            ("GPU / MIG occupancy over time", occupancy, "occupancy.png"),
        ]
    return [(title, draw(results, out_dir / name)) for title, draw, name in figures]
