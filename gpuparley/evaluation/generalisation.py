"""`--experiment generalisation`: a learned negotiator on scenarios it never trained on.

Three groups of workloads, every policy on each (the same jobs, the same horizon as a
tournament: `evaluation.horizon`):

* `bundled` - the five evaluation scenarios (`BUNDLED`, or the ones asked for), on the seeds
  asked for;
* `held-out` - generated scenarios of the reserved held-out generator seeds
  (`envs.scenario_generator.HELD_OUT_SEEDS`, the first `held_out` of them), each on its own
  workload seed: nothing trains or selects checkpoints on them;
* `training` - generated scenarios of the first `training` seeds of the run's own training seed
  range: the distribution it trained on, for the gap between the two.

The policies are the learned negotiator, the truthful negotiator in the same mechanism (the
learned spec's `@mechanism`, else `@auction`) and the incumbents. Generated scenarios are drawn
from the ranges the checkpoint trained with (its `config.yaml`, when the learned source is a
checkpoint directory), else the bundled default ranges; the results record which, and which
bundled scenarios (if any) the checkpoint trained on. Records keep the scalar metrics only (no
timelines: there are hundreds of runs). A workload (every policy on it) is one evaluation cell:
in-process by default, or one Ray task each through a `CellMap` (`eval --ray`); the records
are the same either way. `generalisation_report` turns them into paired differences.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gpuparley.agents.registry import INCUMBENTS
from gpuparley.envs.generator_schema import ScenarioRanges, load_ranges
from gpuparley.envs.scenario import Scenario, load_scenario
from gpuparley.envs.scenario_generator import HELD_OUT_SEEDS, parse_seed_range, sample_scenario
from gpuparley.evaluation.cells import CellMap
from gpuparley.evaluation.horizon import RULE, resolve_horizon
from gpuparley.evaluation.results import Results
from gpuparley.evaluation.tournament import Progress, run_policy
from gpuparley.policy.specs import PolicySpec, parse_policy

EXPERIMENT = "generalisation"
BUNDLED = ("tiny", "mig-mixed", "timeslice-noisy", "gang-heavy", "openb-loaded")
TRUTHFUL = "scripted:truthful"
DEFAULT_MECHANISM = "auction"
DEFAULT_TRAINING_SEEDS = "0-999"


@dataclass(frozen=True)
class Workload:
    """One workload every policy plays: a bundled scenario and seed, or a generator seed."""

    group: str
    scenario: str  # a bundled name, or `generated-<seed>`
    seed: int  # the workload seed (a generated scenario's is its generator seed)

    def build(self, ranges: ScenarioRanges) -> Scenario:
        if self.group == "bundled":
            return load_scenario(self.scenario)
        return sample_scenario(self.seed, ranges)


def comparison(learned: PolicySpec, incumbents: Sequence[str] = INCUMBENTS) -> list[PolicySpec]:
    """The learned spec (in `DEFAULT_MECHANISM` unless it names one), truthful negotiators in
    the same mechanism and clearing, and the incumbents; ValueError on anything else."""
    if learned.kind != "learned":
        raise ValueError(
            f"the {EXPERIMENT} experiment compares one learned negotiator "
            f"(--policies learned:<checkpoint>), not {learned.spec!r}"
        )
    suffix = f"@{learned.mechanism or DEFAULT_MECHANISM}"
    if learned.clearing:
        suffix += f"@{learned.clearing}"
    if learned.mechanism is None:
        learned = parse_policy(learned.spec + f"@{DEFAULT_MECHANISM}")
    schedulers = [parse_policy(name) for name in incumbents]
    markets = [spec.spec for spec in schedulers if spec.is_market]
    if markets or not schedulers:
        raise ValueError(f"--incumbents lists central schedulers, e.g. fgd,themis; got {markets}")
    return [learned, parse_policy(TRUTHFUL + suffix), *schedulers]


def training_origin(learned: PolicySpec) -> dict[str, Any]:
    """What the learned policy trained on, from its checkpoint's `config.yaml` (empty for a
    bare .onnx file): config name, bundled scenarios, generator seeds and ranges."""
    assert learned.source is not None
    path = Path(learned.source).parent / "config.yaml"
    if not path.is_file():
        return {}
    raw = yaml.safe_load(path.read_text()) or {}
    generator = raw.get("generator") or {}
    return {
        "config": raw.get("name"),
        "file": str(path),
        "scenarios": list(raw.get("scenarios") or []),
        "generator_seeds": generator.get("seeds"),
        "ranges": generator.get("ranges"),
    }


def workloads(
    seeds: Sequence[int],
    held_out: int,
    training: Sequence[int],
    bundled: Sequence[str] = BUNDLED,
) -> list[Workload]:
    """Every workload of the experiment, group by group."""
    if held_out > len(HELD_OUT_SEEDS):
        raise ValueError(f"--held-out is at most {len(HELD_OUT_SEEDS)} (the reserved seeds)")
    unknown = sorted(set(bundled) - set(BUNDLED))
    if unknown:
        raise ValueError(f"--bundled: {', '.join(unknown)} not among {', '.join(BUNDLED)}")
    fixed = [Workload("bundled", name, seed) for name in bundled for seed in seeds]
    generated = [
        Workload(group, f"generated-{seed}", seed)
        for group, chosen in (("held-out", HELD_OUT_SEEDS[:held_out]), ("training", training))
        for seed in chosen
    ]
    return fixed + generated


def workload_cell(
    workload: Workload, specs: Sequence[str], ranges: dict[str, Any]
) -> dict[str, Any]:
    """Every policy on one workload (one evaluation cell): `{"records": [...]}`, slim records
    with their group."""
    scenario = workload.build(ScenarioRanges.model_validate(ranges))
    horizon = resolve_horizon(scenario, workload.seed)
    records = []
    for spec in specs:
        run = run_policy(scenario, parse_policy(spec), workload.seed, horizon)
        records.append(
            {
                "policy": run["policy"],
                "seed": run["seed"],
                "scenario": run["scenario"],
                "group": workload.group,
                "mechanism": run["mechanism"],
                "gpus": run["gpus"],
                "agents": len(scenario.agents),
                "metrics": run["metrics"],
                "wall_s": run["wall_s"],
            }
        )
    return {"records": records}


def run_generalisation(
    learned: PolicySpec,
    seeds: Sequence[int],
    held_out: int = len(HELD_OUT_SEEDS),
    training: int | None = None,
    incumbents: Sequence[str] = INCUMBENTS,
    on_progress: Progress | None = None,
    bundled: Sequence[str] = BUNDLED,
    cell_map: CellMap | None = None,
) -> Results:
    """The whole experiment (module docstring); `training` defaults to `held_out`; with a
    `cell_map`, each workload runs as one of its cells."""
    policies = comparison(learned, incumbents)
    policies[0].negotiator(0)  # a broken checkpoint fails before anything runs
    origin = training_origin(policies[0])
    ranges = load_ranges(origin.get("ranges") or "default")
    train_range = parse_seed_range(str(origin.get("generator_seeds") or DEFAULT_TRAINING_SEEDS))
    chosen = list(train_range[: held_out if training is None else training])
    units = workloads(seeds, held_out, chosen, bundled)
    specs = [policy.spec for policy in policies]
    config = {
        "experiment": EXPERIMENT,
        "scenario": "bundled and generated",
        "policies": specs,
        "learned": specs[0],
        "truthful": specs[1],
        "incumbents": specs[2:],
        "seeds": list(seeds),
        "bundled": list(bundled),
        "held_out_seeds": list(HELD_OUT_SEEDS[:held_out]),
        "training_seeds": chosen,
        "ranges": ranges.model_dump(mode="json"),
        "trained_on": origin,
        "horizon": {"rule": RULE, "source": "default rule (per workload)"},
        "confidence": 0.95,
    }
    results = Results(config=config)
    dumped = ranges.model_dump(mode="json")
    cells = [(unit, specs, dumped) for unit in units]
    labels = [f"{unit.group} {unit.scenario} seed {unit.seed}" for unit in units]
    if on_progress is not None:
        on_progress(0.0, f"0/{len(units)} workloads")
    if cell_map is not None:
        outcomes = cell_map(workload_cell, cells, labels, on_progress)
    else:
        outcomes = []
        for done, (cell, label) in enumerate(zip(cells, labels, strict=True), start=1):
            outcomes.append(workload_cell(*cell))
            if on_progress is not None:
                on_progress(float(done), f"{label} ({done}/{len(units)} workloads)")
    for outcome in outcomes:
        results.runs.extend(outcome["records"])
    return results
