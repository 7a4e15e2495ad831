"""Training time and environment throughput of the default training config.

Figures (printed and saved to benchmarks/results/training_speed.json):

* the wall time, CPU time and env steps/s (learner decisions, PPO updates and the periodic
  evaluations included) of `gpuparley train --config default` run to its end (target: under
  20 minutes on 2 cores), with the machine's load average before and after: the development
  machine is shared, so wall time over CPU time says how much of a core the run had;
* environment agent-steps/s on the generated training scenarios (random legal actions, the
  first `--scenarios` training generator seeds, auction), as a ratio to `tiny`, the smallest
  bundled scenario, measured in the same process.

Run: `.venv/bin/python benchmarks/training_speed.py [--steps N] [--run-dir DIR]`; `--steps`
stops the training early (a quick check; the saved figures then say so), `--run-dir` keeps the
checkpoints (by default they go to a temporary folder).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from gpuparley.envs.market.parallel_env import GPUMarketEnv
from gpuparley.envs.scenario import Scenario, load_scenario
from gpuparley.envs.scenario_generator import sample_scenario
from gpuparley.train.config import load_config
from gpuparley.train.trainer import TRAINING_RECORD, train

from _common import save

ENV_STEPS = 20_000


def agent_steps_per_second(scenarios: list[Scenario], steps: int = ENV_STEPS) -> float:
    """Agent-steps/s inside `reset`/`step` with random legal actions, cycling the scenarios."""
    rng = np.random.default_rng(0)
    spent, agent_steps, index = 0.0, 0, 0
    env = None
    observations: dict = {}
    for _ in range(steps):
        if env is None or not env.agents:
            env = GPUMarketEnv(scenarios[index % len(scenarios)], mechanism="auction")
            begin = time.perf_counter()
            observations, _ = env.reset(seed=index)
            spent += time.perf_counter() - begin
            index += 1
        actions = {
            agent: int(rng.choice(np.flatnonzero(obs["action_mask"])))
            for agent, obs in observations.items()
        }
        agent_steps += len(actions)
        begin = time.perf_counter()
        observations, *_ = env.step(actions)
        spent += time.perf_counter() - begin
    return agent_steps / spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None, help="stop training after N steps")
    parser.add_argument("--run-dir", type=Path, default=None, help="keep the run here")
    parser.add_argument("--scenarios", type=int, default=20, help="generated scenarios to step")
    args = parser.parse_args()

    config = load_config("default")
    assert config.generator is not None
    ranges = config.generator.scenario_ranges()
    seeds = config.generator.seed_range()[: args.scenarios]
    generated = agent_steps_per_second([sample_scenario(seed, ranges) for seed in seeds])
    tiny = agent_steps_per_second([load_scenario("tiny")])
    print(
        f"env agent-steps/s: generated {generated:,.0f}, tiny {tiny:,.0f} (x{generated / tiny:.2f})"
    )

    output = args.run_dir or Path(tempfile.mkdtemp(prefix="gpuparley-training-speed-"))
    updates: dict[str, object] = {"output_dir": str(output)}
    if args.steps is not None:
        updates["total_timesteps"] = args.steps
    load_before = os.getloadavg()
    result = train(config.model_copy(update=updates))
    load_after = os.getloadavg()
    record = json.loads((result.run_dir / TRAINING_RECORD).read_text())
    minutes = record["wall_seconds"] / 60
    print(
        f"training ({record['timesteps']:,} steps): {minutes:.1f} min wall "
        f"(target < 20), {record['cpu_seconds'] / 60:.1f} min CPU, "
        f"{record['steps_per_second']:,.0f} steps/s; load average {load_before[0]:.1f} -> "
        f"{load_after[0]:.1f}"
    )
    path = save(
        "training_speed",
        {
            "config": "default",
            "complete_run": args.steps is None,
            "timesteps": record["timesteps"],
            "wall_seconds": record["wall_seconds"],
            "cpu_seconds": record["cpu_seconds"],
            "steps_per_second": record["steps_per_second"],
            "target_wall_seconds": 20 * 60,
            "load_average_before_after": [load_before[0], load_after[0]],
            "evaluation_score": result.metrics["score"],
            "env_agent_steps_per_s": {
                "generated": generated,
                "tiny": tiny,
                "ratio_generated_to_tiny": generated / tiny,
                "generated_seeds": [seeds.start, seeds.stop - 1],
            },
        },
    )
    print(f"saved {path}")


if __name__ == "__main__":
    main()
