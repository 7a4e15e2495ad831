"""`--experiment fgd-inflation`: the FGD paper's allocation-vs-arrived-workload curves over seeds.

Each policy x seed x target is one `inflation_protocol.run_inflation` (pods placed one at a
time with no departures until `target` x GPU capacity has arrived; the paper's figure is 130%).
A record holds one policy x seed: its metrics per target, suffixed `@<target %>`
(`final_allocation_ratio@130%`), and the curve of the largest target. Only central schedulers
replay that protocol; a market has no per-pod placement choice, so market specs are refused up
front.
"""

from __future__ import annotations

from collections.abc import Sequence

from gpuparley.envs.scenario import Scenario
from gpuparley.evaluation.inflation_protocol import run_inflation
from gpuparley.evaluation.results import Results
from gpuparley.evaluation.tournament import Progress, each_run, tournament_config
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
) -> Results:
    """Every scheduler x seed x target; each record keeps the largest target's curve."""
    check_schedulers(policies)
    config = tournament_config(scenario, policies, seeds, experiment=EXPERIMENT)
    config["targets"] = list(targets)
    results = Results(config=config)
    for policy, seed, report in each_run(policies, seeds, on_progress):
        metrics: dict[str, float] = {}
        wall = 0.0
        for index, target in enumerate(targets):
            raw = run_inflation(scenario, policy.name, seed, target=target)
            metrics.update({target_key(key, target): raw[key] for key in PER_TARGET})
            metrics["gpus"] = raw["gpus"]
            wall += raw["wall_s"]
            report((index + 1) / len(targets))
        results.runs.append(
            {
                "policy": policy.spec,
                "seed": seed,
                "scenario": scenario.name,
                "metrics": metrics,
                "arrived": raw["arrived"],
                "allocation_ratio": raw["allocation_ratio"],
                "wall_s": wall,
            }
        )
    return results
