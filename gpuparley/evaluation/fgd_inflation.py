"""`--experiment fgd-inflation`: the FGD paper's allocation-vs-arrived-workload curves over seeds.

Each policy x seed x target is one `inflation_protocol.run_inflation` (pods placed one at a
time with no departures until `target` x GPU capacity has arrived; the paper's figure is 130%).
A record holds one policy x seed: its metrics per target, suffixed `@<target %>`
(`final_allocation_ratio@130%`), and the curve of the largest target. Only central schedulers
replay that protocol; a market has no per-pod placement choice, so market specs are refused up
front. The runs are independent and deterministic, so seeds go to worker processes (one per
core by default), each running every policy and target of its seeds; or each policy x seed is
one cell of a `CellMap` (a Ray task).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from itertools import repeat
from typing import Any

from gpuparley.envs.scenario import Scenario
from gpuparley.evaluation.cells import CellMap
from gpuparley.evaluation.inflation_protocol import run_inflation
from gpuparley.evaluation.results import Results
from gpuparley.evaluation.tournament import Progress, tournament_config
from gpuparley.policy.specs import PolicySpec

EXPERIMENT = "fgd-inflation"
DEFAULT_TARGETS = (1.3,)
PER_TARGET = ("final_allocation_ratio", "unallocated_gpus", "pods", "pods_unplaced")


def target_key(metric: str, target: float) -> str:
    """The metric's name for one target: `final_allocation_ratio@130%`."""
    return f"{metric}@{target:.0%}"


def parse_targets(text: str) -> list[float]:
    """Targets from `1.0,1.3` (shares of GPU capacity, ascending, each in (0, 5])."""
    try:
        targets = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(
            f"bad --targets {text!r}: use shares of GPU capacity such as 1.0,1.3"
        ) from None
    if not targets or any(not 0 < t <= 5 for t in targets):
        raise ValueError(f"bad --targets {text!r}: each target must be in (0, 5], e.g. 1.3")
    if len({target_key("", t) for t in targets}) != len(targets):
        raise ValueError(f"bad --targets {text!r}: targets repeat (to the percent)")
    return sorted(targets)


def check_schedulers(policies: Sequence[PolicySpec]) -> None:
    """ValueError naming the market specs, which the inflation protocol cannot run."""
    markets = [policy.spec for policy in policies if policy.is_market]
    if markets:
        raise ValueError(
            f"the {EXPERIMENT} experiment replays a central scheduler's per-pod placement; "
            f"market policies cannot run it: {', '.join(markets)}"
        )


def run_inflation_experiment(
    scenario: Scenario,
    policies: Sequence[PolicySpec],
    seeds: Sequence[int],
    targets: Sequence[float] = DEFAULT_TARGETS,
    on_progress: Progress | None = None,
    workers: int | None = None,
    cells: CellMap | None = None,
) -> Results:
    """Every scheduler x seed x target; each record keeps the largest target's curve.

    `workers` processes share the seeds (default: one per CPU core, at most one per seed; 1
    runs everything in this process), or `cells` runs each policy x seed; the records are the
    same either way."""
    check_schedulers(policies)
    config = tournament_config(scenario, policies, seeds, experiment=EXPERIMENT)
    config["targets"] = list(targets)
    results = Results(config=config)
    names = [policy.name for policy in policies]
    if cells is not None:
        order = [(seed, policy) for seed in seeds for policy in policies]
        arguments = [(scenario, policy.name, seed, tuple(targets)) for seed, policy in order]
        labels = [f"{policy.spec} seed {seed}" for seed, policy in order]
        records = cells(policy_record, arguments, labels, on_progress)
        for (seed, policy), record in zip(order, records, strict=True):
            results.runs.append({"policy": policy.spec, "seed": seed, **record})
        return results
    count = workers or min(len(seeds), os.cpu_count() or 1)
    pool = ProcessPoolExecutor(count) if count > 1 else None
    per_seed: Iterable[list[dict[str, Any]]] = (
        pool.map(seed_records, repeat(scenario), repeat(names), seeds, repeat(tuple(targets)))
        if pool is not None
        else (seed_records(scenario, names, seed, targets) for seed in seeds)
    )
    total = len(policies) * len(seeds)
    try:
        if on_progress is not None:
            on_progress(0.0, f"0/{total} runs")
        for done, (seed, records) in enumerate(zip(seeds, per_seed, strict=True), start=1):
            for policy, record in zip(policies, records, strict=True):
                results.runs.append({"policy": policy.spec, "seed": seed, **record})
            if on_progress is not None:
                runs = done * len(policies)
                on_progress(float(runs), f"seed {seed} done ({runs}/{total} runs)")
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return results


def seed_records(
    scenario: Scenario, names: Sequence[str], seed: int, targets: Sequence[float]
) -> list[dict[str, Any]]:
    """One record per named scheduler for one seed (`policy_record`); the runs of a target
    share its pods (`inflation_protocol.seed_workload` keeps them)."""
    return [policy_record(scenario, name, seed, targets) for name in names]


def policy_record(
    scenario: Scenario, name: str, seed: int, targets: Sequence[float]
) -> dict[str, Any]:
    """One scheduler on one seed: its metrics per target and the largest target's curve."""
    record: dict[str, Any] = {"scenario": scenario.name, "metrics": {}, "wall_s": 0.0}
    for target in targets:
        raw = run_inflation(scenario, name, seed, target=target)
        record["metrics"].update({target_key(key, target): raw[key] for key in PER_TARGET})
        record["metrics"]["gpus"] = raw["gpus"]
        record.update(arrived=raw["arrived"], allocation_ratio=raw["allocation_ratio"])
        record["wall_s"] += raw["wall_s"]
    return record
