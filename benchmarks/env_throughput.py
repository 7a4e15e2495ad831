"""Environment throughput: agent-steps per second of `gpu_market_v0`, and how a step's cost grows.

Figures (printed and saved to benchmarks/results/env_throughput.json):

* agent-steps/s on `tiny` (3 agents) for both mechanisms, with agents choosing uniformly among
  legal actions (the cheapest policy, so the figure is the environment's own cost); target
  >= 20,000 on one core;
* the same at `openb` scale (1,213 nodes, 5,706 pods) with 8 agents;
* cost per environment step as the number of agents grows 2 -> 64 (on `gang-heavy`) and as the
  cluster grows 100 -> 5,000 nodes (gang-heavy's node groups repeated), each as a ratio to the
  smallest run in the same process.

Run: `.venv/bin/python benchmarks/env_throughput.py`.
"""

from __future__ import annotations

import time

import numpy as np

from gpuparley.envs import gpu_market_v0

from _common import peak_rss_mib, save

STEPS = 3000


def throughput(steps: int = STEPS, **env_kwargs) -> dict[str, float]:
    """Agent-steps/s and microseconds per env step over `steps` steps (resets included)."""
    env = gpu_market_v0.parallel_env(**env_kwargs)
    rng = np.random.default_rng(0)
    observations, _ = env.reset(seed=0)
    agent_steps = 0
    start = time.perf_counter()
    for step in range(steps):
        if not env.agents:
            observations, _ = env.reset(seed=step)
        actions = {}
        for agent, obs in observations.items():
            legal = np.flatnonzero(obs["action_mask"])
            actions[agent] = int(legal[rng.integers(len(legal))])
        agent_steps += len(actions)
        observations, *_ = env.step(actions)
    seconds = time.perf_counter() - start
    return {
        "agents": len(env.possible_agents),
        "agent_steps_per_s": agent_steps / seconds,
        "us_per_step": seconds / steps * 1e6,
    }


def main() -> None:
    figures: dict[str, object] = {}
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
            f"({row['agents']} agents, {row['us_per_step']:.0f} us/step)"
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
    main()
