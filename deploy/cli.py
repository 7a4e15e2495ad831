"""``gpuparley deploy``: render or apply one agent's negotiator manifests (CRDs, RBAC, config,
Deployment) for the host cluster.

Mount with ``app.add_typer(deploy_app, name="deploy")``; also runnable on its own with
``python -m gpuparley.deploy.cli``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from pydantic import ValidationError

from gpuparley.deploy.objects import DNS_LABEL, DNS_LABEL_RULE
from gpuparley.deploy.render import AgentBundle, render_objects, to_yaml
from gpuparley.envs.market.messages import MARKET

app = typer.Typer(
    help="Negotiator manifests for the host cluster: CRDs, RBAC, ConfigMap, Deployment.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

Agent = Annotated[str, typer.Option("--agent", help="Agent name (e.g. alpha or agent-alpha).")]
Namespace = Annotated[
    str | None,
    typer.Option(help="Agent's home namespace (default agent-<agent>; inbox is <ns>-inbox)."),
]
Policy = Annotated[
    str, typer.Option(help="learned:<.onnx file, checkpoint dir or default> or scripted:<name>.")
]
Mechanism = Annotated[
    str, typer.Option(help="auction (what `gpuparley market run` serves) or bargain.")
]
Budget = Annotated[float, typer.Option("--budget", help="Budget per epoch (credits).")]
Peers = Annotated[
    list[str] | None,
    typer.Option("--peer", help="Agent allowed to post into this inbox by ServiceAccount."),
]
Image = Annotated[
    str | None, typer.Option(help="Image (default gpuparley-negotiator:<package version>).")
]
PolicyConfigMap = Annotated[
    str | None,
    typer.Option(
        "--policy-configmap",
        help="NAME[:KEY]: a ConfigMap holding the ONNX policy (key default policy.onnx); the "
        "Deployment mounts it and runs it (kubectl create configmap NAME --from-file=policy.onnx).",
    ),
]
# NegotiatorSpec field -> the option that sets it, and what a valid value looks like.
_OPTIONS = {
    "agent": ("--agent", "a DNS label such as alpha"),
    "budget_per_epoch": ("--budget", "a number between 0 and 1e12"),
    "mechanism": ("--mechanism", "auction or bargain"),
    "policy": ("--policy", "learned:<.onnx file, checkpoint dir or default> or scripted:<name>"),
    "peers": ("--peer", "agent names"),
}


def _fail(message: str) -> NoReturn:
    """One line on stderr, exit 2: what is wrong, with which option, and what would be right."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _bundle(
    agent: str,
    namespace: str | None,
    policy: str,
    mechanism: str,
    budget: float,
    peers: list[str] | None,
    image: str | None,
    policy_configmap: str | None = None,
) -> AgentBundle:
    configmap, _, key = (policy_configmap or "").partition(":")
    bundle = AgentBundle(
        agent=agent,
        namespace=namespace,
        policy=policy,
        mechanism=mechanism,
        budget_per_epoch=budget,
        peers=tuple(peers or ()),
        image=image,
        policy_configmap=configmap or None,
        policy_key=key or "policy.onnx",
    )
    if policy.startswith("learned:/") and not configmap:
        _fail(
            f"--policy: the image holds no {policy.removeprefix('learned:')}; mount it with "
            "--policy-configmap NAME[:KEY] (a ConfigMap holding the .onnx), or use the Helm "
            "chart's policy.source (configMap, volume or image)"
        )
    if configmap and not DNS_LABEL.fullmatch(configmap):
        _fail(f"--policy-configmap: {configmap!r} is not a ConfigMap name (a DNS label)")
    if bundle.name == MARKET:
        _fail(f"--agent: the name {MARKET!r} is reserved for the market; choose another name")
    if namespace is not None and not DNS_LABEL.fullmatch(namespace):
        _fail(f"--namespace: {namespace!r} is not a DNS label ({DNS_LABEL_RULE})")
    try:
        bundle.spec()
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else ""
        option, valid = _OPTIONS.get(field, (field or "configuration", "see --help"))
        _fail(f"{option}: {first['msg']} (got {first.get('input')!r}; use {valid})")
    return bundle


def _objects(bundle: AgentBundle) -> list[dict[str, object]]:
    try:
        return render_objects(bundle)
    except ValueError as exc:  # e.g. an agent name the RBAC cannot express
        _fail(f"--agent: {exc}")


@app.command()
def render(
    agent: Agent,
    namespace: Namespace = None,
    policy: Policy = "learned:default",
    mechanism: Mechanism = "auction",
    budget: Budget = 100.0,
    peer: Peers = None,
    image: Image = None,
    policy_configmap: PolicyConfigMap = None,
) -> None:
    """Print the agent's manifests as multi-document YAML (pipe to `kubectl apply -f -`)."""
    bundle = _bundle(agent, namespace, policy, mechanism, budget, peer, image, policy_configmap)
    sys.stdout.write(to_yaml(_objects(bundle)))


@app.command()
def apply(
    kubeconfig: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="Cluster admin.")],
    agent: Agent,
    namespace: Namespace = None,
    policy: Policy = "learned:default",
    mechanism: Mechanism = "auction",
    budget: Budget = 100.0,
    peer: Peers = None,
    image: Image = None,
    policy_configmap: PolicyConfigMap = None,
) -> None:
    """Server-side apply the agent's manifests (idempotent; CRDs first, waits for Established)."""
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config.config_exception import ConfigException
    from urllib3.exceptions import HTTPError

    from gpuparley.deploy.apply import ApplyError, apply_objects
    from gpuparley.deploy.kube import connect

    bundle = _bundle(agent, namespace, policy, mechanism, budget, peer, image, policy_configmap)
    try:
        with connect(kubeconfig) as api:
            results = apply_objects(api, _objects(bundle))
    except (ConfigException, OSError, HTTPError) as exc:
        reason = " ".join(str(getattr(exc, "reason", None) or exc).split())
        _fail(f"--kubeconfig: cannot reach the cluster with {kubeconfig}: {reason}")
    except ApiException as exc:
        _fail(f"--kubeconfig: the cluster refused {kubeconfig}'s user: {exc.status} {exc.reason}")
    except ApplyError as exc:
        _fail(f"apply failed: {' '.join(str(exc).split())}")
    for r in results:
        where = f"{r.namespace}/" if r.namespace else ""
        print(f"{r.kind}/{where}{r.name} {'configured' if r.changed else 'unchanged'}")


if __name__ == "__main__":
    app(sys.argv[1:])
