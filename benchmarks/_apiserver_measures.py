"""What the cluster benchmarks measure on real apiservers: requests by verb and resource (from
`apiserver_request_total`), the idle background, the CPU of the rig's processes, and when a
watch saw pods bound and running.

Shared by `negotiation_e2e.py`; kept apart so each file has one job (the measuring here, the
scenario and the two runs there)."""

from __future__ import annotations

import os
import re
import ssl
import statistics
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from gpuparley.deploy.cluster import control_plane
from gpuparley.deploy.informer import Informer
from gpuparley.deploy.kube import Kube

# Heartbeats: coordination.k8s.io Leases (KWOK's node leases, the control plane's leader
# elections, and any replica's) and node status updates (KWOK's node conditions). No placement
# writes one -- the benchmark runs one market and one negotiator per agent, without elections --
# and at 100 and 1,000 nodes they are most of the host's requests and come in bursts: a
# background rate subtracted from a window of a few seconds left them as noise of +-1-2
# requests per pod. Per placement they are left out on both sides; the idle cost counts them.
HEARTBEATS = ("leases", "nodes/status")
STANDING = "WATCH"  # the verb of standing connections, counted when they end


def request_counts(plane: control_plane.Plane) -> Counter[tuple[str, str]]:
    """apiserver_request_total on one apiserver (read as its admin) by (verb, resource)."""
    token_cfg = yaml.safe_load(Path(plane.token_kubeconfig).read_text())
    token = token_cfg["users"][0]["user"]["token"]
    context = ssl.create_default_context(cafile=plane.ca_cert)
    request = urllib.request.Request(
        f"{plane.server}/metrics", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, context=context, timeout=10) as response:
        text = response.read().decode()
    counts: Counter[tuple[str, str]] = Counter()
    for m in re.finditer(r"^apiserver_request_total\{([^}]*)\} (\S+)$", text, re.MULTILINE):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        resource = labels.get("resource", "")
        if labels.get("subresource"):
            resource += "/" + labels["subresource"]
        counts[labels.get("verb", ""), resource] += float(m.group(2))
    return counts


def request_total(plane: control_plane.Plane) -> float:
    """Sum of apiserver_request_total on one apiserver."""
    return sum(request_counts(plane).values())


def request_breakdown(
    before: list[Counter[tuple[str, str]]], planes_: list[Any], pods: int
) -> dict[str, float]:
    """Requests per pod by plane, verb and resource since `before` (background included), the
    largest first: where a placement's requests go."""
    per_pod: dict[str, float] = {}
    for index, (old, plane) in enumerate(zip(before, planes_, strict=True)):
        name = "host" if index == 0 else f"agent{index}"
        for (verb, resource), count in (request_counts(plane) - old).items():
            per_pod[f"{name} {verb} {resource}"] = count / pods
    return dict(sorted(per_pod.items(), key=lambda item: -item[1]))


def requests_during(
    planes_: list[control_plane.Plane], background: float, work: Any
) -> tuple[Any, float]:
    """Run `work()`, which returns (result, requests of its own not to count); the result and
    the requests it caused on `planes_` beyond `background` requests/second and its own."""
    before, started = placement_requests(planes_), time.perf_counter()
    result, own = work()
    elapsed = time.perf_counter() - started
    return result, placement_requests(planes_) - before - background * elapsed - own


def placement_requests(planes_: list[control_plane.Plane]) -> float:
    """The requests on `planes_` that a placement could have made: heartbeats and watches left
    out (a watch is a standing connection, counted by the apiserver when it ends -- whenever a
    timeout or a process's exit ends it -- not a request a placement makes)."""
    return sum(
        n
        for plane in planes_
        for (verb, what), n in request_counts(plane).items()
        if what not in HEARTBEATS and verb != STANDING
    )


def tree_cpu() -> dict[int, tuple[str, float]]:
    """pid -> (what it is, CPU seconds (user + system) so far) for this process and its live
    descendants: the planes (etcd, apiservers, scheduler, KWOK, ...), the market and the
    negotiators. What it is: the program, with the plane of an apiserver (its etcd prefix) and
    the command of a gpuparley process."""
    ticks = os.sysconf("SC_CLK_TCK")
    parents, used = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        parents[int(entry)] = int(fields[1])
        used[int(entry)] = (int(fields[11]) + int(fields[12])) / ticks
    tree, grew = {os.getpid()}, True
    while grew:
        before = len(tree)
        tree |= {pid for pid, parent in parents.items() if parent in tree}
        grew = len(tree) > before
    return {pid: (_program(pid), used[pid]) for pid in tree if pid in used}


def _program(pid: int) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_text().split("\0")
    except OSError:
        return "?"
    name = Path(argv[0]).name
    prefix = next((a.split("=", 1)[1] for a in argv if a.startswith("--etcd-prefix=")), "")
    if prefix:
        return f"{name} {prefix.strip('/')}"
    command = next((a for a in argv if a in ("market", "negotiator")), "")
    return f"{name} {command}" if command else name


class CpuWindow:
    """The CPU the rig used over a window: seconds, the share of the machine's cores, and the
    seconds by program. On a machine with few cores, a phase whose processes keep every core
    busy is bounded by that work, not by round trips."""

    def __init__(self) -> None:
        self.cpu, self.started = tree_cpu(), time.perf_counter()

    def close(self) -> dict[str, Any]:
        elapsed, by_program = time.perf_counter() - self.started, Counter[str]()
        for pid, (program, seconds) in tree_cpu().items():
            by_program[program] += seconds - self.cpu.get(pid, (program, 0.0))[1]
        total = sum(by_program.values())
        return {
            "cpu_s": total,
            "cores_busy": total / elapsed / (os.cpu_count() or 1),
            "cpu_s_by_program": {k: round(v, 3) for k, v in by_program.most_common() if v > 0},
        }


def background_rates(
    planes_: list[control_plane.Plane], seconds: float = 5.0
) -> tuple[float, float]:
    """Requests/second the idle planes serve anyway (controllers, KWOK's heartbeats): all of
    them (the idle cost), and those a placement could have made (`placement_requests`)."""
    before = sum(request_total(p) for p in planes_), placement_requests(planes_)
    time.sleep(seconds)
    after = sum(request_total(p) for p in planes_), placement_requests(planes_)
    return (after[0] - before[0]) / seconds, (after[1] - before[1]) / seconds


def settle(plane: control_plane.Plane, window: float = 1.0, most: int = 60) -> None:
    """Wait until `plane`'s placement background is steady (two windows within 2 requests/s):
    right after the planes start, KWOK lists each node's pods once (1,000 lists at 1,000 nodes,
    seconds of them), which measured as background left the baseline below its own requests."""
    last = None
    for _ in range(most):
        _all, rate = background_rates([plane], window)
        if last is not None and abs(rate - last) < 2.0:
            return
        last = rate


class PlacementWatch:
    """When a watch first showed each pod bound (perf_counter), over `namespaces` of the host,
    and which pods it has seen running there and in `mirrors` (the agent planes' namespaces,
    whose pods the negotiators bind and update after the host's).

    Started before the first pod of a run is created: a watch started later replays what it
    missed only once it is established (a noticeable while after its list), so a binding
    made meanwhile was recorded late -- against whichever side started its observer later (the
    market's, at its readiness). A watch, not polling: a list of every namespace each 20 ms
    loaded the host apiserver being measured. Running matters to the request counts only: a
    placement's last writes (KWOK's pod status on the host, the negotiator's copy of it in the
    agent plane) come after the binding, and a count read at the last binding missed those of
    the pods bound last."""

    def __init__(
        self, kube: Kube, namespaces: list[str], mirrors: list[tuple[Kube, str]] | None = None
    ) -> None:
        self.bound: dict[str, float] = {}
        self.running: set[tuple[int, str]] = set()  # (watch, pod)
        self._want = (0, 0)  # bound, running
        self._done = threading.Event()
        self._lock = threading.Lock()
        planes_ = [(kube, ns) for ns in namespaces] + list(mirrors or [])
        self.watches = [
            Informer(plane, "pods", ns, on_object=self._seen_by(index, index < len(namespaces)))
            for index, (plane, ns) in enumerate(planes_)
        ]

    def _seen_by(self, watch: int, host: bool) -> Any:
        def seen(pod: dict[str, Any]) -> None:
            name = pod["metadata"]["name"]
            with self._lock:
                if host and name not in self.bound and (pod.get("spec") or {}).get("nodeName"):
                    self.bound[name] = time.perf_counter()
                if (pod.get("status") or {}).get("phase") == "Running":
                    self.running.add((watch, name))
                self._check()

        return seen

    def _check(self) -> None:
        bound, running = self._want
        if bound and len(self.bound) >= bound and len(self.running) >= running:
            self._done.set()

    def start(self) -> PlacementWatch:
        for watch in self.watches:
            watch.start()
        for watch in self.watches:
            if not watch.wait_synced(30.0):
                raise TimeoutError("the placement watch did not sync in 30 s")
        return self

    def wait_bound(self, expected: int, timeout: float) -> dict[str, float]:
        """The bindings, once `expected` pods are bound on the host."""
        self._wait(expected, 0, timeout)
        return dict(self.bound)

    def wait_running(self, expected: int, timeout: float) -> int:
        """Once `expected` pods run (counted in every watched namespace), stop; the requests
        the watches made (a list each: the observer's own, not the placements' cost)."""
        try:
            self._wait(len(self.bound), expected, timeout)
        finally:
            for watch in self.watches:
                watch.stop()
        return len(self.watches)

    def _wait(self, bound: int, running: int, timeout: float) -> None:
        with self._lock:
            self._done.clear()
            self._want = (bound, running)
            self._check()
        if not self._done.wait(timeout):
            raise TimeoutError(
                f"after {timeout:.0f}s {len(self.bound)}/{bound} pods bound, "
                f"{len(self.running)}/{running} running"
            )


def latencies(created: dict[str, float], bound: dict[str, float]) -> dict[str, float]:
    values = sorted(bound[name] - created[name] for name in created)
    quantiles = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50_s": statistics.median(values), "p99_s": quantiles[98], "max_s": values[-1]}
