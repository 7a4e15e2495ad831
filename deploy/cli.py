"""``gpuparley deploy``: render or apply one agent's negotiator manifests (CRDs, RBAC, config,
Deployment) for the host cluster.

Mount with ``app.add_typer(deploy_app, name="deploy")``; also runnable on its own with
``python -m gpuparley.deploy.cli``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console

from gpuparley.deploy.render import AgentBundle, render_objects, to_yaml

app = typer.Typer(
    help="Negotiator manifests for the host cluster: CRDs, RBAC, ConfigMap, Deployment.",
    no_args_is_help=True,
)
err = Console(stderr=True)

Agent = Annotated[str, typer.Option("--agent", help="Agent name (e.g. alpha or agent-alpha).")]
Namespace = Annotated[
    str | None,
    typer.Option(help="Agent's home namespace (default agent-<agent>; inbox is <ns>-inbox)."),
]
Policy = Annotated[
    str, typer.Option(help="learned:<.onnx file or checkpoint dir> or scripted:<name>.")
]
Mechanism = Annotated[str, typer.Option(help="auction or bargain.")]
Budget = Annotated[float, typer.Option("--budget", help="Budget per epoch (credits).")]
Peers = Annotated[
    list[str] | None,
    typer.Option("--peer", help="Agent allowed to post into this inbox by ServiceAccount."),
]
Image = Annotated[
    str | None, typer.Option(help="Image (default gpuparley-negotiator:<package version>).")
]


def _bundle(
    agent: str,
    namespace: str | None,
    policy: str,
    mechanism: str,
    budget: float,
    peers: list[str] | None,
    image: str | None,
) -> AgentBundle:
    bundle = AgentBundle(
        agent=agent,
        namespace=namespace,
        policy=policy,
        mechanism=mechanism,
        budget_per_epoch=budget,
        peers=tuple(peers or ()),
        image=image,
    )
    try:
        bundle.spec()
    except ValidationError as exc:
        err.print("[red]bad negotiator configuration:[/]")
        err.print(str(exc), markup=False)
        raise typer.Exit(2) from exc
    return bundle


@app.command()
def render(
    agent: Agent,
    namespace: Namespace = None,
    policy: Policy = "scripted:truthful",
    mechanism: Mechanism = "bargain",
    budget: Budget = 100.0,
    peer: Peers = None,
    image: Image = None,
) -> None:
    """Print the agent's manifests as multi-document YAML (pipe to `kubectl apply -f -`)."""
    bundle = _bundle(agent, namespace, policy, mechanism, budget, peer, image)
    sys.stdout.write(to_yaml(render_objects(bundle)))


@app.command()
def apply(
    kubeconfig: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="Cluster admin.")],
    agent: Agent,
    namespace: Namespace = None,
    policy: Policy = "scripted:truthful",
    mechanism: Mechanism = "bargain",
    budget: Budget = 100.0,
    peer: Peers = None,
    image: Image = None,
) -> None:
    """Server-side apply the agent's manifests (idempotent; CRDs first, waits for Established)."""
    from gpuparley.deploy.apply import ApplyError, apply_objects
    from gpuparley.deploy.kube import connect

    bundle = _bundle(agent, namespace, policy, mechanism, budget, peer, image)
    try:
        with connect(kubeconfig) as api:
            results = apply_objects(api, render_objects(bundle))
    except ApplyError as exc:
        err.print(f"[red]apply failed:[/] {exc}")
        raise typer.Exit(1) from exc
    for r in results:
        where = f"{r.namespace}/" if r.namespace else ""
        print(f"{r.kind}/{where}{r.name} {'configured' if r.changed else 'unchanged'}")


if __name__ == "__main__":
    app(sys.argv[1:])
