"""One simulation run from a scenario: build, replay, summarise, save.

This is the single path every front end uses (CLI, evaluation, benchmarks):
scenario -> cluster + jobs -> allocator -> simulator -> metrics -> files.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gpuparley.agents.registry import make_allocator, timer_of
from gpuparley.envs.metrics import DeadlockMonitor, summarise
from gpuparley.envs.scenario import Scenario
from gpuparley.envs.simulator import Simulator
from gpuparley.envs.timeline import COLUMNS


@dataclass(frozen=True)
class RunResult:
    """A finished run: the simulator (for detail) and its summary metrics."""

    scenario: Scenario
    scheduler: str
    seed: int
    simulator: Simulator
    metrics: dict[str, Any]


def simulate(
    scenario: Scenario,
    scheduler: str,
    seed: int,
    on_progress: Callable[[float], None] | None = None,
) -> RunResult:
    """Replay the scenario's workload (drawn with `seed`) under a central scheduler.

    `on_progress` is called now and then with the share of jobs that are done (0..1).
    """
    jobs = scenario.build_jobs(seed)
    allocator = make_allocator(scheduler, scenario, seed, jobs)
    sim = Simulator(
        scenario.build_cluster(), jobs, allocator, scenario.settings, timer_of(allocator)
    )
    deadlocks = DeadlockMonitor(sim)
    total = max(1, len(jobs))
    counter = {"events": 0}

    def callback() -> None:
        deadlocks()
        counter["events"] += 1
        if on_progress is not None and counter["events"] % 200 == 0:
            on_progress(sum(r.finish is not None for r in sim.records.values()) / total)

    sim.run(callback)
    agents = [agent.name for agent in scenario.agents]
    metrics = summarise(sim, agents, deadlocks)
    metrics.update({"scenario": scenario.name, "scheduler": scheduler, "seed": seed})
    return RunResult(scenario, scheduler, seed, sim, metrics)


def write_outputs(result: RunResult, out_dir: Path) -> list[Path]:
    """Write metrics.json, timeline.csv and the resolved scenario.yaml into `out_dir`.

    metrics.json also records where the numbers came from: the trace files read (name, path,
    rows, sha256) and the resolved scenario."""
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics_path = out_dir / "metrics.json"
    document = {
        **result.metrics,
        "trace_files": result.scenario.provenance,
        "scenario_config": result.scenario.to_dict(),
    }
    metrics_path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    timeline_path = out_dir / "timeline.csv"
    with timeline_path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        writer.writerows(result.simulator.timeline.rows())
    scenario_path = out_dir / "scenario.yaml"
    scenario_path.write_text(yaml.safe_dump(result.scenario.to_dict(), sort_keys=False))
    return [metrics_path, timeline_path, scenario_path]
