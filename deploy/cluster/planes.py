"""The set of local planes as one unit: start, inspect and stop real Kubernetes control planes.

Topology (one ``gpuparley cluster up``)::

    etcd (one process, data on tmpfs, --unsafe-no-fsync)
     ├─ /host          kube-apiserver + kube-scheduler + KWOK   -- the shared GPU cluster
     │                 + kube-controller-manager (resourcequota only)
     ├─ /agent-<a>     kube-apiserver                           -- agent a's own control plane
     └─ /agent-<b>     kube-apiserver                           -- ...

Why this shape: each negotiating agent must really own a control plane (its own storage prefix,
CA, admin credentials), while GPUs live in one host cluster whose real kube-scheduler binds pods
against extended resources on KWOK-simulated nodes. One etcd with one prefix per apiserver is what
envtest/kwokctl-style setups do and keeps memory low.

This module owns what the planes share -- etcd, the order they start in, and the record of them
(:class:`LocalPlanes`, saved as ``<state_dir>/state.json`` as soon as each process starts, so
``status`` and ``down`` work from another process, even after a crash halfway through ``up``).
How one plane is made is in ``control_plane.py``, what the host adds in ``host_plane.py``, and how
a process is started, recorded and stopped in ``processes.py``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gpuparley.deploy.cluster import build
from gpuparley.deploy.cluster.control_plane import Plane, apiserver_command, plane_files, readyz
from gpuparley.deploy.cluster.host_plane import (
    SCHEDULER_QPS,
    add_fake_nodes,
    component_healthz,
    install_crds,
    setup_agent_access,
    start_controller_manager,
    start_kwok,
    start_scheduler,
    wait_nodes_ready,
)
from gpuparley.deploy.cluster.nodes import FakeNode
from gpuparley.deploy.cluster.processes import (
    ClusterError,
    Proc,
    Supervisor,
    free_port,
    is_alive,
    log_tail,
    rss_bytes,
    stop_processes,
    wait_ready,
)
from gpuparley.deploy.cluster.profiles import (
    DEFAULT_PROFILE,
    PROFILES,
    Profile,
    apiserver_env,
)
from gpuparley.deploy.objects import agent_name, agent_namespace

HOST = "host"
AGENT_NAME_RE = re.compile(r"[a-z0-9]([-a-z0-9]{0,48}[a-z0-9])?")
Progress = Callable[[str], None]


@dataclass
class LocalPlanes:
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
    profile: str = DEFAULT_PROFILE  # of the agent planes (`profiles.py`)

    @property
    def path(self) -> Path:
        return Path(self.state_dir) / "state.json"

    def save(self) -> None:
        data = asdict(self)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        os.replace(tmp, self.path)

    @classmethod
    def load(cls, state_dir: str | os.PathLike[str]) -> LocalPlanes | None:
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
        return self.planes[agent_namespace(name)]


def default_state_dir(cache: str | os.PathLike[str] | None = None) -> Path:
    """Default ``--state-dir``: ``<cache>/run/default``."""
    return build.cache_dir(cache) / "run" / "default"


# ---------------------------------------------------------------------------------- etcd


def _etcd_health(url: str) -> tuple[bool, str]:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
            body = resp.read().decode()
            return '"health":"true"' in body, body
    except OSError as exc:
        return False, str(exc)


def _tmpfs_dir(prefix: str) -> Path:
    """Data directory for etcd: /dev/shm when it is a writable tmpfs (no disk sync cost)."""
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix=prefix, dir=base))


def _start_etcd(sup: Supervisor, state: LocalPlanes, cache: str | None) -> Proc:
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


def _add_plane(state: LocalPlanes, name: str, kind: str, agents: Sequence[str]) -> Plane:
    """Make one plane's files and record it (saved at once, like every process)."""
    plane = plane_files(Path(state.state_dir) / "planes" / name, name, kind, agents)
    state.planes[name] = plane
    state.save()
    return plane


# ------------------------------------------------------------------------------------ up


def up(
    state_dir: str | os.PathLike[str],
    fake_nodes: Sequence[FakeNode],
    agents: Sequence[str],
    **options: Any,
) -> LocalPlanes:
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
    profile: Profile = DEFAULT_PROFILE,
) -> LocalPlanes:
    """Start etcd, the host plane (apiserver, scheduler, KWOK, GPU nodes, agent namespaces and
    RBAC) and one apiserver per agent. On any failure everything started is stopped again.

    ``die_with_parent`` makes the components die with the calling process (for test fixtures);
    the CLI leaves it off so the planes outlive ``gpuparley cluster up``. ``scheduler_qps`` is
    kube-scheduler's client rate limit (burst = 2x); it caps the bind rate. ``profile`` is the
    agent planes' (`profiles.py`; the host is always full).
    """
    say = progress or (lambda _msg: None)
    missing = build.missing_binaries(build.PLANE_COMPONENTS, cache)
    if missing:
        raise build.MissingBinaryError(
            f"missing component binaries {missing} in {build.bin_dir(cache)}: "
            f"run `{build.BUILD_COMMAND}` first"
        )
    state_path = Path(state_dir).resolve()
    previous = LocalPlanes.load(state_path)
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
    agents = [agent_name(a) for a in agents]
    if len(set(agents)) != len(agents):
        raise ValueError(f"duplicate agent names in {agents}")
    bad = [a for a in agents if not AGENT_NAME_RE.fullmatch(a)]
    if bad:
        raise ValueError(f"agent names must be DNS labels (a-z, 0-9, '-', <= 50 chars): {bad}")
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}: use one of {', '.join(PROFILES)}")
    state = LocalPlanes(
        state_dir=str(state_path),
        scenario=scenario,
        agents=list(agents),
        started_at=time.time(),
        profile=profile,
    )
    state.save()
    sup = Supervisor(state, die_with_parent=die_with_parent)
    try:
        say("starting etcd")
        etcd = _start_etcd(sup, state, cache)
        wait_ready("etcd", lambda: _etcd_health(state.etcd_url), etcd, 30)

        say("making certificates")
        host = _add_plane(state, HOST, "host", agents)
        agent_planes = [_add_plane(state, agent_namespace(a), "agent", []) for a in agents]

        # All apiservers start together: their start-up is mostly waiting on etcd and on
        # post-start hooks, so overlapping them is faster than one after another even on 2 cores.
        say(f"starting {1 + len(agent_planes)} kube-apiserver(s)")
        # The host serves everything the market uses; agent planes run `profile` (slim:
        # only the APIs an agent's pods need, `profiles.py`).
        apiservers = {
            p.name: sup.start(
                f"{p.name}-kube-apiserver",
                apiserver_command(p, state.etcd_url, cache, "full" if p is host else profile),
                p.name,
                env=None if p is host else apiserver_env(profile),
            )
            for p in [host, *agent_planes]
        }
        say("waiting for the host apiserver /readyz")
        wait_ready("host kube-apiserver", lambda: readyz(host), apiservers[HOST], ready_timeout)

        say("installing the gpuparley CRDs on the host plane")
        install_crds(host)
        say("starting kube-scheduler, kube-controller-manager (quotas) and KWOK on the host")
        start_scheduler(sup, host, cache, scheduler_qps)
        start_controller_manager(sup, host, cache)
        start_kwok(sup, host, cache)

        say(f"creating {len(fake_nodes)} GPU node(s), agent namespaces and RBAC")
        state.nodes = add_fake_nodes(host, fake_nodes)
        setup_agent_access(host, agents)
        state.save()

        with ThreadPoolExecutor(max_workers=max(1, len(agent_planes))) as pool:
            futures = [
                pool.submit(
                    wait_ready,
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
        wait_nodes_ready(host, state.nodes, ready_timeout)
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
    state = LocalPlanes.load(state_dir)
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


def _cleanup_files(state: LocalPlanes) -> None:
    if state.etcd_data_dir and Path(state.etcd_data_dir).name.startswith("gpuparley-etcd-"):
        shutil.rmtree(state.etcd_data_dir, ignore_errors=True)


def down(state_dir: str | os.PathLike[str]) -> tuple[list[str], list[str]]:
    """Stop every recorded process (by process group) and remove etcd's tmpfs data.

    Returns (stopped, still_alive); ``still_alive`` is empty unless something refused SIGKILL.
    """
    state = LocalPlanes.load(state_dir)
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
