"""`--experiment fgd-inflation`: the FGD paper's allocation-vs-arrived-workload curves over seeds.

Each policy x seed is one `experiments.inflation.run_inflation` (pods placed one at a time with
no departures until 130% of GPU capacity has arrived). Only central schedulers replay that
protocol; a market has no per-pod placement choice, so market specs are refused up front.
The runs are independent and deterministic, so seeds go to worker processes (one per core by
default), each running every policy of its seeds; the records are the same with any number.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from itertools import repeat
from typing import Any

from gpuparley.envs.scenario import Scenario
from gpuparley.evaluation.policies import Policy
from gpuparley.evaluation.results import Results
from gpuparley.evaluation.tournament import Progress, tournament_config
from gpuparley.experiments.inflation import run_inflation

EXPERIMENT = "fgd-inflation"
METRICS = ("final_allocation_ratio", "unallocated_gpus", "gpus", "pods", "pods_unplaced")


def check_schedulers(policies: Sequence[Policy]) -> None:
    """ValueError naming the market specs, which the inflation protocol cannot run."""
    markets = [policy.spec for policy in policies if policy.is_market]
    if markets:
        raise ValueError(
            f"the {EXPERIMENT} experiment replays a central scheduler's per-pod placement; "
            f"market policies cannot run it: {', '.join(markets)}"
        )


def run_inflation_experiment(
    scenario: Scenario,
    policies: Sequence[Policy],
    seeds: Sequence[int],
    on_progress: Progress | None = None,
    workers: int | None = None,
) -> Results:
    """Every scheduler x seed; each record keeps the curve (`arrived`, `allocation_ratio`).

    `workers` processes share the seeds (default: one per CPU core, at most one per seed; 1
    runs everything in this process)."""
    check_schedulers(policies)
    results = Results(config=tournament_config(scenario, policies, seeds, experiment=EXPERIMENT))
    names = [policy.name for policy in policies]
    count = workers or min(len(seeds), os.cpu_count() or 1)
    pool = ProcessPoolExecutor(count) if count > 1 else None
    per_seed: Iterable[list[dict[str, Any]]] = (
        pool.map(seed_runs, repeat(scenario), repeat(names), seeds)
        if pool is not None
        else (seed_runs(scenario, names, seed) for seed in seeds)
    )
    total = len(policies) * len(seeds)
    try:
        if on_progress is not None:
            on_progress(0.0, f"0/{total} runs")
        for done, (seed, raws) in enumerate(zip(seeds, per_seed, strict=True), start=1):
            for policy, raw in zip(policies, raws, strict=True):
                results.runs.append(
                    {
                        "policy": policy.spec,
                        "seed": seed,
                        "scenario": scenario.name,
                        "metrics": {key: raw[key] for key in METRICS},
                        "arrived": raw["arrived"],
                        "allocation_ratio": raw["allocation_ratio"],
                        "wall_s": raw["wall_s"],
                    }
                )
            if on_progress is not None:
                runs = done * len(policies)
                on_progress(float(runs), f"seed {seed} done ({runs}/{total} runs)")
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return results


def seed_runs(scenario: Scenario, names: Sequence[str], seed: int) -> list[dict[str, Any]]:
    """`run_inflation` of each named scheduler on one seed, in order (they share its pods)."""
    return [run_inflation(scenario, name, seed) for name in names]
