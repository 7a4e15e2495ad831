"""``gpuparley cluster``: build, start, inspect and stop local real Kubernetes control planes.

Mounted by the top-level CLI as ``gpuparley cluster``; also runnable on its own with
``python -m gpuparley.deploy.cluster.cli``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from gpuparley.deploy.cluster import build, pki, planes, processes
from gpuparley.deploy.cluster.nodes import fake_nodes_from_scenario, scenario_agent_names
from gpuparley.deploy.cluster.profiles import DEFAULT_PROFILE, PROFILES
from gpuparley.envs.folders import FolderError, check_output_folder

app = typer.Typer(
    help="Real local Kubernetes control planes (etcd, kube-apiserver, kube-scheduler, KWOK).",
    no_args_is_help=True,
)
console = Console()
err = Console(stderr=True)

CacheDir = Annotated[
    Path | None,
    typer.Option(
        "--cache-dir",
        help=f"Binary/state cache (default ${build.CACHE_ENV} or ~/.cache/gpuparley).",
        show_default=False,
    ),
]
StateDir = Annotated[
    Path | None,
    typer.Option(
        "--state-dir", help="Run state (default <cache>/run/default).", show_default=False
    ),
]


def _check_folder(folder: Path, option: str) -> None:
    """Exit 2 in one line when `folder` cannot be made or written (before building or starting)."""
    try:
        check_output_folder(folder, option)
    except FolderError as exc:
        err.print(f"error: {exc}", soft_wrap=True, highlight=False, markup=False)
        raise typer.Exit(2) from None


def _state_dir(state_dir: Path | None, cache_dir: Path | None) -> Path:
    return state_dir.resolve() if state_dir else planes.default_state_dir(cache_dir)


@app.command("build")
def build_cmd(
    cache_dir: CacheDir = None,
    with_: Annotated[
        list[str] | None,
        typer.Option("--with", help="Also build an optional component (kubectl)."),
    ] = None,
    force: Annotated[bool, typer.Option(help="Rebuild even if the cache is fresh.")] = False,
) -> None:
    """Build etcd, kube-apiserver, kube-scheduler, kube-controller-manager and KWOK into the
    cache (idempotent)."""
    names = [*build.DEFAULT_COMPONENTS, *(with_ or [])]
    if cache_dir is not None:
        _check_folder(cache_dir, "--cache-dir")
    start = time.monotonic()
    try:
        results = build.build_all(names, cache=cache_dir, force=force)
    except build.BuildError as exc:
        err.print(f"[red]build failed:[/] {exc}")
        raise typer.Exit(1) from exc
    for r in results:
        console.print(f"{r.binary:<24} {r.version:<10} {r.path}")
    console.print(f"done in {time.monotonic() - start:.1f}s")


@app.command()
def up(
    scenario: Annotated[str, typer.Option(help="Scenario name or YAML path.")] = "default",
    agents: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Number of agent control planes (default: one per agent of the scenario, or 2).",
        ),
    ] = None,
    agent_names: Annotated[
        str | None, typer.Option(help="Comma-separated agent names (overrides --agents).")
    ] = None,
    state_dir: StateDir = None,
    cache_dir: CacheDir = None,
    profile: Annotated[
        str,
        typer.Option(
            help="Agent planes: slim (only the APIs an agent's pods need; see "
            "deploy/cluster/profiles.py) or full (a stock kube-apiserver)."
        ),
    ] = DEFAULT_PROFILE,
) -> None:
    """Start etcd, the host plane with the scenario's GPU nodes, and one apiserver per agent."""
    if profile not in PROFILES:
        err.print(f"error: --profile: {profile!r} is not one of {', '.join(PROFILES)}")
        raise typer.Exit(2)
    try:
        fake_nodes = fake_nodes_from_scenario(scenario)
        if agent_names:
            names = [n.strip() for n in agent_names.split(",") if n.strip()]
        elif agents is not None:
            names = [f"{i}" for i in range(agents)]
        else:
            names = scenario_agent_names(scenario) or ["0", "1"]
    except ValueError as exc:
        err.print(f"[red]bad scenario:[/] {exc}")
        raise typer.Exit(2) from exc
    target = _state_dir(state_dir, cache_dir)
    _check_folder(target, "--state-dir")
    start = time.monotonic()
    try:
        with console.status("starting") as spinner:
            state = planes.up(
                target,
                fake_nodes,
                names,
                cache=str(cache_dir) if cache_dir else None,
                scenario=scenario,
                progress=lambda m: spinner.update(m),
                profile=profile,  # type: ignore[arg-type]
            )
    except (build.MissingBinaryError, processes.ClusterError, pki.PKIError, ValueError) as exc:
        err.print(f"[red]cluster up failed:[/] {exc}")
        raise typer.Exit(1) from exc
    console.print(
        f"[green]up[/] in {time.monotonic() - start:.1f}s: {len(state.nodes)} GPU node(s), "
        f"{len(names)} {profile} agent plane(s); state in {target}"
    )
    for plane in state.planes.values():
        console.print(f"[bold]{plane.name}[/] {plane.server}")
        console.print(f"  admin kubeconfig: {plane.kubeconfig}", soft_wrap=True)
        for user, path in plane.agent_kubeconfigs.items():
            console.print(f"  {user} kubeconfig: {path}", soft_wrap=True)
    console.print(f"stop with: gpuparley cluster down --state-dir {target}")


@app.command()
def status(state_dir: StateDir = None, cache_dir: CacheDir = None) -> None:
    """Which component processes are alive, and /readyz of each apiserver."""
    target = _state_dir(state_dir, cache_dir)
    rows = planes.status(target)
    if not rows:
        console.print(f"no cluster running from {target}")
        raise typer.Exit(1)
    table = Table("component", "pid", "alive", "RSS MiB", "detail")
    for r in rows:
        table.add_row(
            r.name,
            str(r.pid),
            "[green]yes[/]" if r.alive else "[red]no[/]",
            f"{r.rss_mib:.0f}",
            r.detail,
        )
    console.print(table)
    if not all(r.alive for r in rows):
        raise typer.Exit(1)


@app.command()
def down(state_dir: StateDir = None, cache_dir: CacheDir = None) -> None:
    """Stop every process of the cluster and verify none is left."""
    target = _state_dir(state_dir, cache_dir)
    stopped, remaining = planes.down(target)
    if remaining:
        err.print(f"[red]still alive after SIGKILL:[/] {remaining}")
        raise typer.Exit(1)
    console.print(f"stopped {len(stopped)} process(es): {', '.join(stopped) or '-'}")


if __name__ == "__main__":
    app(sys.argv[1:])
