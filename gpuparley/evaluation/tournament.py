"""A tournament: every policy x seed on one scenario, each seed's workload shared by all policies.

The workload is drawn from the seed (`Scenario.build_jobs(seed)`) by both the simulator and the
market, so for a given seed every policy faces exactly the same jobs, and the same horizon: the
run ends when every job has finished or at one cap in simulated seconds, the same for every
policy of that seed (`horizon`: rule, override, and how a market is held to it). Differences
between policies are thus the policies' own. Each run is reduced to a JSON-native record (see
`results`): scalar metrics, the timeline averaged into at most `TIMELINE_POINTS` steps, the
sorted JCTs (at most `JCT_POINTS` evenly spaced order statistics) and per-agent utility (value
minus net payments in a market; value for a central scheduler, which charges nothing).
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from gpuparley.envs.scenario import Scenario
from gpuparley.envs.simulator import Simulator
from gpuparley.envs.timeline import COLUMNS
from gpuparley.evaluation.cells import CellMap
from gpuparley.evaluation.horizon import Horizon, describe, resolve_horizon
from gpuparley.evaluation.market_run import run_market
from gpuparley.evaluation.results import Results
from gpuparley.evaluation.runner import simulate
from gpuparley.policy.specs import PolicySpec

TIMELINE_POINTS = 400
JCT_POINTS = 2000

Progress = Callable[[float, str], None]
"""Called with (runs completed, fractional; a label such as 'kai seed 3 (4/10)')."""


def parse_seeds(text: str) -> list[int]:
    """Seeds from `0-4`, `0,2,7` or a mix (`0-2,9`); ValueError on anything else."""
    seeds: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        low, dash, high = part.partition("-")
        if not (low.isdigit() and (not dash or high.isdigit())):
            raise ValueError(
                f"bad seeds {text!r}: use a range like 0-4 or a list like 0,2,7 (seeds are >= 0)"
            )
        first, last = int(low), int(high) if dash else int(low)
        if last < first:
            raise ValueError(f"bad seed range {part!r}: the end is below the start")
        seeds.extend(range(first, last + 1))
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise ValueError(f"seed listed more than once: {', '.join(map(str, repeated))}")
    return seeds


def _scalar(value: Any) -> bool:
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool))


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float | None]:
    """The numeric metrics (non-finite ones as None, so results.json stays strict JSON)."""
    return {
        key: (None if value is None or not math.isfinite(value) else value)
        for key, value in sorted(metrics.items())
        if _scalar(value) and key != "seed"
    }


def downsample_timeline(sim: Simulator, points: int = TIMELINE_POINTS) -> dict[str, list[float]]:
    """The timeline as a step function of at most `points` steps (each the time average of the
    original over its step), exact when the run has fewer samples than that."""
    timeline = sim.timeline
    times = timeline.column("time")
    values = {name: timeline.column(name) for name in COLUMNS if name != "time"}
    if len(times) > points + 1 and times[-1] > times[0]:
        edges = np.linspace(times[0], times[-1], points + 1)
        widths = np.diff(times)
        for name, column in values.items():
            area = np.concatenate(([0.0], np.cumsum(column[:-1] * widths)))
            values[name] = np.diff(np.interp(edges, times, area)) / np.diff(edges)
        times = edges[:-1]
    series = {"time": [float(t) for t in times]}
    series.update({name: [float(v) for v in column] for name, column in values.items()})
    return series


def _sorted_sample(values: Sequence[float], points: int = JCT_POINTS) -> list[float]:
    """Sorted values, thinned to `points` evenly spaced order statistics when there are more."""
    ordered = np.sort(np.asarray(values, dtype=np.float64))
    if len(ordered) > points:
        ordered = ordered[np.linspace(0, len(ordered) - 1, points).round().astype(int)]
    return [float(v) for v in ordered]


def run_policy(
    scenario: Scenario,
    policy: PolicySpec,
    seed: int,
    horizon: Horizon | None = None,
    on_progress: Callable[[float], None] | None = None,
) -> dict[str, Any]:
    """One policy on one seed until every job is done or the horizon cap (default: the seed's
    `resolve_horizon`), reduced to a results record (module docstring).

    A scheduler's simulator stops at the cap; a market plays the epochs that cover it, its
    simulator stopped at the cap too, so both observe exactly the same window."""
    horizon = horizon or resolve_horizon(scenario, seed)
    capped = scenario.with_horizon(horizon.seconds)
    start = time.perf_counter()
    if policy.is_market:
        run = run_market(
            capped,
            policy.negotiator(seed),
            seed,
            mechanism=policy.mechanism,
            on_progress=on_progress,
            max_epochs=horizon.epochs(capped.market.epoch_seconds),
            clearing=policy.clearing,
        )
        sim, metrics = run.env.market.sim, run.metrics
        utility, mechanism = metrics["utility_by_agent"], metrics["mechanism"]
    else:
        result = simulate(capped, policy.name, seed, on_progress)
        sim, metrics = result.simulator, result.metrics
        utility, mechanism = metrics["value_by_agent"], None
    metrics["horizon"] = horizon.seconds
    records = sim.records.values()
    jcts = [r.finish - r.job.arrival for r in records if r.finish is not None]
    return {
        "policy": policy.spec,
        "seed": seed,
        "scenario": scenario.name,
        "mechanism": mechanism,
        "gpus": int(sim.state.gpu_count),
        "metrics": scalar_metrics(metrics),
        "utility_by_agent": {agent: float(value) for agent, value in utility.items()},
        "jct_sorted": _sorted_sample(jcts),
        "timeline": downsample_timeline(sim),
        "wall_s": time.perf_counter() - start,
    }


def run_tournament(
    scenario: Scenario,
    policies: Sequence[PolicySpec],
    seeds: Sequence[int],
    horizon: float | None = None,
    on_progress: Progress | None = None,
    cells: CellMap | None = None,
) -> Results:
    """Run every policy on every seed (order: `each_run`), each seed to its common horizon cap
    (`horizon` seconds for every seed if given; else `resolve_horizon`); in this process, or
    each run as a cell of `cells` (same records).

    Market policies build their negotiator once up front, so a broken checkpoint fails before
    any run (ValueError)."""
    for policy in policies:
        if policy.is_market:
            policy.negotiator(0)
    caps = {seed: resolve_horizon(scenario, seed, horizon) for seed in seeds}
    results = Results(config=tournament_config(scenario, policies, seeds, caps))
    if cells is not None:
        # markets first: a market run costs several times a central scheduler's, and workers
        # that take the long cells first end together (the sweep lasts as long as its busiest
        # worker); the records go back into `each_run`'s order
        every = list(itertools.product(seeds, policies))
        order = sorted(range(len(every)), key=lambda index: not every[index][1].is_market)
        arguments = [(scenario, every[i][1], every[i][0], caps[every[i][0]]) for i in order]
        labels = [f"{every[i][1].spec} seed {every[i][0]}" for i in order]
        records = dict(zip(order, cells(run_policy, arguments, labels, on_progress), strict=True))
        results.runs.extend(records[index] for index in range(len(every)))
        return results
    for policy, seed, report in each_run(policies, seeds, on_progress):
        results.runs.append(run_policy(scenario, policy, seed, caps[seed], report))
    return results


def each_run(
    policies: Sequence[PolicySpec], seeds: Sequence[int], on_progress: Progress | None = None
) -> Iterator[tuple[PolicySpec, int, Callable[[float], None]]]:
    """(policy, seed, per-run progress callback) seed-major, so early results already cover
    every policy; the callback turns a run's share done into the tournament's runs done."""
    total = len(policies) * len(seeds)
    for index, (seed, policy) in enumerate(itertools.product(seeds, policies)):
        label = f"{policy.spec} seed {seed} ({index + 1}/{total} runs)"

        def report(share: float, index: int = index, label: str = label) -> None:
            if on_progress is not None:
                on_progress(index + min(max(share, 0.0), 1.0), label)

        report(0.0)
        yield policy, seed, report
    if on_progress is not None:
        on_progress(float(total), f"{total}/{total} runs")


def tournament_config(
    scenario: Scenario,
    policies: Sequence[PolicySpec],
    seeds: Sequence[int],
    horizons: dict[int, Horizon] | None = None,
    experiment: str = "tournament",
) -> dict[str, Any]:
    """What was run, saved beside the results so a report states it and a rerun can repeat it
    (`horizon`: the cap per seed and its rule; None for experiments without a clock)."""
    return {
        "experiment": experiment,
        "scenario": scenario.name,
        "policies": [policy.spec for policy in policies],
        "seeds": list(seeds),
        "horizon": describe(horizons) if horizons else None,
        "confidence": 0.95,
        "scenario_config": scenario.to_dict(),
        "trace_files": scenario.provenance,
    }
