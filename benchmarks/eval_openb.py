"""Wall time of the six incumbent schedulers replaying the openb dev split.

Each of kube-default, volcano, kai, kueue, fgd and themis replays the `openb` scenario (1,213
GPU nodes, 5,706 dev pods) through `gpuparley.evaluation.runner.simulate`, the path the
evaluation uses; first-fit runs in the same process as the yardstick, and each wall time is
also given as a ratio to it (so a slower machine moves all figures together). Target: all six
in under 5 minutes on 2 cores. A few headline metrics are saved next to the timings as a
sanity check.

Printed and saved to benchmarks/results/eval_openb.json.
Run: `.venv/bin/python benchmarks/eval_openb.py [--seed N]`.
"""

from __future__ import annotations

import argparse

from gpuparley.agents.registry import INCUMBENTS
from gpuparley.envs.scenario import load_scenario
from gpuparley.evaluation.runner import simulate

from _common import best_of, peak_rss_mib, save

HEADLINE = (
    "jobs_finished",
    "jct_mean",
    "queueing_delay_mean",
    "allocation_ratio_mean",
    "gangs_partially_held",
    "deadlock_episodes",
    "evictions",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    scenario = load_scenario("openb")
    runs = {}
    baseline, _ = best_of(1, lambda: simulate(scenario, "first-fit", args.seed))
    print(f"{'first-fit':13s} {baseline:7.1f} s  (yardstick)")
    for name in INCUMBENTS:
        seconds, result = best_of(1, lambda name=name: simulate(scenario, name, args.seed))
        runs[name] = {
            "wall_s": seconds,
            "ratio_to_first_fit": seconds / baseline,
            "events": result.simulator.events_processed,
            **{key: result.metrics[key] for key in HEADLINE},
        }
        print(f"{name:13s} {seconds:7.1f} s  x{seconds / baseline:5.1f} first-fit")
    total = sum(run["wall_s"] for run in runs.values())
    print(f"all six: {total:.1f} s (target < 300 s); peak RSS {peak_rss_mib():.0f} MiB")
    path = save(
        "eval_openb",
        {
            "scenario": "openb",
            "seed": args.seed,
            "first_fit_wall_s": baseline,
            "incumbents": runs,
            "total_wall_s": total,
            "target_total_s": 300,
            "peak_rss_mib": peak_rss_mib(),
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
