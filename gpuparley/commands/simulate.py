"""`gpuparley simulate`: replay one scenario under a central scheduler and save its metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from gpuparley.agents.registry import SCHEDULERS, check_scheduler
from gpuparley.commands.console import console, fail, progress_bar
from gpuparley.envs.folders import check_output_folder
from gpuparley.envs.scenario import load_scenario
from gpuparley.evaluation.runner import simulate, write_outputs

HEADLINE = (
    ("jobs_finished", "jobs finished", "{:.0f}"),
    ("allocation_ratio_mean", "GPU allocation ratio (time avg)", "{:.3f}"),
    ("utilisation_mean", "GPU utilisation (time avg)", "{:.3f}"),
    ("fragmented_gpus_mean", "fragmented GPUs (time avg)", "{:.2f}"),
    ("jct_mean", "JCT mean (s)", "{:.0f}"),
    ("jct_p99", "JCT p99 (s)", "{:.0f}"),
    ("queueing_delay_mean", "queueing delay mean (s)", "{:.0f}"),
    ("makespan", "makespan (s)", "{:.0f}"),
    ("ftf_rho_max", "finish-time fairness rho (max)", "{:.2f}"),
    ("jain_gpu_time_normalised", "Jain's index (normalised GPU time)", "{:.3f}"),
    ("welfare", "welfare (realised value)", "{:.1f}"),
    ("gangs_partially_held", "gangs partially held", "{:.0f}"),
    ("noisy_neighbour_slowdown_mean", "noisy-neighbour slowdown (mean)", "{:.2f}"),
)


def metrics_table(metrics: dict, title: str) -> Table:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, label, fmt in HEADLINE:
        value = metrics.get(key)
        table.add_row(label, "-" if value is None else fmt.format(value))
    return table


def register(app: typer.Typer) -> None:
    @app.command("simulate")
    def simulate_command(
        scenario: Annotated[
            str, typer.Option(help="Scenario name (see `gpuparley scenarios`) or YAML path.")
        ] = "tiny",
        scheduler: Annotated[
            str, typer.Option(help=f"Central scheduler: {', '.join(SCHEDULERS)}.")
        ] = "first-fit",
        seed: Annotated[
            int, typer.Option(min=0, help="Workload seed; same seed, same numbers.")
        ] = 0,
        out: Annotated[
            Path, typer.Option(help="Directory for metrics.json, timeline.csv, scenario.yaml.")
        ] = Path("out/simulate"),
        trace: Annotated[
            Path | None,
            typer.Option(help="Replay this openb-format pod list (CSV) instead of the scenario's."),
        ] = None,
    ) -> None:
        """Replay a scenario under a central scheduler; write metrics.json and timeline.csv."""
        try:
            check_scheduler(scheduler)
            check_output_folder(out, "--out")
            resolved = load_scenario(scenario, trace=trace)
            with progress_bar() as bar:
                task = bar.add_task(f"{resolved.name} / {scheduler}", total=1.0)
                result = simulate(
                    resolved, scheduler, seed, lambda done: bar.update(task, completed=done)
                )
        except ValueError as error:  # a bad scheduler, scenario or trace row
            fail(str(error))
        paths = write_outputs(result, out)
        console.print(
            metrics_table(result.metrics, f"{resolved.name} under {scheduler}, seed {seed}")
        )
        for path in paths:
            console.print(f"wrote {path}")
