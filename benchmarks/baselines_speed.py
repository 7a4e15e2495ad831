"""Wall time of the FGD paper's six placement policies on the inflation experiment.

Two figures, each also given against `random` run in the same process (so a slower or busier
machine moves all figures together):

1. the whole `fgd-inflation` experiment (`gpuparley eval --experiment fgd-inflation` does the
   same, without the report), six policies x seeds 0-9 on the openb dev split, 130% arrived,
   seeds spread over one worker process per core: wall and CPU seconds (target: under 60 s of
   wall time on 2 cores), and each policy's mean time per run against random's;
2. one FGD run on a trace the size of the full openb pod list (8,152 pods): the dev split's
   5,706 pods plus 2,446 drawn from it at random (seeded), then inflated to 130% as usual
   (target: under 3 s), best of 3, and random's on the same trace.

Machine load matters: the CPU seconds of (1) are printed beside its wall time.
Printed and saved to benchmarks/results/baselines_speed.json.
Run: `.venv/bin/python benchmarks/baselines_speed.py [--seeds 0-9] [--repeats 3]`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import statistics
import time

import numpy as np

from gpuparley.agents.registry import PAPER_POLICIES
from gpuparley.envs.jobs import Job
from gpuparley.envs.scenario import Scenario, load_scenario
from gpuparley.evaluation.fgd_inflation import run_inflation_experiment
from gpuparley.evaluation.inflation_protocol import run_inflation
from gpuparley.evaluation.tournament import parse_seeds
from gpuparley.policy.specs import parse_policies

from _common import best_of, save

FULL_TRACE_PODS = 8_152  # openb_pod_list_default.csv


def cpu_seconds() -> float:
    """User + system CPU time of this process and its finished worker processes."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    workers = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + workers.ru_utime + workers.ru_stime


def full_size_trace(scenario: Scenario, seed: int = 0) -> list[Job]:
    """The dev split's jobs plus jobs drawn from them uniformly until there are 8,152 pods."""
    jobs = scenario.build_jobs(seed)
    rng = np.random.default_rng(seed)
    pods = sum(job.pods for job in jobs)
    extra = []
    while pods < FULL_TRACE_PODS:
        source = jobs[int(rng.integers(len(jobs)))]
        extra.append(dataclasses.replace(source, id=len(jobs) + len(extra)))
        pods += source.pods
    return [*jobs, *extra]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0-9")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    scenario = load_scenario("openb")
    policies = parse_policies(",".join(PAPER_POLICIES))
    seeds = parse_seeds(args.seeds)

    cpu_before, start = cpu_seconds(), time.perf_counter()
    results = run_inflation_experiment(scenario, policies, seeds)
    wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu_before
    per_run = {
        name: statistics.mean(r["wall_s"] for r in results.runs if r["policy"] == name)
        for name in PAPER_POLICIES
    }
    allocation = {
        name: statistics.mean(
            r["metrics"]["final_allocation_ratio@130%"] for r in results.runs if r["policy"] == name
        )
        for name in PAPER_POLICIES
    }
    workers = min(len(seeds), os.cpu_count() or 1)
    print(
        f"whole experiment, {len(PAPER_POLICIES)} policies x {len(seeds)} seeds, "
        f"{workers} workers: {wall:.1f} s wall (target < 60 s), {cpu:.1f} s CPU"
    )
    for name in PAPER_POLICIES:
        print(
            f"  {name:15s} {per_run[name]:5.2f} s/run  x{per_run[name] / per_run['random']:4.2f} "
            f"random  allocation {allocation[name]:.4f}"
        )

    trace = full_size_trace(scenario)
    fgd_s, fgd = best_of(args.repeats, lambda: run_inflation(scenario, "fgd", 0, trace=trace))
    random_s, _ = best_of(args.repeats, lambda: run_inflation(scenario, "random", 0, trace=trace))
    print(
        f"one FGD run, {len(trace)}-pod trace ({fgd['pods']} pods placed or refused at 130%): "
        f"{fgd_s:.2f} s (target < 3 s), x{fgd_s / random_s:.2f} random ({random_s:.2f} s)"
    )
    path = save(
        "baselines_speed",
        {
            "scenario": "openb",
            "seeds": seeds,
            "workers": workers,
            "experiment_wall_s": wall,
            "experiment_cpu_s": cpu,
            "target_experiment_wall_s": 60,
            "per_run_wall_s": per_run,
            "per_run_ratio_to_random": {k: v / per_run["random"] for k, v in per_run.items()},
            "final_allocation_ratio_mean": allocation,
            "full_trace_pods": len(trace),
            "full_trace_fgd_wall_s": fgd_s,
            "full_trace_random_wall_s": random_s,
            "full_trace_fgd_ratio_to_random": fgd_s / random_s,
            "target_full_trace_fgd_s": 3,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
