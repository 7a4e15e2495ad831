"""What does negotiating cost a pod? Created-to-bound latency and apiserver requests per
placement, the in-cluster market versus plain kube-scheduler, on the same workload in the same
run, for 10, 100 and 1,000 fake GPU nodes.

For each cluster size, one set of real planes (etcd, host kube-apiserver + kube-scheduler + KWOK,
three agent kube-apiservers) and one workload: `--jobs` GPU jobs (whole GPUs, 2-pod gangs, MIG
instances, time-slice shares), all arriving at once, all fitting and all lasting longer than
the measurement, so latency is the cost of the path, not queueing for capacity or other jobs'
ends:

* **baseline**: the jobs' pods created directly, for kube-scheduler, in a host namespace;
  kube-scheduler binds them. Created = just before the create call.
* **market**: the same jobs as pods in the agents' own planes; the market controller
  (continuous clearing batched over `CLEARING_INTERVAL` simulated seconds) and three
  negotiators (scripted truthful bidders, processes) negotiate, leases are issued, the
  negotiators sync the pods to the host and the market binds them.
  Created = just before the agent-plane create, or when the market process became ready if that
  was later (start-up is not negotiation).

Bound = when a watch of the host, established before the first pod is created (`BindWatch`),
first shows the (host copy of the) pod bound -- the same observer for both.

Requests per placement: the increase of `apiserver_request_total` on every apiserver involved
(host; host + agent planes for the market) over the phase, heartbeats left out (coordination
Leases and node status: KWOK's nodes, the control plane's elections; no placement writes one),
minus the background rate of the rest measured on the idle planes just before (once steady),
minus the benchmark's own list per namespace that starts its watch of the bindings (a watch is
counted when it ends, after the figures are read) and, for the market, minus the requests of its
start-up (saved as `market_startup_requests`: a one-off, like kube-scheduler's, which ran before
the baseline), divided by the pods bound.

CPU: the seconds every process of the rig used (planes, market, negotiators, the benchmark's
own client), by program, over each measured window (the baseline's first create to its last
binding; the market's readiness to its last binding), and the share of the machine's cores that
is: on a machine with few cores both windows keep the cores busy, so their latencies follow
their work, not their round trips.

Sub-steps: from the market's log, how many it closed, in how many it asked a negotiator and in
how many it took answers given ahead (`deploy/answers_ahead.py`), the median seconds of each
kind, and their span from the first sub-step's start to the last one's close.

Idle cost: requests/second on every plane with the three negotiators started and nothing to do
(no pods, no market) against the same planes without them, over `--idle-seconds` each.

    python benchmarks/negotiation_e2e.py [--nodes 10,100,1000] [--jobs 20]

Prints a table and saves benchmarks/results/negotiation_e2e.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import ssl
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from gpuparley.deploy import objects
from gpuparley.deploy.cluster import control_plane, nodes, planes
from gpuparley.deploy.informer import Informer
from gpuparley.deploy.kube import Kube
from gpuparley.deploy.workload import pods_for_job
from gpuparley.envs.resources import scenarios_dir
from gpuparley.envs.scenario import load_scenario

from _common import save

# The market rig is test code (tests/cluster/market_rig.py), outside the installed package; this
# benchmark runs from a source checkout, so it shares the rig with the end-to-end tests from there.
sys.path.append(str(Path(__file__).resolve().parents[1] / "tests" / "cluster"))
from market_rig import MarketRig

BASELINE_NS = "baseline"
CLEARING_INTERVAL = 60.0
"""Simulated seconds a continuous clearing waits for more events (the mechanism's own batching,
`market.clearing_interval`). The generator spreads the 20 arrivals 3.6 ms of simulated time
apart; clearing at every event (0) made each its own round, one agent asked at a time, 20
round trips in series. The market's clock is simulated, so waiting costs no wall time."""


def scenario_file(directory: Path, node_count: int, jobs: int) -> Path:
    """cluster-e2e's node mix scaled to `node_count` nodes, `jobs` jobs of about a day arriving
    at once. The exclusive nodes have 8 GPUs (cluster-e2e's have 4): with 4, 20 jobs asked for 17
    whole GPUs on 10 nodes' 16, which kube-scheduler "fitted" by giving one a time-sliced
    replica, while the market's last job waited for another to finish."""
    per_group = max(1, node_count // 3)
    groups = [
        {"name": "whole", "count": node_count - 2 * per_group, "cpu_milli": 64000,
         "memory_mib": 524288, "gpu_model": "A100-80GB", "gpus": 8, "mode": "exclusive"},
        {"name": "mig", "count": per_group, "cpu_milli": 64000, "memory_mib": 524288,
         "gpu_model": "A100-80GB", "gpus": 2, "mode": "mig", "mig_layout": "balanced"},
        {"name": "shared", "count": per_group, "cpu_milli": 64000, "memory_mib": 524288,
         "gpu_model": "A100-80GB", "gpus": 2, "mode": "timeslice", "replicas": 4},
    ]  # fmt: skip
    doc = yaml.safe_load((scenarios_dir() / "cluster-e2e.yaml").open())
    doc["name"] = f"bench-{node_count}"
    doc["cluster"]["nodes"] = groups
    doc["workload"]["generator"].update({"jobs": jobs, "hours": 0.01, "rate_per_hour": 1e6})
    # Jobs outlast the measurement, as the baseline's pods do: a lease ending while later pods
    # are still being placed (its pods deleted, quotas recounted) is not a placement's cost.
    for job_class in doc["workload"]["generator"]["classes"].values():
        job_class["duration"] = {"median_seconds": 86400, "sigma": 0.1, "min_seconds": 43200}
    doc["market"]["clearing_interval"] = CLEARING_INTERVAL
    path = directory / f"bench-{node_count}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


# Heartbeats: coordination.k8s.io Leases (KWOK's node leases, the control plane's leader
# elections, and any replica's) and node status updates (KWOK's node conditions). No placement
# writes one -- the benchmark runs one market and one negotiator per agent, without elections --
# and at 100 and 1,000 nodes they are most of the host's requests and come in bursts: a
# background rate subtracted from a window of a few seconds left them as noise of +-1-2
# requests per pod. Per placement they are left out on both sides; the idle cost counts them.
HEARTBEATS = ("leases", "nodes/status")


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


def request_total(plane: control_plane.Plane, heartbeats: bool = True) -> float:
    """Sum of apiserver_request_total on one apiserver; without `heartbeats`, less the requests
    on what `HEARTBEATS` names."""
    counts = request_counts(plane)
    return sum(n for (_verb, what), n in counts.items() if heartbeats or what not in HEARTBEATS)


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
    """The requests on `planes_` that a placement could have made: heartbeats left out."""
    return sum(request_total(p, heartbeats=False) for p in planes_)


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


class BindWatch:
    """When a watch first showed each pod bound (perf_counter), over `namespaces` of the host.

    Started before the first pod of a run is created: a watch started later replays what it
    missed only once it is established (a noticeable while after its list), so a binding
    made meanwhile was recorded late -- against whichever side started its observer later (the
    market's, at its readiness). A watch, not polling: a list of every namespace each 20 ms
    loaded the host apiserver being measured."""

    def __init__(self, kube: Kube, namespaces: list[str]) -> None:
        self.bound: dict[str, float] = {}
        self.expected = 0
        self._done = threading.Event()
        self._lock = threading.Lock()
        self.watches = [Informer(kube, "pods", ns, on_object=self._seen) for ns in namespaces]

    def _seen(self, pod: dict[str, Any]) -> None:
        name = pod["metadata"]["name"]
        with self._lock:
            if name not in self.bound and (pod.get("spec") or {}).get("nodeName"):
                self.bound[name] = time.perf_counter()
            if self.expected and len(self.bound) >= self.expected:
                self._done.set()

    def start(self) -> BindWatch:
        for watch in self.watches:
            watch.start()
        for watch in self.watches:
            if not watch.wait_synced(30.0):
                raise TimeoutError("the bind watch did not sync in 30 s")
        return self

    def wait(self, expected: int, timeout: float) -> tuple[dict[str, float], int]:
        """The bindings once `expected` pods are bound, and the requests the watch made (a list
        per namespace: the observer's own, not the placements' cost; the watches are counted
        when they end, after the figures are read)."""
        with self._lock:
            self.expected = expected
            if len(self.bound) >= expected:
                self._done.set()
        try:
            if not self._done.wait(timeout):
                seen = len(self.bound)
                raise TimeoutError(f"only {seen}/{expected} pods bound after {timeout:.0f}s")
        finally:
            for watch in self.watches:
                watch.stop()
        return dict(self.bound), len(self.watches)


def latencies(created: dict[str, float], bound: dict[str, float]) -> dict[str, float]:
    values = sorted(bound[name] - created[name] for name in created)
    quantiles = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50_s": statistics.median(values), "p99_s": quantiles[98], "max_s": values[-1]}


def run_baseline(state: planes.LocalPlanes, jobs: list[Any]) -> dict[str, Any]:
    host = Kube(state.host.kubeconfig)
    host.create("namespaces", None, {"metadata": {"name": BASELINE_NS}})
    settle(state.host)
    _all, background = background_rates([state.host])
    created: dict[str, float] = {}
    cpu: list[dict[str, Any]] = []

    def place() -> tuple[dict[str, float], float]:
        watch = BindWatch(host, [BASELINE_NS]).start()
        window = CpuWindow()
        for job in jobs:
            for pod in pods_for_job(job, scheduler=None):
                pod["metadata"]["name"] = f"{job.owner}-{pod['metadata']['name']}"
                created[pod["metadata"]["name"]] = time.perf_counter()
                host.create("pods", BASELINE_NS, pod)
        bound = watch.wait(len(created), 120)
        cpu.append(window.close())
        return bound

    before = [request_counts(state.host)]
    bound, requests = requests_during([state.host], background, place)
    breakdown = request_breakdown(before, [state.host], len(created))
    for name in created:
        host.delete("pods", BASELINE_NS, name)
    host.close()
    return {**latencies(created, bound), "pods": len(created),
            "requests_per_placement": requests / len(created), **cpu[0],
            "requests_per_pod_by_kind": breakdown}  # fmt: skip


def run_market(
    state: planes.LocalPlanes, scenario: Path, work: Path, idle_seconds: float
) -> dict[str, Any]:
    rig = MarketRig(state, str(scenario), 0, "scripted:truthful", work / "logs")
    rig.prepare_bundles()
    loaded = load_scenario(scenario)
    jobs = loaded.build_jobs(0)
    every_plane = [state.host, *(state.agent(a.name) for a in loaded.agents)]
    idle_without, _placements = background_rates(every_plane, idle_seconds)
    rig.start_negotiators()
    for agent in loaded.agents:
        rig.wait_ready(f"negotiator-{agent.name}")
    time.sleep(2.0)  # their start-up lists and watches are not idle cost
    idle_with, background = background_rates(every_plane, idle_seconds)
    host = Kube(state.host.kubeconfig)
    namespaces = [objects.agent_namespace(a.name) for a in loaded.agents]
    created: dict[str, float] = {}
    startup_requests: list[float] = []
    cpu: list[dict[str, Any]] = []

    def place() -> tuple[dict[str, float], float]:
        watch = BindWatch(host, namespaces).start()
        for agent in loaded.agents:
            plane = Kube(state.agent(agent.name).kubeconfig)
            for job in (j for j in jobs if j.owner == agent.name):
                for pod in pods_for_job(job):
                    created[pod["metadata"]["name"]] = time.perf_counter()
                    plane.create("pods", "default", pod)
            plane.close()
        for agent in loaded.agents:
            rig.wait_ready(f"negotiator-{agent.name}")
        # The market's start-up (imports, building its model, checking the nodes, electing a
        # leader, listing what it watches) is not negotiation: latency counts from when it is
        # ready (or from the pod's creation if later), and its requests until then are not
        # counted either (kube-scheduler's were made before the baseline began).
        before, started = placement_requests(every_plane), time.perf_counter()
        rig.start_market("--max-epochs", "3")
        ready = rig.wait_ready("market")
        window = CpuWindow()
        startup = placement_requests(every_plane) - before
        startup -= background * (time.perf_counter() - started)
        startup_requests.append(startup)
        created.update({name: max(at, ready) for name, at in created.items()})
        bound, lists = watch.wait(len(created), 300)
        cpu.append(window.close())
        return bound, lists + startup

    before = [request_counts(plane) for plane in every_plane]
    try:
        bound, requests = requests_during(every_plane, background, place)
        breakdown = request_breakdown(before, every_plane, len(created))
    finally:
        rig.stop()
        host.close()
    substeps = substep_log(work / "logs" / "market.log")
    return {**latencies(created, bound), "pods": len(created), "market_substeps": substeps,
            "requests_per_placement": requests / len(created),
            "market_startup_requests": startup_requests[0], **cpu[0],
            "market_requests_per_pod_by_kind": breakdown,
            "idle_requests_per_s_without_negotiators": idle_without,
            "idle_requests_per_s_with_negotiators": idle_with,
            "idle_ratio": idle_with / idle_without}  # fmt: skip


def substep_log(market_log: Path) -> dict[str, Any]:
    """The market's sub-steps from its log ("sub-step closed" lines): how many, how many it
    asked a negotiator in and how many it took answers given ahead in (nobody asked), the
    median seconds of each kind, and the negotiation's span from the first sub-step's start to
    the last one's close."""
    closed = []
    for line in market_log.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # the process's other output
        if isinstance(record, dict) and record.get("msg") == "sub-step closed":
            closed.append(record)
    asked = [r["seconds"] for r in closed if r.get("asked")]
    ahead = [r["seconds"] for r in closed if not r.get("asked") and r.get("answered_ahead")]
    span = closed[-1]["ts"] - (closed[0]["ts"] - closed[0]["seconds"]) if closed else 0.0
    return {
        "substeps": len(closed),
        "substeps_asked": len(asked),
        "substeps_answered_ahead": len(ahead),
        "substep_s_asked_median": statistics.median(asked) if asked else None,
        "substep_s_answered_ahead_median": statistics.median(ahead) if ahead else None,
        "substeps_span_s": span,
    }


def measure(node_count: int, jobs: int, idle_seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="gpuparley-bench-") as tmp:
        work = Path(tmp)
        scenario = scenario_file(work, node_count, jobs)
        loaded = load_scenario(scenario)
        state = planes.up(
            work / "state",
            nodes.fake_nodes_from_scenario(scenario),
            [a.name for a in loaded.agents],
            scenario=str(scenario),
            die_with_parent=True,
        )
        try:
            baseline = run_baseline(state, loaded.build_jobs(0))
            market = run_market(state, scenario, work, idle_seconds)
        finally:
            planes.down(work / "state")
    return {
        "nodes": node_count,
        "jobs": jobs,
        "baseline": baseline,
        "market": market,
        "latency_ratio_p50": market["p50_s"] / baseline["p50_s"],
        "latency_ratio_p99": market["p99_s"] / baseline["p99_s"],
        "requests_ratio": market["requests_per_placement"] / baseline["requests_per_placement"],
    }


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", default="10,100,1000")
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    args = parser.parse_args()
    rows = []
    load = os.getloadavg()
    for count in (int(n) for n in args.nodes.split(",")):
        row = measure(count, args.jobs, args.idle_seconds)
        row["loadavg_1_5_15"] = os.getloadavg()
        rows.append(row)
        b, m = row["baseline"], row["market"]
        print(
            f"{count:>5} nodes, {m['pods']} pods | kube-scheduler p50 {b['p50_s'] * 1000:7.1f} ms"
            f" p99 {b['p99_s'] * 1000:7.1f} ms {b['requests_per_placement']:5.1f} req/pod | "
            f"market p50 {m['p50_s'] * 1000:7.1f} ms p99 {m['p99_s'] * 1000:7.1f} ms "
            f"{m['requests_per_placement']:5.1f} req/pod | x{row['latency_ratio_p50']:.1f} p50, "
            f"x{row['latency_ratio_p99']:.1f} p99, x{row['requests_ratio']:.1f} requests | idle "
            f"{m['idle_requests_per_s_with_negotiators']:.2f} vs "
            f"{m['idle_requests_per_s_without_negotiators']:.2f} req/s (x{m['idle_ratio']:.2f})"
            f" | market start-up {m['market_startup_requests']:.0f} requests"
            f" | CPU {b['cpu_s']:.2f} vs {m['cpu_s']:.2f} s, cores busy"
            f" {b['cores_busy']:.0%} vs {m['cores_busy']:.0%}"
            f" | load {row['loadavg_1_5_15'][0]:.1f}",
            flush=True,
        )
        sub = m["market_substeps"]
        print(
            f"  market sub-steps: {sub['substeps']} in {sub['substeps_span_s']:.3f} s,"
            f" {sub['substeps_asked']} asked (median {_ms(sub['substep_s_asked_median'])}),"
            f" {sub['substeps_answered_ahead']} answered ahead"
            f" (median {_ms(sub['substep_s_answered_ahead_median'])})"
        )
        for name, kinds in (
            ("kube-scheduler", b["requests_per_pod_by_kind"]),
            ("market", m["market_requests_per_pod_by_kind"]),
        ):
            listed = ", ".join(f"{k} {v:.2f}" for k, v in kinds.items() if v >= 0.1)
            print(f"  {name} requests per pod: {listed}")
        for name, phase in (("kube-scheduler", b), ("market", m)):
            used = phase["cpu_s_by_program"].items()
            print(f"  CPU s, {name}: " + ", ".join(f"{k} {v:.2f}" for k, v in used if v >= 0.01))
    first = rows[0]
    for row in rows:
        row["market_p50_growth"] = row["market"]["p50_s"] / first["market"]["p50_s"]
        row["baseline_p50_growth"] = row["baseline"]["p50_s"] / first["baseline"]["p50_s"]
    print(f"saved {save('negotiation_e2e', {'rows': rows, 'loadavg_at_start': load})}")


if __name__ == "__main__":
    main()
