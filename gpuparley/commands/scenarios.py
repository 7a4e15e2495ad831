"""`gpuparley scenarios`, `gpuparley scenario show` and `gpuparley scenario sample`: what scenarios
exist, what one holds, and a random one from the scenario generator.

Errors in scenario files are user errors, so they print the loader's message (file, field,
allowed values) and exit with status 2 instead of showing a traceback.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from gpuparley.envs.folders import FolderError, check_output_file
from gpuparley.envs.generator_schema import RangesError, load_ranges
from gpuparley.envs.resources import scenarios_dir
from gpuparley.envs.scenario import (
    Scenario,
    ScenarioError,
    list_scenarios,
    load_scenario,
    parse_overrides,
)
from gpuparley.envs.scenario_generator import scenario_text
from gpuparley.envs.workloads import TraceFormatError
from gpuparley.envs.yaml_text import dump_yaml

USAGE_ERROR = 2
scenario_app = typer.Typer(help="Inspect one scenario.", no_args_is_help=True)


def _fail(error: Exception) -> typer.Exit:
    Console(stderr=True, soft_wrap=True).print(
        f"[red]error:[/red] {error}", markup=True, highlight=False
    )
    return typer.Exit(USAGE_ERROR)


def list_command() -> None:
    """List the bundled scenarios: cluster size, agents and workload kind."""
    found = list_scenarios()
    if not found:  # an empty table would look like success
        raise _fail(
            ScenarioError(
                f"no scenario files in {scenarios_dir()}; GPUPARLEY_CONFIGS must name a folder"
                " holding scenarios/ (unset it for the bundled ones)"
            )
        )
    table = Table(title="scenarios")
    for column in ("name", "description", "nodes", "GPUs", "agents", "workload"):
        table.add_column(column, overflow="fold")
    for name, description in found:
        try:
            scenario = load_scenario(name)
            cluster = scenario.build_cluster()
            row = [
                str(len(cluster.nodes)),
                str(cluster.gpu_count),
                str(len(scenario.agents)),
                scenario.config.workload.kind,
            ]
        except (ScenarioError, TraceFormatError) as error:
            row = ["-", "-", "-", f"[red]invalid[/red]: {str(error).splitlines()[0]}"]
        table.add_row(name, description, *row)
    Console().print(table)


def _summary(scenario: Scenario, seed: int) -> list[Table]:
    cluster = scenario.build_cluster()
    gpus = Counter((n.gpu_model, n.mode.value) for n in cluster.nodes for _ in range(n.gpu_count))
    cluster_table = Table(title=f"cluster: {len(cluster.nodes)} nodes, {cluster.gpu_count} GPUs")
    for column in ("GPU model", "mode", "GPUs"):
        cluster_table.add_column(column)
    for (model, mode), count in sorted(gpus.items()):
        cluster_table.add_row(model, mode, str(count))

    jobs = scenario.build_jobs(seed)
    by_class: Counter[tuple[str, str]] = Counter()
    gpu_hours: Counter[tuple[str, str]] = Counter()
    for job in jobs:
        key = (job.tags.get("class", "-"), job.pod.gpu.kind)
        by_class[key] += 1
        gpu_hours[key] += job.work / 3600
    total = sum(gpu_hours.values())
    workload_table = Table(
        title=f"workload (seed {seed}): {len(jobs)} jobs, {total:,.1f} GPU-hours"
    )
    for column in ("class", "request kind", "jobs", "GPU-hours"):
        workload_table.add_column(column)
    for key, count in sorted(by_class.items()):
        workload_table.add_row(*key, str(count), f"{gpu_hours[key]:,.1f}")
    return [cluster_table, workload_table]


@scenario_app.command("show")
def show_command(
    name: Annotated[str, typer.Argument(help="Scenario name or path to a YAML file.")],
    seed: Annotated[
        int | None, typer.Option(min=0, help="Workload seed (default: the scenario's).")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a field, e.g. --set workload.generator.jobs=20."),
    ] = None,
) -> None:
    """Print the resolved scenario as YAML, then a summary of its cluster and workload."""
    try:
        scenario = load_scenario(name, parse_overrides(set_ or []))
        text = dump_yaml(scenario.to_dict())
        tables = _summary(scenario, scenario.seed if seed is None else seed)
    except (ScenarioError, TraceFormatError) as error:
        raise _fail(error) from None
    typer.echo(text, nl=False)
    console = Console()
    for table in tables:
        console.print(table)


@scenario_app.command("sample")
def sample_command(
    seed: Annotated[int, typer.Option(min=0, help="Generator seed: the same seed, the same file.")],
    ranges: Annotated[
        str,
        typer.Option(help="Generator ranges: a bundled name (configs/generator/) or a YAML file."),
    ] = "default",
    out: Annotated[
        Path | None, typer.Option(help="Write the scenario here (default: print it).")
    ] = None,
) -> None:
    """Draw one random scenario from the generator's ranges and write it as a scenario file."""
    try:
        text = scenario_text(seed, load_ranges(ranges), ranges)
    except (RangesError, ScenarioError) as error:
        raise _fail(error) from None
    if out is None:
        typer.echo(text, nl=False)
        return
    try:
        check_output_file(out, "--out")
    except FolderError as error:
        raise _fail(error) from None
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    scenario = load_scenario(out)  # what a user gets back: the ordinary loader and checks
    typer.echo(f"wrote {out}: {scenario.description}")


def register(app: typer.Typer) -> None:
    """Add `scenarios` and the `scenario` group to the CLI."""
    app.command("scenarios")(list_command)
    app.add_typer(scenario_app, name="scenario")
