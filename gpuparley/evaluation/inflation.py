"""`--experiment fgd-inflation`: the FGD paper's allocation-vs-arrived-workload curves over seeds.

Each policy x seed is one `experiments.inflation.run_inflation` (pods placed one at a time with
no departures until 130% of GPU capacity has arrived). Only central schedulers replay that
protocol; a market has no per-pod placement choice, so market specs are refused up front.
"""

from __future__ import annotations

from collections.abc import Sequence

from gpuparley.envs.scenario import Scenario
from gpuparley.evaluation.policies import Policy
from gpuparley.evaluation.results import Results
from gpuparley.evaluation.tournament import Progress, each_run, tournament_config
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
) -> Results:
    """Every scheduler x seed; each record keeps the curve (`arrived`, `allocation_ratio`)."""
    check_schedulers(policies)
    results = Results(config=tournament_config(scenario, policies, seeds, experiment=EXPERIMENT))
    for policy, seed, report in each_run(policies, seeds, on_progress):
        raw = run_inflation(scenario, policy.name, seed)
        report(1.0)
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
    return results
