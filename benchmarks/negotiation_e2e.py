"""What does negotiating cost a pod? Created-to-bound latency and apiserver requests per
placement, the in-cluster market versus plain kube-scheduler, on the same workload in the same
run, for 10, 100 and 1,000 fake GPU nodes.

For each cluster size, one set of real planes (etcd, host kube-apiserver + kube-scheduler + KWOK,
three agent kube-apiservers) and one workload: `--jobs` GPU jobs (whole GPUs, 2-pod gangs, MIG
instances, time-slice shares), all arriving at once, all fitting and all lasting longer than
the measurement, so latency is the cost of the path, not queueing for capacity or other jobs'
ends:

* **market**: the jobs as pods in the agents' own planes, created before the market controller
  starts; the market (continuous clearing batched over `CLEARING_INTERVAL` simulated seconds)
  and three negotiators (scripted truthful bidders, processes) negotiate, leases are issued,
  the negotiators sync the pods to the host and the market binds them. Created = just before the
  agent-plane create, or when the market process became ready if that was later (start-up is
  not negotiation; the time its log gives): the market finds all the pods at once.
* **baseline**: the same pods created directly, for kube-scheduler, on the host, while
  kube-scheduler is paused (SIGSTOP); created = just before the create call, or when it was let
  go again (SIGCONT) if that was later. It too finds all the pods at once -- the same arrival as
  the market's, which the headline ratios compare. The incumbent as a shared cluster runs it
  (kube-scheduler + device plugin with a per-namespace `ResourceQuota`): each agent's pods in
  its own namespace, bounded by a quota on its pods and GPU resources, as the market's agents'
  host namespaces are bounded by theirs (`deploy/quotas.py`). The quotas are set to the whole
  cluster, so none refuses a pod; what they cost is the apiserver's admission keeping their
  usage (a quota status write per create, a few creates sharing one).
* **baseline, one namespace without a quota** (`baseline_one_namespace`): the same burst with
  every pod in one namespace and no quota, the comparison the README showed before; shown for
  reference.
* **baseline, each pod timed from its own create** (`baseline_as_created`): kube-scheduler
  running while the pods are created one after the other, so it binds each before the next few
  exist; shown for reference (kube-scheduler's latency for a pod alone), not compared.

Bound = when a watch of the host, established before the first pod is created
(`PlacementWatch`), first shows the (host copy of the) pod bound -- the same observer for all.

Requests per placement: the increase of `apiserver_request_total` on every apiserver involved
(host; host + agent planes for the market) from before the first create until every pod runs
(on the host, and for the market in its agent plane too: a placement's last writes follow the
binding), heartbeats left out (coordination Leases and node status: KWOK's nodes, the control
plane's elections; no placement writes one) and watches too (standing connections, counted by
the apiserver whenever they end), minus the background rate of the rest measured on the idle
planes just before (once steady), minus the benchmark's own list per namespace that starts its
watch and, for the market, minus the requests of its start-up (its own count at readiness,
saved as `market_startup_requests`: a one-off, like kube-scheduler's, which ran before the
baseline), divided by the pods.

CPU: the seconds every process of the rig used (planes, market, negotiators, the benchmark's
own client), by program, over each measured window (from kube-scheduler's resumption, or from
when the rig's poll of the market's /readyz succeeds, to the last binding), and the share of the
machine's cores that is: on a machine with few cores both windows keep the cores busy, so their
latencies follow their work, not their round trips.

Sub-steps: from the market's log, how many it closed, in how many it asked a negotiator and in
how many it took answers given ahead (`deploy/answers_ahead.py`), the median seconds of each
kind, and their span from the first sub-step's start to the last one's close.

Idle cost: requests/second on every plane with the three negotiators started and nothing to do
(no pods, no market) against the same planes without them, over `--idle-seconds` each.

    python benchmarks/negotiation_e2e.py [--nodes 10,100,1000] [--jobs 20] [--repeats 1]

Prints a table (and, per size, the median and range of each headline ratio over `--repeats`
runs, each on fresh planes) and saves benchmarks/results/negotiation_e2e.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from _apiserver_measures import (
    STANDING,
    CpuWindow,
    PlacementWatch,
    background_rates,
    latencies,
    request_breakdown,
    request_counts,
    requests_during,
    settle,
)

from gpuparley.deploy import objects
from gpuparley.deploy.cluster import nodes, planes
from gpuparley.deploy.gpu_resources import node_resources
from gpuparley.deploy.kube import Kube
from gpuparley.deploy.quotas import DEFAULT_PODS, quota
from gpuparley.deploy.workload import pods_for_job
from gpuparley.envs.resources import scenarios_dir
from gpuparley.envs.scenario import load_scenario

from _common import save

# The market rig is test code (tests/cluster/market_rig.py), outside the installed package; this
# benchmark runs from a source checkout, so it shares the rig with the end-to-end tests from there.
sys.path.append(str(Path(__file__).resolve().parents[1] / "tests" / "cluster"))
from market_rig import MarketRig, wait_quotas_counted

BASELINE_NS = "baseline"
AGENT_NS = "default"  # where the agents' pods are created in their own planes
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


@contextlib.contextmanager
def scheduler_paused(state: planes.LocalPlanes) -> Iterator[list[float]]:
    """kube-scheduler stopped (SIGSTOP) inside the block; yields a list that receives the
    perf_counter time it was let go again (SIGCONT) -- its watches deliver what it missed."""
    name = f"{state.host.name}-kube-scheduler"
    scheduler = next(proc for proc in state.processes if proc.name == name)
    resumed: list[float] = []
    os.kill(scheduler.pid, signal.SIGSTOP)
    try:
        yield resumed
    finally:
        os.kill(scheduler.pid, signal.SIGCONT)
        resumed.append(time.perf_counter())


def tenant_quota_hard(fake_nodes: list[nodes.FakeNode]) -> dict[str, str]:
    """A tenant namespace's quota in the baseline: its pods (as many as the market's agents may
    keep on the host) and each GPU resource's requests, up to the whole cluster's (the cap a
    shared cluster's operator would lower to ration; the market rations by budget instead)."""
    gpus: dict[str, int] = {}
    for node in fake_nodes:
        advertised = node_resources(node.sharing, node.gpu_count, node.replicas, node.mig_layout)
        for resource, count in advertised.items():
            gpus[resource] = gpus.get(resource, 0) + count
    hard = {f"requests.{resource}": str(count) for resource, count in sorted(gpus.items())}
    return {"pods": str(DEFAULT_PODS), **hard}


def tenant_namespaces(
    host: Kube, prefix: str, owners: list[str], hard: dict[str, str]
) -> dict[str, str]:
    """owner -> its baseline namespace, created with its quota, once every quota is counted
    (until then the apiserver refuses creates in its namespace)."""
    where = {owner: f"{prefix}-{owner}" for owner in owners}
    for owner, namespace in where.items():
        host.create("namespaces", None, {"metadata": {"name": namespace}})
        host.create("resourcequotas", namespace, quota(namespace, owner, hard))
    wait_quotas_counted(host, list(where.values()))
    return where


def run_baseline(
    state: planes.LocalPlanes, jobs: list[Any], kind: str, hard: dict[str, str]
) -> dict[str, Any]:
    """The jobs' pods for kube-scheduler on the host. `kind`: "tenants", a burst (created while
    kube-scheduler is paused, latency counted from when it goes on, as the market's from its
    readiness: it finds them all at once as the market does) into each owner's namespace
    bounded by the quota `hard`; "one-namespace", the same burst into one namespace without a
    quota; "as-created", into one namespace without a quota while kube-scheduler runs, each pod
    timed from its own create."""
    burst = kind != "as-created"
    owners = sorted({job.owner for job in jobs})
    host = Kube(state.host.kubeconfig)
    if kind == "tenants":
        where = tenant_namespaces(host, f"{BASELINE_NS}-tenant", owners, hard)
    else:
        shared = f"{BASELINE_NS}-{kind}"
        host.create("namespaces", None, {"metadata": {"name": shared}})
        where = dict.fromkeys(owners, shared)
    settle(state.host)
    _all, background = background_rates([state.host])
    created: dict[str, float] = {}
    placed_in: dict[str, str] = {}
    cpu: list[dict[str, Any]] = []
    bound: dict[str, float] = {}

    def create() -> None:
        for job in jobs:
            for pod in pods_for_job(job, scheduler=None):
                name = pod["metadata"]["name"] = f"{job.owner}-{pod['metadata']['name']}"
                placed_in[name] = where[job.owner]
                created[name] = time.perf_counter()
                host.create("pods", where[job.owner], pod)

    def place() -> tuple[None, float]:
        watch = PlacementWatch(host, sorted(set(where.values()))).start()
        if burst:
            with scheduler_paused(state) as resumed:
                create()
            created.update({name: max(at, resumed[0]) for name, at in created.items()})
        window = CpuWindow()
        if not burst:
            create()
        bound.update(watch.wait_bound(len(created), 120))
        cpu.append(window.close())
        return None, watch.wait_running(len(created), 120)

    before = [request_counts(state.host)]
    _none, requests = requests_during([state.host], background, place)
    breakdown = request_breakdown(before, [state.host], len(created))
    for name, namespace in placed_in.items():
        host.delete("pods", namespace, name)
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
    agent_planes = {a.name: Kube(state.agent(a.name).kubeconfig) for a in loaded.agents}
    created: dict[str, float] = {}
    bound: dict[str, float] = {}
    startup_requests: list[float] = []
    cpu: list[dict[str, Any]] = []

    def place() -> tuple[None, float]:
        mirrors = [(plane, AGENT_NS) for plane in agent_planes.values()]
        watch = PlacementWatch(host, namespaces, mirrors).start()
        for agent in loaded.agents:
            for job in (j for j in jobs if j.owner == agent.name):
                for pod in pods_for_job(job):
                    created[pod["metadata"]["name"]] = time.perf_counter()
                    agent_planes[agent.name].create("pods", AGENT_NS, pod)
        for agent in loaded.agents:
            rig.wait_ready(f"negotiator-{agent.name}")
        # The market's start-up (imports, building its model, checking the nodes, electing a
        # leader, listing what it watches) is not negotiation: latency counts from when it is
        # ready (or from the pod's creation if later), and its requests until then are not
        # counted either (kube-scheduler's were made before the baseline began).
        rig.start_market("--max-epochs", "3")
        rig.wait_ready("market")
        window = CpuWindow()
        ready, startup = market_ready(work / "logs" / "market.log")
        startup_requests.append(startup)
        created.update({name: max(at, ready) for name, at in created.items()})
        bound.update(watch.wait_bound(len(created), 300))
        cpu.append(window.close())
        lists = watch.wait_running(2 * len(created), 120)  # on the host and in its agent plane
        return None, lists + startup

    before = [request_counts(plane) for plane in every_plane]
    try:
        _none, requests = requests_during(every_plane, background, place)
        breakdown = request_breakdown(before, every_plane, len(created))
    finally:
        rig.stop()
        host.close()
        for plane in agent_planes.values():
            plane.close()
    substeps = substep_log(work / "logs" / "market.log")
    return {**latencies(created, bound), "pods": len(created), "market_substeps": substeps,
            "requests_per_placement": requests / len(created),
            "market_startup_requests": startup_requests[0], **cpu[0],
            "market_requests_per_pod_by_kind": breakdown,
            "idle_requests_per_s_without_negotiators": idle_without,
            "idle_requests_per_s_with_negotiators": idle_with,
            "idle_ratio": idle_with / idle_without}  # fmt: skip


def logged(market_log: Path, message: str) -> list[dict[str, Any]]:
    """The market's JSON log records with `msg` == `message`, in order."""
    found = []
    for line in market_log.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # the process's other output
        if isinstance(record, dict) and record.get("msg") == message:
            found.append(record)
    return found


def market_ready(market_log: Path) -> tuple[float, float]:
    """When the market became ready (perf_counter, from its "ready" line's time: its /readyz,
    which the rig polls every 20 ms, says so up to a poll later), and the requests it made until
    then, watches left out: start-up, not negotiation, like kube-scheduler's before the
    baseline. Its own count, not the apiservers': reading their metrics at that moment took
    about 0.1 s of CPU from the market's first sub-steps, which the baseline is not charged."""
    ready = logged(market_log, "ready")
    if not ready:
        raise RuntimeError(f"no 'ready' line in {market_log}")
    at = ready[0]["ts"] - (time.time() - time.perf_counter())
    return at, float(sum(n for verb, n in ready[0]["requests"].items() if verb != STANDING))


def substep_log(market_log: Path) -> dict[str, Any]:
    """The market's sub-steps from its log ("sub-step closed" lines): how many, how many it
    asked a negotiator in and how many it took answers given ahead in (nobody asked), the
    median seconds of each kind, and the negotiation's span from the first sub-step's start to
    the last one's close."""
    closed = logged(market_log, "sub-step closed")
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
            hard = tenant_quota_hard(nodes.fake_nodes_from_scenario(scenario))
            paced = run_baseline(state, loaded.build_jobs(0), "as-created", hard)
            bare = run_baseline(state, loaded.build_jobs(0), "one-namespace", hard)
            baseline = run_baseline(state, loaded.build_jobs(0), "tenants", hard)
            market = run_market(state, scenario, work, idle_seconds)
        finally:
            planes.down(work / "state")
    return {
        "nodes": node_count,
        "jobs": jobs,
        "baseline": baseline,
        "baseline_as_created": paced,
        "baseline_one_namespace": bare,
        "market": market,
        "latency_ratio_p50": market["p50_s"] / baseline["p50_s"],
        "latency_ratio_p99": market["p99_s"] / baseline["p99_s"],
        "requests_ratio": market["requests_per_placement"] / baseline["requests_per_placement"],
        "latency_ratio_p99_one_namespace": market["p99_s"] / bare["p99_s"],
        "requests_ratio_one_namespace": (
            market["requests_per_placement"] / bare["requests_per_placement"]
        ),
    }


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f} ms"


RATIOS = ("latency_ratio_p99", "requests_ratio", "latency_ratio_p99_one_namespace",
          "requests_ratio_one_namespace")  # fmt: skip


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per cluster size, the median and range over its repeats of each headline ratio: the
    market's latency moves from run to run on a loaded machine far more than kube-scheduler's."""
    summary = []
    for count in dict.fromkeys(row["nodes"] for row in rows):
        runs = [row for row in rows if row["nodes"] == count]
        entry: dict[str, Any] = {"nodes": count, "repeats": len(runs)}
        for ratio in RATIOS:
            values = [row[ratio] for row in runs]
            entry[ratio] = {"median": statistics.median(values), "min": min(values),
                            "max": max(values)}  # fmt: skip
        summary.append(entry)
    return summary


def print_row(row: dict[str, Any]) -> None:
    """One run's figures: latency, requests, idle cost and CPU of both sides, and where the
    requests and the CPU went."""
    count = row["nodes"]
    b, m, paced = row["baseline"], row["market"], row["baseline_as_created"]
    print(
        f"{count:>5} nodes, {m['pods']} pods | kube-scheduler p50 {b['p50_s'] * 1000:7.1f} ms"
        f" p99 {b['p99_s'] * 1000:7.1f} ms {b['requests_per_placement']:5.1f} req/pod | "
        f"market p50 {m['p50_s'] * 1000:7.1f} ms p99 {m['p99_s'] * 1000:7.1f} ms "
        f"{m['requests_per_placement']:5.1f} req/pod | x{row['latency_ratio_p50']:.1f} p50, "
        f"x{row['latency_ratio_p99']:.1f} p99, x{row['requests_ratio']:.2f} requests | idle "
        f"{m['idle_requests_per_s_with_negotiators']:.2f} vs "
        f"{m['idle_requests_per_s_without_negotiators']:.2f} req/s (x{m['idle_ratio']:.2f})"
        f" | market start-up {m['market_startup_requests']:.0f} requests"
        f" | CPU {b['cpu_s']:.2f} vs {m['cpu_s']:.2f} s, cores busy"
        f" {b['cores_busy']:.0%} vs {m['cores_busy']:.0%}"
        f" | load {row['loadavg_1_5_15'][0]:.1f}",
        flush=True,
    )
    bare = row["baseline_one_namespace"]
    print(
        f"  kube-scheduler, one namespace without a quota: p99 {_ms(bare['p99_s'])},"
        f" {bare['requests_per_placement']:.1f} req/pod"
        f" (market x{row['latency_ratio_p99_one_namespace']:.1f} p99,"
        f" x{row['requests_ratio_one_namespace']:.2f} requests)"
    )
    print(
        f"  kube-scheduler, each pod timed from its own create: p50 {_ms(paced['p50_s'])}"
        f" p99 {_ms(paced['p99_s'])}, {paced['requests_per_placement']:.1f} req/pod"
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", default="10,100,1000")
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    parser.add_argument("--repeats", type=int, default=1, help="runs per cluster size")
    args = parser.parse_args()
    rows = []
    load = os.getloadavg()
    for count in (int(n) for n in args.nodes.split(",")):
        for repeat in range(args.repeats):
            row = measure(count, args.jobs, args.idle_seconds)
            row["repeat"] = repeat
            row["loadavg_1_5_15"] = os.getloadavg()
            rows.append(row)
            print_row(row)
    first = rows[0]
    for row in rows:
        row["market_p50_growth"] = row["market"]["p50_s"] / first["market"]["p50_s"]
        row["baseline_p50_growth"] = row["baseline"]["p50_s"] / first["baseline"]["p50_s"]
    summary = summarise(rows)
    for entry in summary:
        print(
            f"{entry['nodes']:>5} nodes, {entry['repeats']} runs: "
            + ", ".join(
                f"{ratio} x{entry[ratio]['median']:.2f}"
                f" (x{entry[ratio]['min']:.2f}-x{entry[ratio]['max']:.2f})"
                for ratio in RATIOS
            )
        )
    saved = save("negotiation_e2e", {"rows": rows, "summary": summary, "loadavg_at_start": load})
    print(f"saved {saved}")


if __name__ == "__main__":
    main()
