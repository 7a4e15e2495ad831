"""The long-running processes and the workload submitter:

* ``gpuparley negotiator run``: one agent's negotiator (``deploy/negotiator.py``);
* ``gpuparley negotiator check``: load a policy and make one decision (the image's smoke test);
* ``gpuparley market run``: the market controller on the host (``deploy/market_controller.py``);
* ``gpuparley workload submit``: a scenario's jobs as pods in an agent's control plane.

Each process logs JSON lines on stderr and serves /metrics, /healthz and /readyz; SIGTERM stops
it cleanly (the negotiator gives up its leadership first).
"""

from __future__ import annotations

import errno
import json
import math
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

app_negotiator = typer.Typer(help="Run one agent's negotiator.", no_args_is_help=True)
app_market = typer.Typer(
    help="Run the market controller on the host cluster.", no_args_is_help=True
)
app_workload = typer.Typer(
    help="Submit a scenario's jobs as pods for the negotiator.", no_args_is_help=True
)

Kubeconfig = Annotated[Path | None, typer.Option(help="Kubeconfig (default: in-cluster).")]
Port = Annotated[
    int, typer.Option(min=0, max=65535, help="Port of /metrics, /healthz, /readyz (0: any).")
]
Seed = Annotated[int, typer.Option(min=0, help="Workload seed; same seed, same jobs.")]
Address = Annotated[str, typer.Option(help="Address the endpoints listen on.")]
KEEP_RELEASED = 64  # released GPULeases the market keeps per agent and kind of lease, by default


def _stop_flag() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def _fail(message: str, code: int = 2) -> NoReturn:
    """One line on stderr and exit `code` (2: bad input, 1: the process could not go on)."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _check_seconds(**options: float) -> None:
    """Exit 2 naming the first option that is not a positive, finite number of seconds (a wait
    of zero would time every answer out at once, or spin the reconcile loop)."""
    for name, seconds in options.items():
        if not 0 < seconds < math.inf:
            _fail(f"--{name.replace('_', '-')}: {seconds} is not a positive number of seconds")


def _check_names(**options: str | None) -> None:
    """Exit 2 naming the first option that is not a Kubernetes name (a DNS label), before the
    process serves or connects: a bad name would only show later as a 404 or a 422."""
    from gpuparley.deploy.objects import DNS_LABEL, DNS_LABEL_RULE

    for name, value in options.items():
        if value is not None and not DNS_LABEL.fullmatch(value):
            _fail(f"--{name.replace('_', '-')}: {value!r} is not a DNS label ({DNS_LABEL_RULE})")


def _serve(telemetry: Any, port: int, address: str) -> None:
    """Start the endpoints and print the port they got; one line, not a traceback, when the
    port is taken or the address is not this host's (two processes on one port, say)."""
    try:
        server = telemetry.serve(port, address)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
            _fail(
                f"--metrics-address: cannot listen on {address!r} ({reason});"
                " use an address of this host, e.g. 127.0.0.1"
            )
        _fail(
            f"--metrics-port: cannot listen on {address}:{port} ({reason});"
            " choose another port, or 0 for any free one"
        )
    typer.echo(json.dumps({"metrics_port": server.server_address[1]}), err=True)


def _gave_up(exc: Exception) -> NoReturn:
    """The apiserver stayed unreachable past the start-up retries: one line, exit 1."""
    _fail(f"gave up, the apiserver is unreachable: {exc}; check the kubeconfig's server", 1)


def _negotiator(spec: str) -> Any:
    """The negotiator a policy spec names (`policy.specs`), learned ones run by onnxruntime
    (the image installs no other ONNX reader)."""
    from gpuparley.policy.specs import parse_negotiator

    return parse_negotiator(spec).negotiator(backend="onnxruntime")


def _connect(kubeconfig: Path | None, option: str) -> Any:
    """A `Kube` client, or a clear error naming the option (not a traceback)."""
    from kubernetes.config.config_exception import ConfigException

    from gpuparley.deploy.kube import Kube

    try:
        return Kube(kubeconfig)
    except (ConfigException, OSError) as exc:
        where = kubeconfig or "the in-cluster service account"
        _fail(f"{option}: cannot load {where}: {exc}")


@app_negotiator.command("run")
def negotiator_run(
    agent: Annotated[str, typer.Option(help="Agent name (e.g. alpha).")],
    policy: Annotated[
        str, typer.Option(help="learned:<.onnx file or checkpoint dir> or scripted:<name>.")
    ],
    host_kubeconfig: Kubeconfig = None,
    agent_kubeconfig: Annotated[
        Path | None, typer.Option(help="Kubeconfig of the agent's own control plane.")
    ] = None,
    workload_namespace: Annotated[
        str, typer.Option(help="Namespace of the agent's job pods.")
    ] = "default",
    namespace: Annotated[str | None, typer.Option(help="Home namespace on the host.")] = None,
    leader_elect: Annotated[bool, typer.Option(help="Elect a leader among replicas.")] = False,
    identity: Annotated[str, typer.Option(help="Replica identity (default host-pid).")] = "",
    metrics_port: Port = 9464,
    metrics_address: Address = "127.0.0.1",
    resync_seconds: Annotated[
        float, typer.Option(help="Reconcile from the watch caches at least this often.")
    ] = 5.0,
    log_level: str = "info",
) -> None:
    """Negotiate for the agent's job pods and run them on the host under their leases."""
    from gpuparley.deploy.kube import Unavailable
    from gpuparley.deploy.negotiator import NegotiatorProcess
    from gpuparley.deploy.negotiator_config import NegotiatorConfig
    from gpuparley.deploy.objects import agent_name
    from gpuparley.deploy.telemetry import Telemetry, setup_logging

    setup_logging(log_level)
    _check_names(
        agent=agent_name(agent), namespace=namespace, workload_namespace=workload_namespace
    )
    _check_seconds(resync_seconds=resync_seconds)
    try:
        chosen = _negotiator(policy)
    except ValueError as exc:
        _fail(f"--policy: {exc}")
    config = NegotiatorConfig(
        agent=agent,
        policy=policy,
        workload_namespace=workload_namespace,
        home=namespace,
        resync_interval=resync_seconds,
        identity=identity,
        leader_elect=leader_elect,
    )
    telemetry = Telemetry("negotiator")
    _serve(telemetry, metrics_port, metrics_address)
    stop = _stop_flag()
    host = _connect(host_kubeconfig, "--host-kubeconfig")
    plane = _connect(agent_kubeconfig, "--agent-kubeconfig")
    process = NegotiatorProcess(config, host, plane, chosen, telemetry)
    try:
        process.run(stop.is_set)
    except Unavailable as exc:
        _gave_up(exc)


@app_negotiator.command("check")
def negotiator_check(
    policy: Annotated[
        str | None,
        typer.Option(help="A negotiator spec (default: the shipped policy, learned:default)."),
    ] = None,
) -> None:
    """Load a policy and decide once on a sample view (one pending one-GPU job, credits to bid):
    proof that this environment can run the negotiator (prints the decision as JSON)."""
    from gpuparley.envs.market.encoding import AgentView, JobSlot, decode, encode
    from gpuparley.policy.specs import parse_negotiator

    spec = policy or "learned:default"
    try:
        parsed = parse_negotiator(spec)
        chosen = parsed.negotiator(backend="onnxruntime")
    except ValueError as exc:
        _fail(f"--policy: {exc}")
    job = JobSlot("job-0", 1.0, "whole", 1, 2.0, 1.0, 0.1, 24.0, False, True, True)
    view = AgentView(
        balance=100.0, budget_per_epoch=10.0, committed=0.0, reference_price=2.0, last_price=0.0,
        quota_gpus=4.0, effective_quota_gpus=4.0, used_gpus=0.0, cluster_gpus=8.0,
        free_whole_fraction=0.5, free_mig_fraction=0.0, free_share_fraction=0.0,
        pending_jobs=1, running_jobs=0, leases_held=0, leases_lent=0, epoch_fraction=0.0,
        mechanism="auction", slots=(job,),
    )  # fmt: skip
    observation, mask = encode(view)
    action = chosen.act(observation, mask, view)
    if not mask[action]:
        _fail(f"policy {spec} chose action {action}, which the mask forbids")
    decision = decode(action, view, mask)
    source = str(parsed.source) if parsed.source else None
    answer = {"policy": spec, "source": source, "action": action, "decision": decision.kind}
    typer.echo(json.dumps(answer))


@app_market.command("run")
def market_run(
    scenario: Annotated[str, typer.Option(help="Scenario name or path (the cluster and jobs).")],
    seed: Seed = 0,
    kubeconfig: Kubeconfig = None,
    mechanism: Annotated[
        str | None, typer.Option(help="auction or bargain (default: the scenario's).")
    ] = None,
    substep_timeout: Annotated[float, typer.Option(help="Seconds to wait for answers.")] = 10.0,
    placement_timeout: Annotated[
        float, typer.Option(help="Seconds to wait for leased pods to be bound.")
    ] = 30.0,
    max_epochs: Annotated[
        int | None, typer.Option(min=1, help="Stop after this many epochs.")
    ] = None,
    keep_released: Annotated[
        int,
        typer.Option(
            min=0,
            help="Released GPULeases kept per agent, at most 128 (older ones are deleted once its"
            " negotiator has applied them).",
        ),
    ] = KEEP_RELEASED,
    trace: Annotated[Path | None, typer.Option(help="Append lease events (JSON lines).")] = None,
    metrics_port: Port = 9465,
    metrics_address: Address = "127.0.0.1",
    leader_elect: Annotated[
        bool, typer.Option(help="Elect a leader among replicas (Lease gpuparley-market).")
    ] = False,
    identity: Annotated[str, typer.Option(help="Replica identity (default host-pid).")] = "",
    log_level: str = "info",
) -> None:
    """Run the market until the scenario's workload is done; print the final status as JSON."""
    from gpuparley.deploy.kube import Unavailable
    from gpuparley.deploy.market_controller import MarketController, MarketSetupError
    from gpuparley.deploy.telemetry import Telemetry, setup_logging
    from gpuparley.envs.folders import FolderError, check_output_folder
    from gpuparley.envs.market.mechanisms import MECHANISMS
    from gpuparley.envs.scenario import ScenarioError, load_scenario

    setup_logging(log_level)
    try:
        loaded = load_scenario(scenario)
    except ScenarioError as exc:
        _fail(f"--scenario: {exc}")
    if mechanism is not None and mechanism not in MECHANISMS:
        _fail(f"--mechanism: unknown mechanism {mechanism!r}; use {' or '.join(MECHANISMS)}")
    _check_seconds(substep_timeout=substep_timeout, placement_timeout=placement_timeout)
    if trace is not None:
        try:
            check_output_folder(trace.parent, "--trace")
        except FolderError as exc:
            _fail(str(exc))
    telemetry = Telemetry("market")
    _serve(telemetry, metrics_port, metrics_address)
    stop = _stop_flag()
    try:
        controller = MarketController(
            _connect(kubeconfig, "--kubeconfig"),
            loaded,
            seed,
            mechanism,
            substep_timeout=substep_timeout,
            placement_timeout=placement_timeout,
            max_epochs=max_epochs,
            telemetry=telemetry,
            trace_path=trace,
            keep_released=keep_released,
        )
        elector = None
        if leader_elect:
            import os
            import socket

            from gpuparley.deploy.leader import LeaderElector
            from gpuparley.deploy.market_fence import ELECTION_LEASE, act_as_replica
            from gpuparley.deploy.objects import MARKET_NAMESPACE

            who = identity or f"{socket.gethostname()}-{os.getpid()}"
            act_as_replica(controller.kube, who)
            elector = LeaderElector(controller.kube, MARKET_NAMESPACE, ELECTION_LEASE, who)
        status = controller.run(stop.is_set, elector)
    except MarketSetupError as exc:
        _fail(str(exc))
    except ScenarioError as exc:  # its workload, built with the market
        _fail(f"--scenario: {exc}")
    except Unavailable as exc:
        _gave_up(exc)
    json.dump(status, sys.stdout)
    sys.stdout.write("\n")


@app_workload.command("submit")
def workload_submit(
    scenario: Annotated[str, typer.Option(help="Scenario name or path.")],
    agent: Annotated[str, typer.Option(help="Whose jobs to submit.")],
    kubeconfig: Annotated[Path, typer.Option(help="The agent's control plane.")],
    seed: Seed = 0,
    namespace: Annotated[str, typer.Option(help="Namespace for the pods.")] = "default",
) -> None:
    """Create the agent's jobs of a scenario as pods its negotiator binds (idempotent)."""
    from gpuparley.deploy.kube import ApiError
    from gpuparley.deploy.objects import agent_name
    from gpuparley.deploy.workload import WorkloadError, submit_jobs
    from gpuparley.envs.scenario import ScenarioError, load_scenario

    _check_names(namespace=namespace)
    try:
        loaded = load_scenario(scenario)
    except ScenarioError as exc:
        _fail(f"--scenario: {exc}")
    agents = [spec.name for spec in loaded.agents]
    owner = agent if agent in agents else agent_name(agent)  # `alpha` or `agent-alpha`
    if owner not in agents:
        _fail(f"--agent: {loaded.name} has no agent {agent!r}; its agents: {', '.join(agents)}")
    try:
        jobs = loaded.build_jobs(seed)
    except ScenarioError as exc:  # e.g. a trace replay its slice leaves empty
        _fail(f"--scenario: {exc}")
    try:
        created = submit_jobs(_connect(kubeconfig, "--kubeconfig"), namespace, jobs, owner)
    except WorkloadError as exc:
        _fail(str(exc))
    except ApiError as exc:  # unreachable, or a namespace the plane does not have
        _fail(f"--kubeconfig: could not create the pods in the agent's control plane: {exc}", 1)
    typer.echo(json.dumps({"agent": agent, "pods_created": created}))


def main() -> None:
    """`python -m gpuparley.deploy.process_cli ...`: the processes without the rest of the CLI
    (the negotiator image has no training or plotting stack)."""
    root = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False)
    root.add_typer(app_negotiator, name="negotiator")
    root.add_typer(app_market, name="market")
    root.add_typer(app_workload, name="workload")
    root()


if __name__ == "__main__":
    main()
