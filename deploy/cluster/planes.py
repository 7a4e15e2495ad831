"""Start, inspect and stop real Kubernetes control planes as plain processes.

Topology (one ``gpuparley cluster up``)::

    etcd (one process, data on tmpfs, --unsafe-no-fsync)
     ├─ /host          kube-apiserver + kube-scheduler + KWOK   -- the shared GPU cluster
     ├─ /agent-<a>     kube-apiserver                           -- agent a's own control plane
     └─ /agent-<b>     kube-apiserver                           -- ...

Why this shape: each negotiating agent must really own a control plane (its own storage prefix,
CA, admin credentials), while GPUs live in one host cluster whose real kube-scheduler binds pods
against extended resources on KWOK-simulated nodes. One etcd with one prefix per apiserver is what
envtest/kwokctl-style setups do and keeps memory low.

Everything a later ``status``/``down`` needs is written to ``<state_dir>/state.json`` as soon as
each process starts (PID, process-group id, /proc start time), so ``down`` can kill exactly the
processes it started -- by process group, after checking the PID was not reused -- even after a
crash halfway through ``up``.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gpuparley.deploy.cluster import build, pki
from gpuparley.deploy.cluster.nodes import FAKE_NODE_ANNOTATION, FakeNode, create_nodes
from gpuparley.deploy.rbac import MARKET_USER

HOST = "host"
AGENT_GROUP = "gpuparley:agents"
STAGE_FILES = (
    "node-initialize.yaml",
    "node-heartbeat.yaml",
    "pod-ready.yaml",
    "pod-complete.yaml",
    "pod-delete.yaml",
)
SERVICE_CIDR = "10.0.0.0/24"
POD_CIDR = "10.128.0.0/16"
SCHEDULER_QPS = 200
AGENT_NAME_RE = re.compile(r"[a-z0-9]([-a-z0-9]{0,48}[a-z0-9])?")
Progress = Callable[[str], None]


class ClusterError(RuntimeError):
    """A component failed to start or become ready (the message includes its log tail)."""


# ----------------------------------------------------------------------------------- state


@dataclass
class Proc:
    """One supervised process."""

    name: str
    pid: int
    start_time: int  # /proc/<pid>/stat field 22: tells a live process from a reused PID
    log: str
    cmd: list[str]
    plane: str = ""
    health_url: str = ""  # HTTPS health endpoint with a self-signed certificate, if any


@dataclass
class Plane:
    """One kube-apiserver (and, for the host, its scheduler and KWOK)."""

    name: str
    kind: str  # "host" | "agent"
    port: int
    etcd_prefix: str
    kubeconfig: str  # admin (client certificate, group system:masters)
    token_kubeconfig: str  # admin again, by bearer token (for tools that dislike client certs)
    pki_dir: str
    # host only: user -> kubeconfig/token, for every agent and for the market (`gpuparley:market`)
    agent_kubeconfigs: dict[str, str] = field(default_factory=dict)
    agent_tokens: dict[str, str] = field(default_factory=dict)  # host only: agent -> token

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca_cert(self) -> str:
        return str(Path(self.pki_dir) / "ca.crt")


@dataclass
class ClusterState:
    """Everything ``status`` and ``down`` need, persisted as ``state.json``."""

    state_dir: str
    etcd_url: str = ""
    etcd_data_dir: str = ""
    scenario: str = ""
    agents: list[str] = field(default_factory=list)
    nodes: list[str] = field(default_factory=list)
    planes: dict[str, Plane] = field(default_factory=dict)
    processes: list[Proc] = field(default_factory=list)
    started_at: float = 0.0

    @property
    def path(self) -> Path:
        return Path(self.state_dir) / "state.json"

    def save(self) -> None:
        data = asdict(self)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        os.replace(tmp, self.path)

    @classmethod
    def load(cls, state_dir: str | os.PathLike[str]) -> ClusterState | None:
        path = Path(state_dir) / "state.json"
        if not path.is_file():
            return None
        data = json.loads(path.read_text())
        data["planes"] = {k: Plane(**v) for k, v in data.get("planes", {}).items()}
        data["processes"] = [Proc(**p) for p in data.get("processes", [])]
        return cls(**data)

    @property
    def host(self) -> Plane:
        return self.planes[HOST]

    def agent(self, name: str) -> Plane:
        return self.planes[agent_plane_name(name)]


def agent_plane_name(agent: str) -> str:
    """Plane, namespace and user name for an agent (one naming rule everywhere)."""
    return agent if agent.startswith("agent-") else f"agent-{agent}"


def default_state_dir(cache: str | os.PathLike[str] | None = None) -> Path:
    """Default ``--state-dir``: ``<cache>/run/default``."""
    return build.cache_dir(cache) / "run" / "default"


# ------------------------------------------------------------------------------- processes


def free_port() -> int:
    """A TCP port free right now on 127.0.0.1 (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_start_time(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot, or None if it is gone (or a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def is_alive(proc: Proc) -> bool:
    """Whether the recorded process is still the same running process."""
    return proc_start_time(proc.pid) == proc.start_time


def rss_bytes(pid: int) -> int:
    """Resident memory of a process (VmRSS), 0 if gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """User+system CPU time a process has used so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def log_tail(path: str | os.PathLike[str], lines: int = 40) -> str:
    """Last lines of a component log (for error messages and failed-test reports)."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


class Supervisor:
    """Starts processes in their own process group and records them in the state file."""

    def __init__(self, state: ClusterState, die_with_parent: bool = False) -> None:
        self.state = state
        self.die_with_parent = die_with_parent
        self.log_dir = Path(state.state_dir) / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, cmd: Sequence[str], plane: str = "", health_url: str = "") -> Proc:
        log = self.log_dir / f"{name}.log"
        with open(log, "ab") as out:
            popen = subprocess.Popen(
                list(cmd),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: `down` kills the whole group
                preexec_fn=_die_with_parent if self.die_with_parent else None,
                cwd=self.state.state_dir,
            )
        start_time = None
        for _ in range(100):
            start_time = proc_start_time(popen.pid)
            if start_time is not None:
                break
            time.sleep(0.01)
        if start_time is None:
            raise ClusterError(f"{name} exited at once:\n{log_tail(log)}")
        proc = Proc(name, popen.pid, start_time, str(log), list(cmd), plane, health_url)
        self.state.processes.append(proc)
        self.state.save()
        return proc


def stop_processes(procs: Sequence[Proc], timeout: float = 10.0) -> list[str]:
    """SIGTERM each live process group, wait, SIGKILL stragglers; return what is still alive."""
    live = [p for p in procs if is_alive(p)]
    for p in live:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(is_alive(p) for p in live):
        time.sleep(0.1)
    for p in live:
        if is_alive(p):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(is_alive(p) for p in live):
        time.sleep(0.05)
    # Reap our own children so they do not linger as zombies in this process.
    for p in live:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(p.pid, os.WNOHANG)
    # Anything else left in those process groups (there should be nothing).
    for p in live:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGKILL)
    return [p.name for p in live if is_alive(p)]


# ---------------------------------------------------------------------------- readiness


def _ssl_context(ca_cert: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=ca_cert)
    ctx.check_hostname = True
    return ctx


def readyz(plane: Plane, timeout: float = 2.0) -> tuple[bool, str]:
    """GET /readyz on a plane's apiserver (anonymous access is allowed for health endpoints)."""
    try:
        with urllib.request.urlopen(
            f"{plane.server}/readyz", timeout=timeout, context=_ssl_context(plane.ca_cert)
        ) as resp:
            body = resp.read().decode(errors="replace").strip()
            return resp.status == 200 and body == "ok", body
    except urllib.error.HTTPError as exc:
        return False, f"HTTP {exc.code}: {exc.read().decode(errors='replace')[-300:]}"
    except (OSError, ssl.SSLError) as exc:
        return False, str(exc)


def _wait(
    what: str, check: Callable[[], tuple[bool, str]], proc: Proc | None, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        ok, last = check()
        if ok:
            return
        if proc is not None and not is_alive(proc):
            raise ClusterError(f"{what}: process exited.\n--- {proc.log} ---\n{log_tail(proc.log)}")
        time.sleep(0.2)
    tail = f"\n--- {proc.log} ---\n{log_tail(proc.log)}" if proc else ""
    raise ClusterError(f"{what}: not ready after {timeout:.0f}s (last: {last}){tail}")


def component_healthz(url: str) -> tuple[bool, str]:
    """GET a component's /healthz (served with a self-signed certificate, so not verified)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=2, context=ctx) as resp:
            body = resp.read().decode(errors="replace").strip()
            return resp.status == 200 and body == "ok", body
    except (OSError, ssl.SSLError) as exc:
        return False, str(exc)


def _etcd_health(url: str) -> tuple[bool, str]:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
            body = resp.read().decode()
            return '"health":"true"' in body, body
    except OSError as exc:
        return False, str(exc)


# ---------------------------------------------------------------------------------- up


def _tmpfs_dir(prefix: str) -> Path:
    """Data directory for etcd: /dev/shm when it is a writable tmpfs (no disk sync cost)."""
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix=prefix, dir=base))


def _start_etcd(sup: Supervisor, cache: str | None) -> Proc:
    state = sup.state
    data = _tmpfs_dir("gpuparley-etcd-")
    client, peer = free_port(), free_port()
    state.etcd_url = f"http://127.0.0.1:{client}"
    state.etcd_data_dir = str(data)
    cmd = [
        str(build.binary_path("etcd", cache)),
        "--name=gpuparley",
        f"--data-dir={data}",
        f"--listen-client-urls={state.etcd_url}",
        f"--advertise-client-urls={state.etcd_url}",
        f"--listen-peer-urls=http://127.0.0.1:{peer}",
        f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
        f"--initial-cluster=gpuparley=http://127.0.0.1:{peer}",
        "--initial-cluster-state=new",
        "--unsafe-no-fsync",
        "--quota-backend-bytes=4294967296",
        "--log-level=warn",
    ]
    return sup.start("etcd", cmd)


def _plane_files(state: ClusterState, name: str, kind: str, agents: Sequence[str]) -> Plane:
    """Make the PKI and kubeconfigs of one plane (before its apiserver starts)."""
    plane_dir = Path(state.state_dir) / "planes" / name
    plane_dir.mkdir(parents=True, exist_ok=True)
    tokens: dict[str, tuple[str, list[str]]] = {}
    if kind == "host":
        for agent in agents:
            user = agent_plane_name(agent)
            tokens[user] = (os.urandom(16).hex(), [AGENT_GROUP])
        # The market controller's own identity (its RBAC comes with the deploy bundle).
        tokens[MARKET_USER] = (os.urandom(16).hex(), [])
    cred = pki.make_plane_pki(plane_dir / "pki", name, tokens)
    port = free_port()
    server = f"https://127.0.0.1:{port}"
    plane = Plane(
        name=name,
        kind=kind,
        port=port,
        etcd_prefix=f"/{name}",
        kubeconfig=str(plane_dir / "admin.kubeconfig"),
        token_kubeconfig=str(plane_dir / "admin-token.kubeconfig"),
        pki_dir=str(cred.directory),
    )
    pki.write_kubeconfig(
        Path(plane.kubeconfig), server, cred.ca_cert, "admin", client=cred.admin, cluster=name
    )
    pki.write_kubeconfig(
        Path(plane.token_kubeconfig),
        server,
        cred.ca_cert,
        "admin",
        token=cred.admin_token,
        cluster=name,
    )
    pki.write_kubeconfig(
        plane_dir / "scheduler.kubeconfig",
        server,
        cred.ca_cert,
        "system:kube-scheduler",
        client=cred.scheduler,
        cluster=name,
    )
    for user, (token, _groups) in tokens.items():
        # ":" separates files in a kubeconfig path list, so it may not appear in the name.
        path = plane_dir / f"{user.replace(':', '-')}.kubeconfig"
        pki.write_kubeconfig(path, server, cred.ca_cert, user, token=token, cluster=name)
        plane.agent_kubeconfigs[user] = str(path)
        plane.agent_tokens[user] = token
    state.planes[name] = plane
    state.save()
    return plane


def apiserver_command(plane: Plane, etcd_url: str, cache: str | None) -> list[str]:
    """kube-apiserver flags for one plane (what envtest/kwokctl use, minus what needs a kubelet
    or a controller-manager)."""
    d = Path(plane.pki_dir)
    return [
        str(build.binary_path("kube-apiserver", cache)),
        f"--etcd-servers={etcd_url}",
        f"--etcd-prefix={plane.etcd_prefix}",
        f"--secure-port={plane.port}",
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        f"--tls-cert-file={d / 'apiserver.crt'}",
        f"--tls-private-key-file={d / 'apiserver.key'}",
        f"--client-ca-file={d / 'ca.crt'}",
        f"--token-auth-file={d / 'tokens.csv'}",
        "--authorization-mode=RBAC",
        f"--service-account-issuer=https://{plane.name}.gpuparley.local",
        f"--service-account-key-file={d / 'sa.pub'}",
        f"--service-account-signing-key-file={d / 'sa.key'}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        # No controller-manager runs: nothing would create the default ServiceAccount, and
        # nothing (node lifecycle controller) would lift the not-ready taint that
        # TaintNodesByCondition puts on every new node, so neither plugin can be on.
        "--disable-admission-plugins=ServiceAccount,TaintNodesByCondition",
        "--enable-garbage-collector=false",
        # The apiserver listens on 127.0.0.1, which may not appear in the `kubernetes` Endpoints.
        "--endpoint-reconciler-type=none",
        "--profiling=false",
        "--event-ttl=30m",
        "--v=0",
    ]


def _start_scheduler(
    sup: Supervisor, plane: Plane, cache: str | None, qps: int = SCHEDULER_QPS
) -> Proc:
    plane_dir = Path(plane.kubeconfig).parent
    kubeconfig = plane_dir / "scheduler.kubeconfig"
    config = plane_dir / "scheduler-config.yaml"
    config.write_text(
        "apiVersion: kubescheduler.config.k8s.io/v1\n"
        "kind: KubeSchedulerConfiguration\n"
        "clientConnection:\n"
        f"  kubeconfig: {kubeconfig}\n"
        f"  qps: {qps}\n"
        f"  burst: {qps * 2}\n"
        "leaderElection:\n"
        "  leaderElect: false\n"
    )
    port = free_port()
    cmd = [
        str(build.binary_path("kube-scheduler", cache)),
        f"--config={config}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        # No front-proxy is configured; do not look for its CA in kube-system (log noise only).
        "--authentication-skip-lookup=true",
        "--bind-address=127.0.0.1",
        f"--secure-port={port}",
        "--v=1",
    ]
    health = f"https://127.0.0.1:{port}/healthz"
    return sup.start(f"{plane.name}-kube-scheduler", cmd, plane.name, health)


def _start_kwok(sup: Supervisor, plane: Plane, cache: str | None) -> Proc:
    cmd = [
        str(build.binary_path("kwok", cache)),
        f"--kubeconfig={plane.kubeconfig}",
        f"--manage-nodes-with-annotation-selector={FAKE_NODE_ANNOTATION}=fake",
        f"--cidr={POD_CIDR}",
        "--node-lease-duration-seconds=40",
        *(f"--config={build.KWOK_STAGE_DIR / f}" for f in STAGE_FILES),
    ]
    return sup.start(f"{plane.name}-kwok", cmd, plane.name)


def api_client(kubeconfig: str | os.PathLike[str]) -> Any:
    """A ``kubernetes.client.ApiClient`` for a kubeconfig file (its own Configuration object, so
    clients for different planes never share credentials)."""
    from kubernetes import client, config

    cfg = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
    return client.ApiClient(cfg)


def setup_agent_access(host: Plane, agents: Sequence[str]) -> None:
    """In the host plane: one namespace per agent, a Role limited to it, and read-only access to
    nodes for every agent (they must see the GPU inventory they negotiate over)."""
    from kubernetes import client

    with api_client(host.kubeconfig) as api:
        core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
        rbac.create_cluster_role(
            {
                "metadata": {"name": "gpuparley-agent-nodes-reader"},
                "rules": [
                    {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]}
                ],
            }
        )
        rbac.create_cluster_role_binding(
            {
                "metadata": {"name": "gpuparley-agents-nodes-reader"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "gpuparley-agent-nodes-reader",
                },
                "subjects": [
                    {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": AGENT_GROUP}
                ],
            }
        )
        for agent in agents:
            ns = agent_plane_name(agent)
            core.create_namespace({"metadata": {"name": ns, "labels": {"gpuparley.io/agent": ns}}})
            rbac.create_namespaced_role(
                ns,
                {
                    "metadata": {"name": "gpuparley-agent"},
                    "rules": [
                        {
                            "apiGroups": [""],
                            "resources": ["pods", "configmaps", "events"],
                            "verbs": ["*"],
                        },
                        {"apiGroups": [""], "resources": ["pods/status"], "verbs": ["get"]},
                        {
                            "apiGroups": ["coordination.k8s.io"],
                            "resources": ["leases"],
                            "verbs": ["*"],
                        },
                    ],
                },
            )
            rbac.create_namespaced_role_binding(
                ns,
                {
                    "metadata": {"name": "gpuparley-agent"},
                    "roleRef": {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "Role",
                        "name": "gpuparley-agent",
                    },
                    "subjects": [
                        {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": ns}
                    ],
                },
            )


def _wait_nodes_ready(host: Plane, names: Sequence[str], timeout: float) -> None:
    from kubernetes import client

    want = set(names)
    deadline = time.monotonic() + timeout
    with api_client(host.kubeconfig) as api:
        core = client.CoreV1Api(api)
        while True:
            ready = set()
            for node in core.list_node().items:
                for cond in node.status.conditions or []:
                    if cond.type == "Ready" and cond.status == "True":
                        ready.add(node.metadata.name)
            if want <= ready:
                return
            if time.monotonic() > deadline:
                raise ClusterError(f"KWOK did not make nodes Ready: {sorted(want - ready)[:10]}")
            time.sleep(0.3)


def up(
    state_dir: str | os.PathLike[str],
    fake_nodes: Sequence[FakeNode],
    agents: Sequence[str],
    **options: Any,
) -> ClusterState:
    """`start_planes`, tried again (up to three times) when a component lost its port to
    another process: ports are picked free, but another program may take one before the
    component binds it (clusters brought up side by side, or any outgoing connection)."""
    for _retry in range(2):
        try:
            return start_planes(state_dir, fake_nodes, agents, **options)
        except ClusterError as exc:
            if "address already in use" not in str(exc):
                raise
    return start_planes(state_dir, fake_nodes, agents, **options)


def start_planes(
    state_dir: str | os.PathLike[str],
    fake_nodes: Sequence[FakeNode],
    agents: Sequence[str],
    *,
    cache: str | None = None,
    scenario: str = "",
    progress: Progress | None = None,
    die_with_parent: bool = False,
    ready_timeout: float = 120.0,
    scheduler_qps: int = SCHEDULER_QPS,
) -> ClusterState:
    """Start etcd, the host plane (apiserver, scheduler, KWOK, GPU nodes, agent namespaces and
    RBAC) and one apiserver per agent. On any failure everything started is stopped again.

    ``die_with_parent`` makes the components die with the calling process (for test fixtures);
    the CLI leaves it off so the planes outlive ``gpuparley cluster up``. ``scheduler_qps`` is
    kube-scheduler's client rate limit (burst = 2x); it caps the bind rate.
    """
    say = progress or (lambda _msg: None)
    missing = build.missing_binaries(("etcd", "kube-apiserver", "kube-scheduler", "kwok"), cache)
    if missing:
        raise build.MissingBinaryError(
            f"missing component binaries {missing} in {build.bin_dir(cache)}: "
            f"run `{build.BUILD_COMMAND}` first"
        )
    state_path = Path(state_dir).resolve()
    previous = ClusterState.load(state_path)
    if previous and any(is_alive(p) for p in previous.processes):
        raise ClusterError(
            f"a cluster is already running from {state_path}; run `gpuparley cluster down"
            f" --state-dir {state_path}` first"
        )
    if previous:
        _cleanup_files(previous)
    state_path.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(state_path / "planes", ignore_errors=True)
    shutil.rmtree(state_path / "logs", ignore_errors=True)
    agents = [a.removeprefix("agent-") for a in agents]
    if len(set(agents)) != len(agents):
        raise ValueError(f"duplicate agent names in {agents}")
    bad = [a for a in agents if not AGENT_NAME_RE.fullmatch(a)]
    if bad:
        raise ValueError(f"agent names must be DNS labels (a-z, 0-9, '-', <= 50 chars): {bad}")
    state = ClusterState(
        state_dir=str(state_path), scenario=scenario, agents=list(agents), started_at=time.time()
    )
    state.save()
    sup = Supervisor(state, die_with_parent=die_with_parent)
    try:
        say("starting etcd")
        etcd = _start_etcd(sup, cache)
        _wait("etcd", lambda: _etcd_health(state.etcd_url), etcd, 30)

        say("making certificates")
        host = _plane_files(state, HOST, "host", agents)
        agent_planes = [_plane_files(state, agent_plane_name(a), "agent", []) for a in agents]

        # All apiservers start together: their start-up is mostly waiting on etcd and on
        # post-start hooks, so overlapping them is faster than one after another even on 2 cores.
        say(f"starting {1 + len(agent_planes)} kube-apiserver(s)")
        apiservers = {
            p.name: sup.start(
                f"{p.name}-kube-apiserver", apiserver_command(p, state.etcd_url, cache), p.name
            )
            for p in [host, *agent_planes]
        }
        say("waiting for the host apiserver /readyz")
        _wait("host kube-apiserver", lambda: readyz(host), apiservers[HOST], ready_timeout)

        say("starting kube-scheduler and KWOK on the host plane")
        _start_scheduler(sup, host, cache, scheduler_qps)
        _start_kwok(sup, host, cache)

        say(f"creating {len(fake_nodes)} GPU node(s), agent namespaces and RBAC")
        with api_client(host.kubeconfig) as api:
            from kubernetes import client

            state.nodes = create_nodes(client.CoreV1Api(api), fake_nodes)
        setup_agent_access(host, agents)
        state.save()

        with ThreadPoolExecutor(max_workers=max(1, len(agent_planes))) as pool:
            futures = [
                pool.submit(
                    _wait,
                    f"{p.name} kube-apiserver",
                    lambda p=p: readyz(p),
                    apiservers[p.name],
                    ready_timeout,
                )
                for p in agent_planes
            ]
            say("waiting for the agent apiservers /readyz")
            for f in futures:
                f.result()
        say("waiting for KWOK to mark nodes Ready")
        _wait_nodes_ready(host, state.nodes, ready_timeout)
        for proc in state.processes:
            if not is_alive(proc):
                raise ClusterError(f"{proc.name} died during start-up:\n{log_tail(proc.log)}")
    except BaseException:
        stop_processes(state.processes)
        _cleanup_files(state)
        raise
    return state


# --------------------------------------------------------------------------- status/down


@dataclass
class ComponentStatus:
    """One line of ``gpuparley cluster status``."""

    name: str
    pid: int
    alive: bool
    rss_mib: float
    detail: str = ""


def status(state_dir: str | os.PathLike[str]) -> list[ComponentStatus]:
    """Liveness of every recorded process, plus /readyz for each apiserver."""
    state = ClusterState.load(state_dir)
    if state is None:
        return []
    out = []
    for proc in state.processes:
        alive = is_alive(proc)
        detail = ""
        if proc.name.endswith("kube-apiserver") and proc.plane in state.planes:
            plane = state.planes[proc.plane]
            ok, body = readyz(plane) if alive else (False, "")
            detail = f"{plane.server} readyz={'ok' if ok else body[:60] or 'down'}"
        elif proc.name == "etcd":
            ok, _ = _etcd_health(state.etcd_url) if alive else (False, "")
            detail = f"{state.etcd_url} health={'ok' if ok else 'down'}"
        elif proc.health_url:
            ok, body = component_healthz(proc.health_url) if alive else (False, "")
            detail = f"healthz={'ok' if ok else body[:60] or 'down'}"
        rss = rss_bytes(proc.pid) / 2**20 if alive else 0.0
        out.append(ComponentStatus(proc.name, proc.pid, alive, rss, detail))
    return out


def _cleanup_files(state: ClusterState) -> None:
    if state.etcd_data_dir and Path(state.etcd_data_dir).name.startswith("gpuparley-etcd-"):
        shutil.rmtree(state.etcd_data_dir, ignore_errors=True)


def down(state_dir: str | os.PathLike[str]) -> tuple[list[str], list[str]]:
    """Stop every recorded process (by process group) and remove etcd's tmpfs data.

    Returns (stopped, still_alive); ``still_alive`` is empty unless something refused SIGKILL.
    """
    state = ClusterState.load(state_dir)
    if state is None:
        return [], []
    live = [p.name for p in state.processes if is_alive(p)]
    # Stop clients before servers so nothing logs a storm of connection errors.
    ordered = sorted(state.processes, key=lambda p: (p.name == "etcd", "apiserver" in p.name))
    remaining = stop_processes(ordered)
    if not remaining:
        _cleanup_files(state)
        state.processes = []
        state.save()
    return live, remaining
