"""`gpuparley eval`, `gpuparley report` and `gpuparley demo`: tournaments and paper reports.

Every user mistake (unknown policy, scenario, seeds, experiment, missing checkpoint or results)
prints one clear message and exits with status 2; nothing runs until all inputs parse.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.table import Table

from gpuparley.agents.registry import INCUMBENTS
from gpuparley.console import console, fail, progress_bar
from gpuparley.envs.scenario import load_scenario
from gpuparley.evaluation.inflation import EXPERIMENT as INFLATION
from gpuparley.evaluation.inflation import check_schedulers, run_inflation_experiment
from gpuparley.evaluation.policies import Policy, parse_policies, policy_choices
from gpuparley.evaluation.report import MISSING, rows_for, summary, write_report
from gpuparley.evaluation.results import Results, load_results, write_results
from gpuparley.evaluation.tournament import parse_seeds, run_tournament

EXPERIMENTS = ("tournament", INFLATION)
DEFAULT_POLICIES = ",".join((*INCUMBENTS, "market:truthful"))
DEMO_POLICIES = (
    "first-fit,kube-default,volcano,kai,kueue,fgd,themis,market:truthful,"
    "learned:checkpoints/default"
)


def parse_overrides(pairs: list[str]) -> dict[str, object]:
    """`--set a.b=value` pairs as scenario overrides (values parsed as YAML: 3, true, [1, 2])."""
    overrides: dict[str, object] = {}
    for pair in pairs:
        key, equals, value = pair.partition("=")
        if not equals or not key.strip():
            raise ValueError(f"bad --set {pair!r}: use KEY=VALUE, e.g. workload.trace.limit=500")
        overrides[key.strip()] = yaml.safe_load(value)
    return overrides


def run_evaluation(
    scenario: str,
    policies: str,
    seeds: str,
    experiment: str = "tournament",
    max_epochs: int | None = None,
    overrides: list[str] | None = None,
) -> Results:
    """Parse every input (ValueError says what is wrong), then run with a progress bar."""
    if experiment not in EXPERIMENTS:
        raise ValueError(
            f"unknown experiment {experiment!r}; choose one of: {', '.join(EXPERIMENTS)}"
        )
    parsed: list[Policy] = parse_policies(policies)
    seed_list = parse_seeds(seeds)
    if experiment == INFLATION:
        check_schedulers(parsed)
    resolved = load_scenario(scenario, parse_overrides(overrides or []))
    total = len(parsed) * len(seed_list)
    with progress_bar() as bar:
        task = bar.add_task(f"{resolved.name}: starting", total=total)

        def on_progress(done: float, label: str) -> None:
            bar.update(task, completed=done, description=f"{resolved.name}: {label}")

        if experiment == INFLATION:
            return run_inflation_experiment(resolved, parsed, seed_list, on_progress)
        return run_tournament(resolved, parsed, seed_list, max_epochs, on_progress)


def save(results: Results, out: Path) -> None:
    """Write results and report into `out` and list the files."""
    for path in [*write_results(results, out), *write_report(results, out)]:
        console.print(f"wrote {path}")


def means_table(results: Results) -> Table:
    """The headline metrics, mean over seeds per policy (the report has the CIs)."""
    rows = rows_for(results)
    scenario = results.config["scenario"]
    table = Table(title=f"{scenario}: mean over seeds {results.config['seeds']}", expand=True)
    table.add_column("metric", ratio=3, overflow="fold")
    for policy in results.policies:  # numbers never wrap; long policy names fold instead
        table.add_column(policy, justify="right", min_width=6, ratio=1, overflow="fold")
    stats = summary(results, rows, scenario)
    for row in rows:
        means = [stats[row.key][policy][0] for policy in results.policies]
        table.add_row(row.label, *(MISSING if m is None else row.fmt.format(m) for m in means))
    return table


def register(app: typer.Typer) -> None:
    @app.command("eval")
    def eval_command(
        scenario: Annotated[
            str, typer.Option(help="Scenario name (see `gpuparley scenarios`) or YAML path.")
        ],
        policies: Annotated[
            str,
            typer.Option(
                help="Comma-separated policy specs: "
                + ", ".join(policy_choices())
                + " (a market may add @auction or @bargain)."
            ),
        ] = DEFAULT_POLICIES,
        seeds: Annotated[str, typer.Option(help="Seeds: a range 0-4 or a list 0,2,7.")] = "0-4",
        out: Annotated[
            Path, typer.Option(help="Directory for results.json/csv, report.md and PNGs.")
        ] = Path("out/eval"),
        experiment: Annotated[
            str, typer.Option(help=f"What to run: {', '.join(EXPERIMENTS)}.")
        ] = "tournament",
        max_epochs: Annotated[
            int | None, typer.Option(min=1, help="Cap market episodes at this many epochs.")
        ] = None,
        overrides: Annotated[
            list[str] | None,
            typer.Option("--set", help="Scenario override KEY=VALUE (repeatable)."),
        ] = None,
    ) -> None:
        """Run every policy x seed on one scenario; write results and a paper-ready report."""
        try:
            results = run_evaluation(scenario, policies, seeds, experiment, max_epochs, overrides)
        except ValueError as error:  # ScenarioError is a ValueError too
            fail(str(error))
        console.print(means_table(results))
        save(results, out)

    @app.command("report")
    def report_command(
        directory: Annotated[Path, typer.Argument(help="An `eval` output directory.")],
    ) -> None:
        """Rebuild report.md and the PNGs from DIR/results.json (no simulation)."""
        try:
            results = load_results(directory)
        except (FileNotFoundError, ValueError) as error:
            fail(str(error))
        for path in write_report(results, directory):
            console.print(f"wrote {path}")

    @app.command("demo")
    def demo_command(
        out: Annotated[Path, typer.Option(help="Output directory.")] = Path("out/demo"),
    ) -> None:
        """A short tournament on `tiny` (incumbents, a market, the shipped learned policy)."""
        try:
            results = run_evaluation("tiny", DEMO_POLICIES, "0-1")
        except ValueError as error:
            fail(str(error))
        console.print(means_table(results))
        save(results, out)
