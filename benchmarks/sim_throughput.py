"""Simulator throughput: events per second on `tiny` and `openb`, and scheduling-pass scaling.

Figures (printed and saved to benchmarks/results/sim_throughput.json):

* events/s and wall time of a full replay of `tiny` and of the `openb` dev split under first-fit
  (target: openb in under 30 s on one core; Alibaba's Go simulator needs ~10 minutes per run);
* cost per simulated event (scheduling passes included) on clusters of 100 .. 5,000 nodes, built
  by cycling the openb node list, with trace pods arriving to offer ~90% of the GPUs; reported as
  a ratio to the 100-node run in the same process next to the node ratio: the target is cost per
  event growing no faster than linearly with nodes;
* peak resident memory of the process (target: under 1 GiB).

Run: `make bench` or `.venv/bin/python benchmarks/sim_throughput.py`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from gpuparley.agents.first_fit import FirstFit
from gpuparley.envs.jobs import Job
from gpuparley.envs.scenario import load_scenario
from gpuparley.envs.simulator import Simulator
from gpuparley.envs.topology import ClusterSpec
from gpuparley.evaluation.runner import simulate

from _common import best_of, peak_rss_mib, save

NODE_COUNTS = (100, 500, 1000, 2000, 5000)
TRACE_NODES = 1213


def replay(name: str, repeats: int) -> dict[str, float]:
    scenario = load_scenario(name)
    seconds, result = best_of(repeats, lambda: simulate(scenario, "first-fit", scenario.seed))
    events = result.simulator.events_processed
    return {
        "jobs": len(result.simulator.jobs),
        "events": events,
        "wall_s": seconds,
        "events_per_s": events / seconds,
    }


def scaled_cluster(base: ClusterSpec, count: int) -> ClusterSpec:
    nodes = [
        dataclasses.replace(base.nodes[i % len(base.nodes)], name=f"n{i}") for i in range(count)
    ]
    return ClusterSpec(tuple(nodes))


def loaded_workload(pods: list[Job], cluster: ClusterSpec, seed: int) -> list[Job]:
    """Trace pods drawn with Poisson arrivals that offer ~90% of the cluster's GPUs.

    The number of pods grows with the cluster (pods per node stays that of the trace), so a
    larger cluster sees proportionally more events and the figure that matters is the cost per
    event.
    """
    rng = np.random.default_rng(seed)
    count = round(len(pods) * len(cluster.nodes) / TRACE_NODES)
    chosen = [pods[i] for i in rng.integers(0, len(pods), count)]
    mean_gpu_seconds = np.mean([j.milli_gpu / 1000 * j.duration for j in chosen])
    rate = 0.9 * cluster.gpu_count / mean_gpu_seconds  # arrivals per second
    arrivals = np.cumsum(rng.exponential(1 / rate, count))
    return [
        dataclasses.replace(job, id=i, arrival=float(t))
        for i, (job, t) in enumerate(zip(chosen, arrivals, strict=True))
    ]


def per_event_cost(cluster: ClusterSpec, jobs: list[Job], settings) -> dict[str, float]:
    def replay_once() -> Simulator:
        sim = Simulator(cluster, jobs, FirstFit(), settings)
        sim.run()
        return sim

    seconds, sim = best_of(1, replay_once)
    return {
        "jobs": len(jobs),
        "events": sim.events_processed,
        "wall_s": seconds,
        "us_per_event": seconds / sim.events_processed * 1e6,
    }


def main() -> None:
    figures: dict[str, object] = {}
    figures["tiny"] = replay("tiny", repeats=5)
    figures["openb"] = replay("openb", repeats=1)
    openb = load_scenario("openb")
    pods = openb.build_jobs(0)
    base = openb.build_cluster()
    scaling = []
    for count in NODE_COUNTS:
        cluster = scaled_cluster(base, count)
        row = per_event_cost(cluster, loaded_workload(pods, cluster, seed=count), openb.settings)
        row["nodes"] = count
        scaling.append(row)
    for row in scaling:
        row["cost_ratio"] = row["us_per_event"] / scaling[0]["us_per_event"]
        row["node_ratio"] = row["nodes"] / scaling[0]["nodes"]
    figures["scheduling_pass"] = scaling
    figures["peak_rss_mib"] = peak_rss_mib()

    print(
        f"tiny : {figures['tiny']['events']} events in {figures['tiny']['wall_s']:.3f}s "
        f"= {figures['tiny']['events_per_s']:,.0f} events/s"
    )
    print(
        f"openb: {figures['openb']['jobs']} pods, {figures['openb']['events']} events in "
        f"{figures['openb']['wall_s']:.2f}s = {figures['openb']['events_per_s']:,.0f} events/s "
        f"(target < 30 s)"
    )
    print("cost per event at ~90% offered load (ratio to the 100-node run; linear = node ratio):")
    for row in scaling:
        print(
            f"  {row['nodes']:>5} nodes, {row['jobs']:>6} pods: {row['us_per_event']:8.1f} us/event"
            f"  cost x{row['cost_ratio']:.2f}  nodes x{row['node_ratio']:.0f}"
        )
    print(f"peak RSS: {figures['peak_rss_mib']:.0f} MiB (target < 1024)")
    print(f"saved {save('sim_throughput', figures)}")


if __name__ == "__main__":
    main()
