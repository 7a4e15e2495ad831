"""Ray scaling: an evaluation sweep serial vs on 2 Ray workers, and RLlib vs sb3 training speed.

1. The same tournament (`timeslice-noisy`, three schedulers and two markets, seeds 0-3: 20
   cells of 0.2-4 s) in this process and as Ray tasks on a local Ray with 2 CPUs; the records
   must be equal (wall times aside). Reported: both wall times, their ratio (target >= 1.7x
   on 2 cores), and the Ray start/stop cost on top.
2. The default training config for `--steps` learner decisions on each backend (no evaluation
   inside the window): steps/s as each trainer measures it (sampling + learning).

Both ratios are against a baseline run in the same process. The machine's load average is
recorded before and after: on a shared machine the ratios move with it.

    python benchmarks/ray_scaling.py [--steps 30720]
    # loopback only (what the figures in the README used):
    unshare --net -- sh -c 'ip link set lo up && exec python benchmarks/ray_scaling.py'
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from gpuparley.envs.scenario import load_scenario
from gpuparley.evaluation.ray_sweep import ray_cells
from gpuparley.evaluation.tournament import run_tournament
from gpuparley.policy.specs import parse_policies
from gpuparley.train.config import load_config
from gpuparley.train.rllib_backend import train_rllib
from gpuparley.train.trainer import train

from _common import save

SCENARIO = "timeslice-noisy"
POLICIES = "fgd,themis,kube-default,scripted:truthful@auction,scripted:truthful@bargain"
SEEDS = [0, 1, 2, 3]
WORKERS = 2


def without_timings(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in run.items() if k != "wall_s"} for run in runs]


def makespan(walls: list[float], workers: int) -> float:
    """How long `workers` take over cells of these wall times, each taking the next cell in the
    list when it is free (what Ray does with tasks submitted in that order)."""
    free = [0.0] * workers
    for wall in walls:
        free[free.index(min(free))] += wall
    return max(free)


def eval_sweep() -> dict[str, Any]:
    scenario, policies = load_scenario(SCENARIO), parse_policies(POLICIES)
    start = time.perf_counter()
    serial = run_tournament(scenario, policies, SEEDS)
    serial_s = time.perf_counter() - start
    start = time.perf_counter()
    with ray_cells(num_cpus=WORKERS) as cells:
        ready = time.perf_counter()
        on_ray = run_tournament(scenario, policies, SEEDS, cells=cells)
        ray_s = time.perf_counter() - ready
    total_s = time.perf_counter() - start
    assert without_timings(on_ray.runs) == without_timings(serial.runs), "results differ"
    return {
        "sweep": f"{SCENARIO}: {POLICIES}, seeds {SEEDS[0]}-{SEEDS[-1]}",
        "cells": len(serial.runs),
        "serial_s": serial_s,
        "ray_workers": WORKERS,
        "ray_s": ray_s,
        "ray_with_start_stop_s": total_s,
        "speedup": serial_s / ray_s,
        "speedup_with_start_stop": serial_s / total_s,
        # the schedule of the serial run's cell times: in the list's order, and as submitted
        # (markets first, `run_tournament`), against the ideal (half the total)
        "schedule_list_order_s": makespan([run["wall_s"] for run in serial.runs], WORKERS),
        "schedule_markets_first_s": makespan(
            [run["wall_s"] for run in serial.runs if run["mechanism"]]
            + [run["wall_s"] for run in serial.runs if not run["mechanism"]],
            WORKERS,
        ),
        "schedule_ideal_s": sum(run["wall_s"] for run in serial.runs) / WORKERS,
        "results_equal": True,
    }


def training_speed(steps: int) -> dict[str, Any]:
    figures: dict[str, Any] = {"config": "default", "steps": steps}
    with tempfile.TemporaryDirectory() as folder:
        base = load_config("default").model_copy(
            update={"total_timesteps": steps, "output_dir": str(Path(folder))}
        )
        quiet = base.evaluation.model_copy(update={"every": 10 * steps, "max_epochs": 1})
        base = base.model_copy(update={"evaluation": quiet})
        sb3 = train(base.model_copy(update={"name": "bench-sb3"}))
        rllib = train_rllib(
            base.model_copy(update={"name": "bench-rllib", "backend": "rllib"}), None
        )
    figures.update(
        sb3_steps_per_s=sb3.steps_per_second,
        rllib_steps_per_s=rllib.steps_per_second,
        rllib_env_runners=base.rllib.env_runners,
        rllib_vs_sb3=rllib.steps_per_second / sb3.steps_per_second,
    )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30_720)
    args = parser.parse_args()
    load_before = os.getloadavg()
    sweep = eval_sweep()
    print(
        f"eval sweep ({sweep['cells']} cells): serial {sweep['serial_s']:.1f} s, "
        f"{WORKERS} Ray workers {sweep['ray_s']:.1f} s: x{sweep['speedup']:.2f} "
        f"(x{sweep['speedup_with_start_stop']:.2f} counting Ray's start and stop); "
        "results equal"
    )
    print(
        f"schedule of the serial cell times on {WORKERS} workers: list order "
        f"{sweep['schedule_list_order_s']:.1f} s, markets first "
        f"{sweep['schedule_markets_first_s']:.1f} s, ideal {sweep['schedule_ideal_s']:.1f} s"
    )
    speed = training_speed(args.steps)
    print(
        f"training, default config, {args.steps:,} steps: sb3 {speed['sb3_steps_per_s']:,.0f} "
        f"steps/s, RLlib ({speed['rllib_env_runners']} env runner) "
        f"{speed['rllib_steps_per_s']:,.0f} steps/s: x{speed['rllib_vs_sb3']:.2f}"
    )
    load_after = os.getloadavg()
    print(f"load average (1/5/15 min) before {load_before}, after {load_after}")
    path = save(
        "ray_scaling",
        {
            "eval_sweep": sweep,
            "training": speed,
            "load_average_before": load_before,
            "load_average_after": load_after,
            "cpus": os.cpu_count(),
        },
    )
    print(f"saved {path}")


if __name__ == "__main__":
    main()
