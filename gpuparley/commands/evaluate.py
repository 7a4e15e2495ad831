"""`gpuparley eval`, `gpuparley report` and `gpuparley demo`: tournaments and paper reports.

Every user mistake (unknown policy, scenario, seeds, experiment, missing checkpoint or results)
prints one clear message and exits with status 2; nothing runs until all inputs parse.
"""

from __future__ import annotations

import math
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.table import Table

from gpuparley.agents.registry import INCUMBENTS
from gpuparley.commands.console import console, fail, progress_bar, require_ray
from gpuparley.envs.folders import check_output_folder
from gpuparley.envs.scenario import load_scenario, parse_overrides
from gpuparley.evaluation.cells import CellMap
from gpuparley.evaluation.fgd_inflation import (
    DEFAULT_TARGETS,
    check_schedulers,
    parse_targets,
    run_inflation_experiment,
    target_key,
)
from gpuparley.evaluation.fgd_inflation import EXPERIMENT as INFLATION
from gpuparley.evaluation.generalisation import BUNDLED, run_generalisation
from gpuparley.evaluation.generalisation import EXPERIMENT as GENERALISATION
from gpuparley.evaluation.generalisation_report import summary_rows
from gpuparley.evaluation.report import MISSING, Row, summary, write_report
from gpuparley.evaluation.results import Results, load_results, write_results
from gpuparley.evaluation.tournament import parse_seeds, run_tournament
from gpuparley.evaluation.tune_report import EXPERIMENT as TUNE
from gpuparley.evaluation.tune_report import write_tune_report
from gpuparley.policy.specs import PolicySpec, parse_policies, policy_choices

EXPERIMENTS = ("tournament", INFLATION, GENERALISATION)
DEFAULT_POLICIES = ",".join((*INCUMBENTS, "scripted:truthful"))
GENERALISATION_POLICY = "learned:default"
DEMO_POLICIES = (
    "first-fit,kube-default,volcano,kai,kueue,fgd,themis,scripted:truthful,"
    "learned:checkpoints/default"
)


@dataclass(frozen=True)
class GeneralisationOptions:
    """`--experiment generalisation`'s own options (see `evaluation.generalisation`)."""

    held_out: int = 100
    training: int | None = None
    incumbents: str = ",".join(INCUMBENTS)
    bundled: str = ",".join(BUNDLED)


def cell_engine(ray: bool, address: str | None) -> AbstractContextManager[CellMap | None]:
    """In-process runs (None), or Ray tasks: on the cluster at `address`, else on a Ray started
    on this machine for the run."""
    if not ray and address is None:
        return nullcontext(None)
    require_ray("eval")
    from gpuparley.evaluation.ray_sweep import ray_cells

    return ray_cells(address)


def run_evaluation(
    scenario: str | None,
    policies: str | None,
    seeds: str,
    experiment: str = "tournament",
    horizon: float | None = None,
    overrides: list[str] | None = None,
    trace: Path | None = None,
    targets: str | None = None,
    generalisation: GeneralisationOptions | None = None,
    ray: bool = False,
    address: str | None = None,
) -> Results:
    """Parse every input (ValueError says what is wrong), then run with a progress bar; with
    `ray` or an `address`, each policy x seed as a Ray task (`cell_engine`)."""
    if experiment not in EXPERIMENTS:
        raise ValueError(
            f"unknown experiment {experiment!r}; choose one of: {', '.join(EXPERIMENTS)}"
        )
    if experiment == GENERALISATION:
        if scenario is not None or horizon is not None or overrides or trace or targets:
            raise ValueError(
                f"--experiment {GENERALISATION} plays the bundled and generated scenarios with "
                "their own horizons: drop --scenario, --horizon, --set, --trace and --targets"
            )
        return _generalisation(
            policies, seeds, generalisation or GeneralisationOptions(), ray, address
        )
    if generalisation is not None:
        raise ValueError(
            f"--held-out, --training-seeds, --incumbents and --bundled belong to "
            f"--experiment {GENERALISATION}"
        )
    if scenario is None:
        raise ValueError(f"--scenario is needed by --experiment {experiment}")
    if horizon is not None and not math.isfinite(horizon):
        raise ValueError(
            f"--horizon: {horizon} is not a finite number of seconds;"
            " leave it out for the scenario's horizon"
        )
    parsed: list[PolicySpec] = parse_policies(policies or DEFAULT_POLICIES)
    seed_list = parse_seeds(seeds)
    if experiment == INFLATION:
        check_schedulers(parsed)
        if horizon is not None:
            raise ValueError(f"--horizon applies to tournaments; {INFLATION} has no clock")
    elif targets is not None:
        raise ValueError(f"--targets belongs to --experiment {INFLATION}")
    target_list = parse_targets(targets) if targets is not None else list(DEFAULT_TARGETS)
    resolved = load_scenario(scenario, parse_overrides(overrides or []), trace)
    total = len(parsed) * len(seed_list)
    with cell_engine(ray, address) as cells, progress_bar() as bar:
        task = bar.add_task(f"{resolved.name}: starting", total=total)

        def on_progress(done: float, label: str) -> None:
            bar.update(task, completed=done, description=f"{resolved.name}: {label}")

        if experiment == INFLATION:
            return run_inflation_experiment(
                resolved, parsed, seed_list, target_list, on_progress, cells=cells
            )
        return run_tournament(resolved, parsed, seed_list, horizon, on_progress, cells)


def _generalisation(
    policies: str | None,
    seeds: str,
    options: GeneralisationOptions,
    ray: bool = False,
    address: str | None = None,
) -> Results:
    parsed = parse_policies(policies or GENERALISATION_POLICY)
    if len(parsed) != 1:
        raise ValueError(
            f"--experiment {GENERALISATION} takes one learned negotiator in --policies "
            "(truthful and the incumbents are added)"
        )
    seed_list = parse_seeds(seeds)
    incumbents = [name.strip() for name in options.incumbents.split(",") if name.strip()]
    bundled = [name.strip() for name in options.bundled.split(",") if name.strip()]
    if options.held_out < 0 or (options.training is not None and options.training < 0):
        raise ValueError("--held-out and --training-seeds count seeds: 0 or more")
    with cell_engine(ray, address) as cells, progress_bar() as bar:
        task = bar.add_task(f"{GENERALISATION}: starting", total=None)

        def on_progress(done: float, label: str) -> None:
            bar.update(task, completed=done, description=f"{GENERALISATION}: {label}")

        return run_generalisation(
            parsed[0],
            seed_list,
            options.held_out,
            options.training,
            incumbents,
            on_progress,
            bundled,
            cells,
        )


def save(results: Results, out: Path) -> None:
    """Write results and report into `out` and list the files."""
    for path in [*write_results(results, out), *write_report(results, out)]:
        console.print(f"wrote {path}")


COMPACT = (
    ("jobs_finished", "jobs", "{:.0f}"),
    ("allocation_ratio_mean", "alloc", "{:.3f}"),
    ("utilisation_mean", "util", "{:.3f}"),
    ("jct_mean", "JCT s", "{:.0f}"),
    ("queueing_delay_mean", "wait s", "{:.0f}"),
    ("ftf_rho_max", "ρ max", "{:.2f}"),
    ("welfare", "welfare", "{:.0f}"),
)
"""The terminal table's columns (key, header, format); report.md has every metric."""


def compact_columns(results: Results) -> list[tuple[str, str, str]]:
    """(metric key, short header, format) of the terminal table for the results' experiment."""
    if results.experiment != INFLATION:
        return list(COMPACT)
    targets = results.config.get("targets", DEFAULT_TARGETS)
    return [
        (target_key(key, t), f"{header} {t:.0%}", fmt)
        for key, header, fmt in (
            ("final_allocation_ratio", "alloc", "{:.4f}"),
            ("unallocated_gpus", "idle GPUs", "{:.1f}"),
        )
        for t in targets
    ]


def generalisation_table(results: Results) -> Table:
    """Per bundled scenario and generated group: the learned policy against truthful and the
    best incumbent (welfare, paired, %); report.md has the intervals."""
    table = Table(
        title=f"{results.config['learned']}: welfare, paired; CIs in report.md",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    for header in ("workloads", "n", "vs truthful", ">= truthful", "vs best inc.", "jobs L/B"):
        table.add_column(header, justify="left" if header == "workloads" else "right")
    for row in summary_rows(results):
        table.add_row(*row)
    return table


def means_table(results: Results) -> Table:
    """The headline metrics, mean over seeds, a row per policy: fits an 80-column terminal
    (numbers never wrap; long policy names fold). report.md has every metric with its CI."""
    if results.experiment == GENERALISATION:
        return generalisation_table(results)
    columns = compact_columns(results)
    rows = [Row(key, header, "max", fmt) for key, header, fmt in columns]
    scenario = results.config["scenario"]
    seeds = results.config["seeds"]
    table = Table(
        title=f"{scenario}, mean of {len(seeds)} seed(s); CIs in report.md",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    table.add_column("policy", overflow="fold", min_width=10)
    for _key, header, _fmt in columns:
        table.add_column(header, justify="right", no_wrap=True)
    stats = summary(results, rows, scenario)
    for policy in results.policies:
        means = [(stats[key][policy][0], fmt) for key, _header, fmt in columns]
        table.add_row(policy, *(MISSING if m is None else fmt.format(m) for m, fmt in means))
    return table


def register(app: typer.Typer) -> None:
    @app.command("eval")
    def eval_command(
        scenario: Annotated[
            str | None,
            typer.Option(
                help="Scenario name (see `gpuparley scenarios`) or YAML path "
                f"(not with --experiment {GENERALISATION}, which plays its own)."
            ),
        ] = None,
        policies: Annotated[
            str | None,
            typer.Option(
                help="Comma-separated policy specs: "
                + ", ".join(policy_choices())
                + f" (a market may add @auction or @bargain). Default: {DEFAULT_POLICIES}; "
                f"{GENERALISATION}: one learned negotiator, {GENERALISATION_POLICY}."
            ),
        ] = None,
        seeds: Annotated[str, typer.Option(help="Seeds: a range 0-4 or a list 0,2,7.")] = "0-4",
        out: Annotated[
            Path, typer.Option(help="Directory for results.json/csv, report.md and PNGs.")
        ] = Path("out/eval"),
        experiment: Annotated[
            str, typer.Option(help=f"What to run: {', '.join(EXPERIMENTS)}.")
        ] = "tournament",
        horizon: Annotated[
            float | None,
            typer.Option(
                min=1e-9,
                help="Cap every run at this many simulated seconds (default: the scenario's "
                "settings.horizon, else last uncontended finish + 10 x work / capacity).",
            ),
        ] = None,
        overrides: Annotated[
            list[str] | None,
            typer.Option("--set", help="Scenario override KEY=VALUE (repeatable)."),
        ] = None,
        trace: Annotated[
            Path | None,
            typer.Option(help="Replay this openb-format pod list (CSV) instead of the scenario's."),
        ] = None,
        targets: Annotated[
            str | None,
            typer.Option(
                help=f"{INFLATION}: arrived workload levels as shares of GPU capacity, "
                "e.g. 1.0,1.3 (default 1.3)."
            ),
        ] = None,
        held_out: Annotated[
            int | None,
            typer.Option(help=f"{GENERALISATION}: held-out generator seeds to play (max 100)."),
        ] = None,
        training_seeds: Annotated[
            int | None,
            typer.Option(
                help=f"{GENERALISATION}: training-distribution seeds (default: as --held-out)."
            ),
        ] = None,
        incumbents: Annotated[
            str | None,
            typer.Option(help=f"{GENERALISATION}: incumbents to compare with (default: all six)."),
        ] = None,
        bundled: Annotated[
            str | None,
            typer.Option(help=f"{GENERALISATION}: bundled scenarios to play (default: all five)."),
        ] = None,
        ray: Annotated[
            bool,
            typer.Option(
                help="Run each policy x seed as a Ray task (same results): on a Ray started "
                "for this run, or on the cluster at --address. Needs pip install "
                "'gpuparley\\[ray]'."
            ),
        ] = False,
        address: Annotated[
            str | None,
            typer.Option(help="Ray cluster to run on (host:port, or auto); implies --ray."),
        ] = None,
    ) -> None:
        """Run every policy x seed on one scenario (or the generalisation experiment); write
        results and a paper-ready report."""
        given = {
            key: value
            for key, value in (
                ("held_out", held_out),
                ("training", training_seeds),
                ("incumbents", incumbents),
                ("bundled", bundled),
            )
            if value is not None
        }
        options = replace(GeneralisationOptions(), **given) if given else None
        try:
            check_output_folder(out, "--out")
            results = run_evaluation(
                scenario,
                policies,
                seeds,
                experiment,
                horizon,
                overrides,
                trace,
                targets,
                options,
                ray,
                address,
            )
        except ValueError as error:  # ScenarioError is a ValueError too
            fail(str(error))
        console.print(means_table(results))
        save(results, out)

    @app.command("report")
    def report_command(
        directory: Annotated[Path, typer.Argument(help="An `eval` output directory.")],
    ) -> None:
        """Rebuild report.md and the PNGs from DIR/results.json (no simulation); of a
        `gpuparley tune` sweep too."""
        try:
            results = load_results(directory)
            check_output_folder(directory, "DIRECTORY")  # the report is written beside the results
        except (FileNotFoundError, ValueError) as error:
            fail(str(error))
        if results.experiment == TUNE:
            console.print(f"wrote {write_tune_report(results, directory)}")
            return
        for path in write_report(results, directory):
            console.print(f"wrote {path}")

    @app.command("demo")
    def demo_command(
        out: Annotated[Path, typer.Option(help="Output directory.")] = Path("out/demo"),
    ) -> None:
        """A short tournament on `tiny` (incumbents, a market, the shipped learned policy)."""
        try:
            check_output_folder(out, "--out")
            results = run_evaluation("tiny", DEMO_POLICIES, "0-1")
        except ValueError as error:
            fail(str(error))
        console.print(means_table(results))
        save(results, out)
