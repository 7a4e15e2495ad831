"""Environment throughput: agent-steps per second of `gpu_market_v1`, and how a step's cost grows.

Figures (printed and saved to benchmarks/results/env_throughput.json):

* agent-steps/s on `tiny` (3 agents) for both mechanisms; target >= 20,000 on one core;
* the same at `openb` scale (1,213 nodes, 5,706 pods) with 8 agents;
* simulated jobs per second of whole truthful-market episodes on `openb-loaded` (continuous
  clearing, FGD placement), as a ratio to the FGD scheduler replaying the same jobs in the same
  process (what one market decision costs over one scheduling decision);
* cost per environment step as the number of agents grows 2 -> 64 (on `gang-heavy`) and as the
  cluster grows 100 -> 5,000 nodes (gang-heavy's node groups repeated), each as a ratio to the
  smallest run in the same process.

Agents choose uniformly among their legal actions. `agent_steps_per_s` is the environment's
own throughput: agent-steps divided by the time spent inside `reset` and `step` (the policy is
not the environment); `loop_agent_steps_per_s` divides by the whole loop, this random policy
included. Each figure is the best of `REPEATS` runs, the one least disturbed by other load on
the machine.

Run: `.venv/bin/python benchmarks/env_throughput.py` (all figures), or with `--quick` only the
`tiny` rates and the `openb-loaded` jobs per second (saved as env_throughput_quick.json).
"""

from __future__ import annotations

import sys
import time

import numpy as np

from gpuparley.agents.negotiators.simple import Truthful
from gpuparley.envs import gpu_market_v1
from gpuparley.envs.market.episode import play_episode
from gpuparley.envs.scenario import load_scenario
from gpuparley.evaluation.runner import simulate

from _common import peak_rss_mib, save

STEPS = 15_000  # about 20 episodes of `tiny`: the figure depends on the episodes drawn
REPEATS = 3


def throughput(steps: int = STEPS, repeats: int = REPEATS, **env_kwargs) -> dict[str, float]:
    """The best of `repeats` runs of `steps` steps (the resets between episodes included):
    agent-steps/s of the environment alone and of the whole loop, and microseconds per step."""
    runs = [_run(steps, **env_kwargs) for _ in range(repeats)]
    env_seconds = min(run[1] for run in runs)
    loop_seconds = min(run[2] for run in runs)
    agents, agent_steps = runs[0][0], runs[0][3]
    return {
        "agents": agents,
        "agent_steps_per_s": agent_steps / env_seconds,
        "loop_agent_steps_per_s": agent_steps / loop_seconds,
        "us_per_step": env_seconds / steps * 1e6,
    }


def _run(steps: int, **env_kwargs) -> tuple[int, float, float, int]:
    """(agents, seconds inside the environment, seconds of the whole loop, agent-steps)."""
    env = gpu_market_v1.parallel_env(**env_kwargs)
    draws = iter(np.random.default_rng(0).random(steps * len(env.possible_agents)).tolist())
    observations, _ = env.reset(seed=0)  # building the first episode is not a step's cost
    clock = time.perf_counter
    start = clock()
    env_seconds = 0.0
    agent_steps = 0
    for step in range(steps):
        if not env.agents:
            begin = clock()
            observations, _ = env.reset(seed=step)
            env_seconds += clock() - begin
        actions = {}
        for agent, obs in observations.items():
            legal = obs["action_mask"].nonzero()[0]
            actions[agent] = int(legal[int(next(draws) * len(legal))])
        agent_steps += len(actions)
        begin = clock()
        observations, *_ = env.step(actions)
        env_seconds += clock() - begin
    return len(env.possible_agents), env_seconds, clock() - start, agent_steps


def jobs_per_second(scenario: str = "openb-loaded", seed: int = 0) -> dict[str, float]:
    """Jobs per wall second of a whole truthful-market episode and of the FGD scheduler on the
    same jobs (best of `REPEATS` each), and their ratio."""
    loaded = load_scenario(scenario)
    market, scheduler, jobs = [], [], 0
    for _ in range(REPEATS):
        start = time.perf_counter()
        env = gpu_market_v1.parallel_env(scenario=loaded)
        episode = play_episode(env, Truthful(), seed)
        market.append(time.perf_counter() - start)
        jobs = int(episode.summary["jobs_finished"])
        start = time.perf_counter()
        simulate(loaded, "fgd", seed)
        scheduler.append(time.perf_counter() - start)
    return {
        "jobs": jobs,
        "market_jobs_per_s": jobs / min(market),
        "fgd_jobs_per_s": jobs / min(scheduler),
        "market_over_fgd_time": min(market) / min(scheduler),
    }


def quick() -> None:
    """The headline figures only: `tiny` agent-steps/s of both mechanisms, openb-loaded jobs/s."""
    figures: dict[str, object] = {
        f"tiny_{mechanism}": throughput(scenario="tiny", mechanism=mechanism)
        for mechanism in ("auction", "bargain")
    }
    figures["openb_loaded_jobs"] = row = jobs_per_second()
    for key in ("tiny_auction", "tiny_bargain"):
        print(f"{key:>14}: {figures[key]['agent_steps_per_s']:>9,.0f} agent-steps/s")
    print(
        f"openb-loaded: {row['market_jobs_per_s']:,.0f} jobs/s through the truthful market, "
        f"{row['fgd_jobs_per_s']:,.0f} through FGD (market x{row['market_over_fgd_time']:.1f})"
    )
    print(f"saved {save('env_throughput_quick', figures)}")


def main() -> None:
    figures: dict[str, object] = {}
    figures["openb_loaded_jobs"] = jobs_per_second()
    for mechanism in ("auction", "bargain"):
        figures[f"tiny_{mechanism}"] = throughput(scenario="tiny", mechanism=mechanism)
        figures[f"openb_{mechanism}"] = throughput(steps=300, scenario="openb", mechanism=mechanism)
    agents = []
    for count in (2, 4, 8, 16, 32, 64):
        row = throughput(steps=600, scenario="gang-heavy", overrides={"agents": count})
        agents.append(row)
    for row in agents:
        row["cost_ratio"] = row["us_per_step"] / agents[0]["us_per_step"]
        row["agent_ratio"] = row["agents"] / agents[0]["agents"]
    figures["agents_scaling"] = agents
    nodes = []
    for repeat in (17, 84, 167, 417, 834):  # gang-heavy has 6 nodes: ~100 .. 5,000 nodes
        overrides = {
            "cluster.nodes.0.count": 2 * repeat,
            "cluster.nodes.1.count": 4 * repeat,
            "workload.generator.jobs": 200,
        }
        row = throughput(steps=300, scenario="gang-heavy", overrides=overrides)
        row["nodes"] = 6 * repeat
        nodes.append(row)
    for row in nodes:
        row["cost_ratio"] = row["us_per_step"] / nodes[0]["us_per_step"]
        row["node_ratio"] = row["nodes"] / nodes[0]["nodes"]
    figures["nodes_scaling"] = nodes
    figures["peak_rss_mib"] = peak_rss_mib()

    for key in ("tiny_auction", "tiny_bargain", "openb_auction", "openb_bargain"):
        row = figures[key]
        print(
            f"{key:>14}: {row['agent_steps_per_s']:>9,.0f} agent-steps/s "
            f"({row['agents']} agents, {row['us_per_step']:.0f} us/step; "
            f"{row['loop_agent_steps_per_s']:,.0f} with the random policy's time)"
        )
    row = figures["openb_loaded_jobs"]
    print(
        f"openb-loaded: {row['market_jobs_per_s']:,.0f} jobs/s through the truthful market, "
        f"{row['fgd_jobs_per_s']:,.0f} through FGD (market x{row['market_over_fgd_time']:.1f} "
        f"the time, {row['jobs']} jobs)"
    )
    print("step cost vs agents (gang-heavy), ratio to 2 agents:")
    for row in agents:
        print(
            f"  {row['agents']:>3} agents: {row['us_per_step']:8.0f} us/step  "
            f"cost x{row['cost_ratio']:.2f}  agents x{row['agent_ratio']:.0f}"
        )
    print("step cost vs nodes (gang-heavy repeated), ratio to the smallest:")
    for row in nodes:
        print(
            f"  {row['nodes']:>5} nodes: {row['us_per_step']:8.0f} us/step  "
            f"cost x{row['cost_ratio']:.2f}  nodes x{row['node_ratio']:.0f}"
        )
    print(f"peak RSS: {figures['peak_rss_mib']:.0f} MiB")
    print(f"saved {save('env_throughput', figures)}")


if __name__ == "__main__":
    quick() if "--quick" in sys.argv[1:] else main()
