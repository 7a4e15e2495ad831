"""What does a real per-agent control plane cost? Start-up time, memory, CPU, and bind rate.

Why: gpuparley gives every negotiating agent its own Kubernetes control plane. A managed control
plane (EKS / GKE standard) bills about $0.10/hour, ~$73/month, per cluster; this measures what
the same isolation costs as plain local processes (kube-apiserver sharing one etcd, one prefix
per agent), and how fast the host's real kube-scheduler binds GPU pods on KWOK nodes.

Measured with the real binaries from ``gpuparley cluster build`` and psutil:

* time to bring up the host plane + N agent planes (N = 1, 8, 32 by default), per profile
  (``slim``, the default, and ``full``: ``deploy/cluster/profiles.py``);
* per agent plane, after it settled: resident memory (RSS), proportional set size (PSS: shared
  pages of the one kube-apiserver binary split between the copies mapping them -- what one more
  plane really adds), and idle CPU over a quiet interval;
* etcd's memory (RSS and PSS) and its data, which lives on tmpfs and so is RAM too;
* the host's bind rate: 1,000 single-GPU pods on 500 fake 8-GPU nodes (``--no-bind`` keeps the
  last saved figures).

Results are printed and saved to ``benchmarks/results/control_plane_cost.json``.

    python benchmarks/control_plane_cost.py [--agents 1,8,32] [--profiles slim,full]
        [--full-agents 1,8] [--nodes 500] [--pods 1000] [--no-bind]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from gpuparley.deploy import objects
from gpuparley.deploy.cluster import build, host_plane, nodes, planes, processes
from gpuparley.deploy.kube import connect

RESULTS = Path(__file__).resolve().parent / "results" / "control_plane_cost.json"
MANAGED_USD_PER_MONTH = 73.0  # EKS / GKE standard control plane: $0.10/hour x 730 h
HOURS_PER_MONTH = 730.0
# Rough on-demand price of the machine resources a local plane uses (an m6i/n2-class VM split
# into its parts, ~$0.096/h for 2 vCPU + 8 GiB): stated so the comparison can be redone.
USD_PER_VCPU_HOUR = 0.0336
USD_PER_GIB_HOUR = 0.0036
SETTLE_SECONDS = 30.0  # post-start hooks and first syncs finish before the quiet interval
IDLE_SECONDS = 60.0  # long enough to take in the planes' periodic work (30-60 s loops)
UNTHROTTLED_QPS = 5000  # high enough that the scheduler itself, not its rate limiter, is measured
MIB = 2**20


def _proc(state: planes.LocalPlanes, name: str) -> processes.Proc:
    return next(p for p in state.processes if p.name == name)


def _tree_bytes(path: str) -> int:
    """Bytes allocated to the files under `path` (etcd's data on tmpfs: RAM; its WAL segments
    are preallocated, so allocated, not written, is what they hold)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):  # removed while walking
                total += os.stat(os.path.join(root, name)).st_blocks * 512
    return total


def measure_planes(n_agents: int, cache: str | None, profile: str = "slim") -> dict[str, Any]:
    """Bring up host + n agent planes, let them settle, then measure memory and idle CPU."""
    with tempfile.TemporaryDirectory(prefix="gpuparley-bench-") as tmp:
        agents = [f"a{i}" for i in range(n_agents)]
        start = time.monotonic()
        state = planes.up(
            tmp,
            nodes.default_fake_nodes(),
            agents,
            cache=cache,
            die_with_parent=True,
            ready_timeout=600,
            profile=profile,  # type: ignore[arg-type]
        )
        up_seconds = time.monotonic() - start
        try:
            time.sleep(SETTLE_SECONDS)
            cpu_before = {p.name: processes.cpu_seconds(p.pid) for p in state.processes}
            load_before = os.getloadavg()[0]
            time.sleep(IDLE_SECONDS)
            usage = {
                p.name: {
                    "rss_mib": round(processes.rss_bytes(p.pid) / MIB, 1),
                    "pss_mib": round(processes.pss_bytes(p.pid) / MIB, 1),
                    "idle_cpu_pct": round(
                        100 * (processes.cpu_seconds(p.pid) - cpu_before[p.name]) / IDLE_SECONDS,
                        2,
                    ),
                }
                for p in state.processes
            }
            etcd_data = _tree_bytes(state.etcd_data_dir)
            load_after = os.getloadavg()[0]
            alive = all(processes.is_alive(p) for p in state.processes)
        finally:
            _, remaining = planes.down(tmp)
            assert not remaining, remaining
    per_agent = [
        {"agent": a, **usage[f"{objects.agent_namespace(a)}-kube-apiserver"]} for a in agents
    ]
    host = {name: u for name, u in usage.items() if not name.startswith("agent-")}
    etcd = host["etcd"]
    return {
        "agents": n_agents,
        "profile": profile,
        "up_seconds": round(up_seconds, 2),
        "all_alive": alive,
        # The machine is shared: its 1-minute load average before and after the quiet interval.
        "load_average": [round(load_before, 2), round(load_after, 2)],
        "per_agent": per_agent,
        "per_agent_summary": {
            key: {
                "mean": round(statistics.mean(a[key] for a in per_agent), 2),
                "max": round(max(a[key] for a in per_agent), 2),
            }
            for key in ("rss_mib", "pss_mib", "idle_cpu_pct")
        },
        "etcd": {
            **etcd,
            "data_mib": round(etcd_data / MIB, 1),
            "memory_incl_data_mib": round(etcd["rss_mib"] + etcd_data / MIB, 1),
        },
        "host": host,
    }


def _pod_body(i: int) -> dict[str, Any]:
    limits = {"nvidia.com/gpu": "1", "cpu": "100m", "memory": "128Mi"}
    return {
        "metadata": {"name": f"p{i:05d}"},
        "spec": {
            "containers": [
                {"name": "main", "image": "registry.invalid/sim", "resources": {"limits": limits}}
            ]
        },
    }


def _count(core: Any, field_selector: str) -> int:
    """How many bench pods match a field selector. Served from the apiserver's watch cache
    (resourceVersion=0) and counted from raw JSON, so polling barely loads the machine."""
    resp = core.list_namespaced_pod(
        "bench", field_selector=field_selector, resource_version="0", _preload_content=False
    )
    return len(json.loads(resp.data)["items"])


def measure_bind_rate(
    n_nodes: int,
    n_pods: int,
    cache: str | None,
    scheduler_qps: int = host_plane.SCHEDULER_QPS,
    pause_kwok: bool = False,
) -> dict[str, Any]:
    """Bind rate of the host's real kube-scheduler for a burst of single-GPU pods.

    The scheduler is paused (SIGSTOP) while the pods are created, so the measurement is the
    scheduler's own throughput (queue -> filter/score -> bind call), not how fast this Python
    client can POST pods; then it is resumed (SIGCONT) and the binds are timed. With
    ``pause_kwok`` KWOK is also held until every pod is bound, so the 2 cores are left to
    apiserver + etcd + scheduler (KWOK otherwise turns bound pods Running concurrently).
    """
    import signal
    import threading

    from kubernetes import client

    with tempfile.TemporaryDirectory(prefix="gpuparley-bench-") as tmp:
        t0 = time.monotonic()
        state = planes.up(
            tmp,
            nodes.uniform_gpu_nodes(n_nodes),
            [],
            cache=cache,
            die_with_parent=True,
            ready_timeout=300,
            scheduler_qps=scheduler_qps,
        )
        up_seconds = time.monotonic() - t0
        scheduler = _proc(state, "host-kube-scheduler")
        kwok = _proc(state, "host-kwok")
        local = threading.local()

        def make(i: int) -> None:
            if not hasattr(local, "core"):
                local.core = client.CoreV1Api(connect(state.host.kubeconfig))
            local.core.create_namespaced_pod("bench", _pod_body(i))

        try:
            with connect(state.host.kubeconfig) as api:
                core = client.CoreV1Api(api)
                core.create_namespace({"metadata": {"name": "bench"}})
                os.kill(scheduler.pid, signal.SIGSTOP)
                if pause_kwok:
                    os.kill(kwok.pid, signal.SIGSTOP)
                try:
                    start = time.monotonic()
                    with ThreadPoolExecutor(8) as pool:
                        list(pool.map(make, range(n_pods)))
                    created = time.monotonic() - start
                finally:
                    os.kill(scheduler.pid, signal.SIGCONT)
                resumed = time.monotonic()
                cpu_before = processes.cpu_seconds(scheduler.pid)
                bound_at = running_at = float("nan")
                deadline = resumed + 300
                while time.monotonic() < deadline:
                    now = time.monotonic() - resumed
                    if bound_at != bound_at and _count(core, "spec.nodeName=") == 0:
                        bound_at = now  # (NaN != NaN: not recorded yet)
                        if pause_kwok:
                            os.kill(kwok.pid, signal.SIGCONT)
                    if bound_at == bound_at and _count(core, "status.phase!=Running") == 0:
                        running_at = now
                        break
                    time.sleep(0.1)
                if pause_kwok:
                    os.kill(kwok.pid, signal.SIGCONT)
                scheduler_cpu = processes.cpu_seconds(scheduler.pid) - cpu_before
                usage = {
                    p.name: {"rss_mib": round(processes.rss_bytes(p.pid) / MIB, 1)}
                    for p in state.processes
                }
                per_node = _pods_per_node(core)
        finally:
            _, remaining = planes.down(tmp)
            assert not remaining, remaining
    return {
        "nodes": n_nodes,
        "gpus_per_node": 8,
        "pods": n_pods,
        "up_seconds_with_nodes": round(up_seconds, 2),
        "client_create_seconds": round(created, 2),
        "all_bound_seconds_after_resume": round(bound_at, 2),
        "all_running_seconds_after_resume": round(running_at, 2),
        "binds_per_second": round(n_pods / bound_at, 1) if bound_at == bound_at else 0.0,
        "scheduler_cpu_seconds": round(scheduler_cpu, 2),
        "nodes_used": len(per_node),
        "max_pods_per_node": max(per_node.values(), default=0),
        "scheduler_client_qps": scheduler_qps,
        "kwok_paused_while_binding": pause_kwok,
        "host_usage_after": usage,
    }


def _pods_per_node(core: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for pod in core.list_namespaced_pod("bench").items:
        if pod.spec.node_name:
            counts[pod.spec.node_name] = counts.get(pod.spec.node_name, 0) + 1
    return counts


def monthly_cost(rss_mib: float, cpu_pct: float) -> float:
    """What a plane's memory and idle CPU would cost per month at the stated VM prices."""
    return HOURS_PER_MONTH * (rss_mib / 1024 * USD_PER_GIB_HOUR + cpu_pct / 100 * USD_PER_VCPU_HOUR)


def _print_planes(r: dict[str, Any]) -> None:
    s, etcd = r["per_agent_summary"], r["etcd"]
    print(
        f"  up in {r['up_seconds']:.1f}s; per {r['profile']} agent plane: "
        f"RSS {s['rss_mib']['mean']:.0f} MiB (max {s['rss_mib']['max']:.0f}), "
        f"PSS {s['pss_mib']['mean']:.0f} MiB (max {s['pss_mib']['max']:.0f}), "
        f"idle CPU {s['idle_cpu_pct']['mean']:.2f}% of a core "
        f"(max {s['idle_cpu_pct']['max']:.2f}%); "
        f"etcd RSS {etcd['rss_mib']:.0f} MiB + data {etcd['data_mib']:.0f} MiB on tmpfs"
    )
    for name, u in r["host"].items():
        if name != "etcd":
            print(
                f"    {name:<30} RSS {u['rss_mib']:>6.0f} MiB  {u['idle_cpu_pct']:>5.2f}% idle CPU"
            )


def _cost(results: dict[str, Any]) -> dict[str, Any]:
    """Monthly cost of one agent plane at the stated VM prices, per profile (largest run)."""
    out: dict[str, Any] = {
        "managed_usd_per_month_per_plane": MANAGED_USD_PER_MONTH,
        "assumptions": {
            "usd_per_vcpu_hour": USD_PER_VCPU_HOUR,
            "usd_per_gib_hour": USD_PER_GIB_HOUR,
        },
    }
    for run in results["planes"]:
        s = run["per_agent_summary"]
        local = monthly_cost(s["pss_mib"]["mean"], s["idle_cpu_pct"]["mean"])
        out[f"local_usd_per_month_per_{run['profile']}_plane"] = round(local, 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", default="1,8,32", help="agent counts, slim profile")
    parser.add_argument("--full-agents", default="1,8", help="agent counts, full profile")
    parser.add_argument("--nodes", type=int, default=500)
    parser.add_argument("--pods", type=int, default=1000)
    parser.add_argument("--no-bind", action="store_true", help="keep the saved bind figures")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()

    missing = build.missing_binaries(build.PLANE_COMPONENTS, args.cache_dir)
    if missing:
        raise SystemExit(f"missing {missing}: run `{build.BUILD_COMMAND}` first")
    previous = json.loads(args.output.read_text()) if args.output.is_file() else {}
    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "kernel": platform.release(),
        },
        "versions": {
            n: build.module_version(build.COMPONENTS[n]) for n in ("etcd", "kube-apiserver", "kwok")
        },
        "settle_seconds": SETTLE_SECONDS,
        "idle_seconds": IDLE_SECONDS,
        "planes": [],
    }
    runs = [("slim", int(x)) for x in args.agents.split(",") if x]
    runs += [("full", int(x)) for x in args.full_agents.split(",") if x]
    for profile, n in runs:
        print(f"bringing up host + {n} {profile} agent plane(s) ...", flush=True)
        r = measure_planes(n, args.cache_dir, profile)
        results["planes"].append(r)
        _print_planes(r)

    if args.no_bind:
        results["bind"] = previous.get("bind", [])
    else:
        results["bind"] = []
        for qps, pause_kwok in ((host_plane.SCHEDULER_QPS, False), (UNTHROTTLED_QPS, True)):
            print(
                f"bind rate: {args.pods} pods on {args.nodes} fake 8-GPU nodes, scheduler client "
                f"QPS {qps}, KWOK {'paused until bound' if pause_kwok else 'running'} ...",
                flush=True,
            )
            b = measure_bind_rate(args.nodes, args.pods, args.cache_dir, qps, pause_kwok)
            results["bind"].append(b)
            print(
                f"  {b['pods']} pods bound in {b['all_bound_seconds_after_resume']:.2f}s "
                f"= {b['binds_per_second']:.0f} binds/s; {b['nodes_used']} nodes used"
            )
    results["cost"] = _cost(results)
    for key, value in results["cost"].items():
        if key.startswith("local_"):
            print(
                f"cost: {key} = ${value:.2f} (PSS and idle CPU at ${USD_PER_GIB_HOUR}/GiB-h + "
                f"${USD_PER_VCPU_HOUR}/vCPU-h) vs ~${MANAGED_USD_PER_MONTH:.0f} managed"
            )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"saved {args.output}")


if __name__ == "__main__":
    main()
