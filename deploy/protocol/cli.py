"""``gpuparley protocol``: fetch spin, and check the market protocol's model with it.

`check` verifies every scenario of `scenarios.py` for every property (the safety search, then
each LTL property), then checks that every broken variant is rejected with the property it
names; it prints one row per run (states stored, search depth, the verifier's seconds) and, with
`--out`, writes them as JSON. Exit 1 if the model fails a property or a broken variant passes.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from gpuparley.deploy.protocol.check import CheckError, Outcome, Verification, verify
from gpuparley.deploy.protocol.scenarios import (
    DEEP,
    PROPERTIES,
    SCENARIOS,
    VARIANTS,
    Scenario,
    scenario,
)
from gpuparley.deploy.protocol.spin import SpinError, find_spin, install_spin, spin_version
from gpuparley.envs.folders import FolderError, check_output_file, check_output_folder

app = typer.Typer(
    help="The in-cluster market protocol, checked with the spin model checker.",
    no_args_is_help=True,
)
console = Console()


def _fail(message: str, code: int = 2) -> NoReturn:
    """One line on stderr: exit 2 for bad input, 1 when spin is missing or fails."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@app.command("spin")
def spin_cmd(
    cache_dir: Annotated[
        Path | None, typer.Option("--cache-dir", help="Binary cache (default ~/.cache/gpuparley).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Fetch again even if spin is cached.")] = False,
) -> None:
    """Fetch spin (Debian's package) into the cache, once; print where it is."""
    try:
        if cache_dir is not None:
            check_output_folder(cache_dir, "--cache-dir")
        path = install_spin(cache_dir, force=force)
    except FolderError as exc:
        _fail(str(exc))
    except SpinError as exc:
        _fail(str(exc), 1)
    console.print(f"{spin_version(path)}: {path}")


def _run(check: Verification, spin: Path, every: bool = False) -> tuple[Outcome, float]:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="gpuparley-spin-") as workdir:
        outcome = verify(check, Path(workdir), spin, every_violation=every)
    return outcome, time.monotonic() - started


def _row(kind: str, name: str, prop: str, outcome: Outcome, wall: float) -> dict[str, Any]:
    return {
        "kind": kind,
        "name": name,
        "property": prop,
        "violated": outcome.violated,
        "violations": sorted(outcome.violations),
        "states": outcome.states,
        "transitions": outcome.transitions,
        "depth": outcome.depth,
        "search_seconds": outcome.seconds,
        "memory_mb": outcome.memory_mb,
        "wall_seconds": round(wall, 2),
        "trail": list(outcome.trail),
    }


def _add(table: Table, name: str, prop: str, result: str, outcome: Outcome) -> None:
    figures = (f"{outcome.states:,}", str(outcome.depth), f"{outcome.seconds:.2f}")
    table.add_row(name, prop, result, *figures)


def _check_scenarios(
    cases: list[Scenario], spin: Path, table: Table, rows: list[dict[str, Any]], trail: bool
) -> bool:
    """Every property of every scenario; True if all hold."""
    holds = True
    for case in cases:
        for prop in PROPERTIES:
            outcome, wall = _run(Verification(case.defines, prop, optimize=case is DEEP), spin)
            rows.append(_row("scenario", case.name, prop, outcome, wall))
            holds &= outcome.holds
            result = "[green]holds[/]" if outcome.holds else f"[red]{outcome.violated}[/]"
            _add(table, case.name, prop, result, outcome)
            if trail and not outcome.holds:
                console.print("\n".join(outcome.trail))
    return holds


def _check_variants(
    spin: Path, table: Table, rows: list[dict[str, Any]], trail: bool, every: bool
) -> bool:
    """Every broken variant under its scenario; True if each is rejected as expected."""
    rejected_all = True
    for variant in VARIANTS:
        check = Verification(scenario(variant.scenario).defines, variant.prop, variant.flag)
        outcome, wall = _run(check, spin, every)
        rows.append(_row("variant", variant.name, variant.prop, outcome, wall))
        rejected = outcome.violated == variant.violates
        rejected_all &= rejected
        found = ", ".join(sorted(outcome.violations)) or "nothing"
        result = f"[green]rejected: {found}[/]" if rejected else f"[red]found {found}[/]"
        _add(table, f"{variant.name} ({variant.scenario})", variant.prop, result, outcome)
        if trail and outcome.trail:
            console.print(f"[bold]{variant.name}[/]: " + " / ".join(outcome.trail))
    return rejected_all


@app.command()
def check(
    scenarios: Annotated[
        list[str] | None,
        typer.Option("--scenario", help="Only these scenarios (repeatable; default: all)."),
    ] = None,
    variants: Annotated[
        bool, typer.Option(help="Also check that every broken variant is rejected.")
    ] = True,
    deep: Annotated[
        bool,
        typer.Option(help="Also the deep scenario: every fault at once (15 GB, 40 min)."),
    ] = False,
    every_violation: Annotated[
        bool, typer.Option(help="For a broken variant, list every property it violates.")
    ] = False,
    trail: Annotated[bool, typer.Option(help="Print each counterexample, step by step.")] = False,
    out: Annotated[Path | None, typer.Option(help="Write every run's figures as JSON.")] = None,
) -> None:
    """Verify the model (safety, no deadlock, liveness) under each fault scenario."""
    try:
        chosen: list[Scenario] = [scenario(n) for n in scenarios] if scenarios else list(SCENARIOS)
    except ValueError as exc:
        _fail(f"--scenario: {exc}")
    if deep and DEEP not in chosen:
        chosen.append(DEEP)
    if out is not None:  # checked before the search, not after it (the deep one takes 40 min)
        try:
            check_output_file(out, "--out")
        except FolderError as exc:
            _fail(str(exc))
    try:
        spin = find_spin()
    except SpinError as exc:
        _fail(str(exc), 1)
    rows: list[dict[str, Any]] = []
    table = Table("scenario / variant", "property", "result", "states", "depth", "search s")
    try:
        ok = _check_scenarios(chosen, spin, table, rows, trail)
        if variants:
            ok &= _check_variants(spin, table, rows, trail, every_violation)
    except (CheckError, SpinError) as exc:
        _fail(str(exc), 1)
    console.print(table)
    if out is not None:
        machine = {"cpus": os.cpu_count(), "load_1min": os.getloadavg()[0]}
        record = {"spin": spin_version(spin), "machine": machine, "runs": rows}
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(record, indent=2) + "\n")
    if not ok:
        raise typer.Exit(1)
