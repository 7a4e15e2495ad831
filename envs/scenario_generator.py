"""Seeded random scenarios, in the ordinary scenario schema, for training and held-out tests.

`sample_document(seed, ranges)` draws one scenario document from the ranges of
`envs.generator_schema.ScenarioRanges` with `numpy.random.default_rng(seed)`, every draw in a
fixed order, so a seed always gives the same document (and `scenario_text` the same bytes), and
the document validates and loads like any scenario file. What is drawn, in that order:

* **tenants**: 2-16 agents with log-uniform weights; each, with probability
  `class_preference`, prefers one job class (its `class_weights` multiply its share of that
  class by `preference_strength`);
* **cluster**: node groups, each a GPU model from `gpu_models`, a sharing mode (exclusive, MIG
  with a random legal layout, or time-sliced with `replicas`), GPUs per node and a node count,
  at most `max_gpus` GPUs in all; MIG groups of one scenario share a profile family (A100-40GB,
  or the 80 GB models), so one inference class can use all of them; with probability
  `cpu_only_nodes`, a group of CPU-only nodes;
* **job mix**: the classes the cluster can serve: `training` (whole GPUs, single pods up to the
  largest node and gangs of 2 or 4 whole nodes where there are enough nodes) with non-MIG GPU
  nodes, `inference` (MIG profiles the layouts hold, so that every size has a home without a
  re-layout, which needs an empty GPU) with MIG nodes, `notebook` (time-slice
  shares) with time-sliced nodes, and `batch` (CPU-only pods) with CPU-only nodes; each with
  scaled durations and values, value noise, deadline and decay factors (stretched by the
  slowest GPU the class may run on: deadlines count reference-GPU time), and a weight that
  loads the nodes serving it about as much as the others (times a drawn factor), so that no
  class floods the few nodes it can use;
* **market and physics**: mechanism, epoch length, lease term, clearing (continuous or per
  epoch) and clearing interval; time-slice overhead, MIG re-layout downtime, whether preempted
  work keeps its progress;
* **offered load and arrival window**: a target in `offered_load` and a window in
  `arrival_hours`, met on the scenario's own workload seed: as many jobs as arrive within the
  window (within `jobs`) and the arrival rate that makes them offer the target
  (`envs.load.arrival_scale_for`). Load here is the honest one for this simulator: GPUs held
  (`envs.load.gpu_demand`: a contended time-slice share takes turns on a whole GPU) over the
  speed-weighted capacity (`envs.load.speed_weighted_capacity`: durations are on a reference
  GPU). The count is raised when needed so that the target is at most `1 / LOAD_MARGIN` of
  what the jobs could offer however closely they arrive (`envs.load.load_ceiling`); when even
  `jobs`' maximum cannot, the target is lowered to that (MIG clusters of small slices need
  many small jobs). When even `jobs`' minimum would take longer than the window (big jobs on a
  small, slow cluster), every duration is shortened to fit (at most 20-fold). The description
  states each such exception.

Seeds are split into disjoint sets (`SEED_SETS`): training draws from its configured seeds,
model selection during training from `validation`, and `gpuparley eval --experiment
generalisation` reports on `held-out` ones that nothing else may use.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from gpuparley.envs import mig
from gpuparley.envs.catalogue import CATALOGUE
from gpuparley.envs.generator_schema import ScenarioRanges
from gpuparley.envs.jobs import Job
from gpuparley.envs.load import (
    arrival_scale_for,
    gpu_demand,
    load_ceiling,
    offered_load,
    speed_weighted_capacity,
)
from gpuparley.envs.scenario import Scenario, ScenarioConfig, ScenarioError
from gpuparley.envs.validation import validate_document
from gpuparley.envs.workloads.generators import DEFAULT_CLASSES, RequestKind, parse_size
from gpuparley.envs.yaml_text import dump_yaml

Choice = TypeVar("Choice", bound=str)

SEED_SETS: dict[str, range] = {
    "held-out": range(1_000_000, 1_000_100),
    "validation": range(2_000_000, 2_000_100),
}
"""Generator seeds reserved for one use each (training seeds must avoid them all)."""
HELD_OUT_SEEDS = SEED_SETS["held-out"]
VALIDATION_SEEDS = SEED_SETS["validation"]

SHARE_SIZES = (100, 250, 400, 500, 750)
GANG_PODS = (2, 4)
LOAD_MARGIN = 1.25  # the ceiling the drawn jobs could offer, over the target load
MIN_DURATION_FACTOR = 0.05  # the most durations are shortened to fit the arrival window
_NODE_CPU_PER_GPU, _NODE_MEMORY_PER_GPU = 16_000, 131_072
_CPU_NODE = {"cpu_milli": 64_000, "memory_mib": 262_144}


def _round(value: float) -> float:
    """Four significant digits: readable files, and the file holds exactly what was used."""
    return float(f"{value:.4g}")


class _Draw:
    """The scenario's random stream, with the few kinds of draw the ranges need."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def integer(self, pair: Sequence[int]) -> int:
        return int(self.rng.integers(pair[0], pair[1] + 1))

    def uniform(self, pair: Sequence[float]) -> float:
        return _round(float(self.rng.uniform(pair[0], pair[1])))

    def log_uniform(self, pair: Sequence[float]) -> float:
        return _round(float(np.exp(self.rng.uniform(np.log(pair[0]), np.log(pair[1])))))

    def choice(self, options: Sequence[Any]) -> Any:
        return options[int(self.rng.integers(len(options)))]

    def weighted(self, weights: Mapping[Choice, float]) -> Choice:
        names = list(weights)
        p = np.array([weights[name] for name in names], dtype=float)
        return names[int(self.rng.choice(len(names), p=p / p.sum()))]

    def chance(self, probability: float) -> bool:
        return bool(self.rng.random() < probability)


def random_layout(model: str, rng: np.random.Generator) -> list[list[str | int]]:
    """A random full legal MIG layout: a profile drawn among those that still fit, at a random
    allowed start, until nothing more fits (`mig.possible_placements`)."""
    layout: list[tuple[str, int]] = []
    while True:
        fitting = {
            name: starts
            for name in mig.profiles_of(model)
            if (starts := mig.possible_placements(model, name, layout))
        }
        if not fitting:
            return [[name, start] for name, start in layout]
        name = sorted(fitting)[int(rng.integers(len(fitting)))]
        starts = fitting[name]
        layout.append((name, starts[int(rng.integers(len(starts)))]))


def _node_group(index: int, mode: str, model: str, gpus: int, count: int) -> dict[str, Any]:
    return {
        "name": f"g{index}-{model.lower()}-{mode}",
        "count": count,
        "cpu_milli": max(2, gpus) * _NODE_CPU_PER_GPU,
        "memory_mib": max(2, gpus) * _NODE_MEMORY_PER_GPU,
        "gpu_model": model,
        "gpus": gpus,
        "mode": mode,
    }


def _cluster(ranges: ScenarioRanges, draw: _Draw) -> list[dict[str, Any]]:
    """Node groups (module docstring), at most `max_gpus` GPUs, at least one GPU group."""
    groups: list[dict[str, Any]] = []
    total = 0
    family: dict[str, mig.MigProfile] | None = None
    for index in range(draw.integer(ranges.node_groups)):
        mode = draw.weighted(ranges.modes)
        models = ranges.gpu_models
        if mode == "mig":
            models = [m for m in ranges.mig_models if family is None or mig.PROFILES[m] is family]
        model = draw.choice(models)
        gpus, count = draw.choice(ranges.gpus_per_node), draw.integer(ranges.nodes_per_group)
        room = ranges.max_gpus - total
        fitting = [size for size in ranges.gpus_per_node if size <= room]
        if not fitting:
            break
        gpus = gpus if gpus <= room else max(fitting)
        group = _node_group(index, mode, model, gpus, min(count, room // gpus))
        if mode == "timeslice":
            group["replicas"] = draw.integer(ranges.replicas)
        elif mode == "mig":
            family = mig.PROFILES[model]
            group["mig_layout"] = random_layout(model, draw.rng)
        groups.append(group)
        total += gpus * group["count"]
    if draw.chance(ranges.cpu_only_nodes):
        groups.append({"name": "cpu", "count": draw.integer(ranges.nodes_per_group), **_CPU_NODE})
    return groups


def _sizes(labels: Sequence[str], draw: _Draw) -> dict[str, float]:
    """A random non-empty subset of `labels` with random weights."""
    chosen = [label for label in labels if draw.chance(0.6)] or [draw.choice(labels)]
    return {label: draw.uniform((0.1, 1.0)) for label in chosen}


def _training_sizes(groups: list[dict[str, Any]], draw: _Draw) -> dict[str, float]:
    """Single pods of 1..largest node GPUs, and gangs of whole nodes where enough exist."""
    nodes = [(g["gpus"], g["count"]) for g in groups if g.get("gpus") and g["mode"] != "mig"]
    largest = max(gpus for gpus, _count in nodes)
    labels = [f"1x{size}" for size in (1, 2, 4, 8, 16) if size <= largest]
    for size in sorted({gpus for gpus, _count in nodes if gpus > 1}):
        hosts = sum(count for gpus, count in nodes if gpus >= size)
        labels += [f"{pods}x{size}" for pods in GANG_PODS if pods <= hosts]
    return _sizes(labels, draw)


def _classes(ranges: ScenarioRanges, groups: list[dict[str, Any]], draw: _Draw) -> dict:
    """The job classes the cluster serves (module docstring), each with drawn parameters."""
    modes = {g.get("mode") for g in groups if g.get("gpus")}
    classes: dict[str, dict[str, Any]] = {}
    if modes & {"exclusive", "timeslice"}:
        classes["training"] = {"sizes": _training_sizes(groups, draw)}
    if "mig" in modes:
        mig_groups = [g for g in groups if g.get("mode") == "mig"]
        laid_out = {name for g in mig_groups for name, _start in g["mig_layout"]}
        classes["inference"] = {
            "sizes": _sizes(sorted(laid_out), draw),
            "models": sorted({g["gpu_model"] for g in mig_groups}),
        }
    if "timeslice" in modes:
        classes["notebook"] = {"sizes": _sizes([str(size) for size in SHARE_SIZES], draw)}
    if any(not g.get("gpus") for g in groups):
        classes["batch"] = {
            "kind": "none",
            "sizes": {"cpu": 1.0},
            "cpu_milli": 8000,
            "memory_mib": 32768,
            "duration": {"median_seconds": 1800.0, "sigma": 0.8, "min_seconds": 120.0},
        }
    for name, spec in classes.items():
        default = DEFAULT_CLASSES.get(name, spec)
        duration = {**default["duration"], **spec.get("duration", {})}
        duration["median_seconds"] = _round(
            duration["median_seconds"] * draw.log_uniform(ranges.duration_scale)
        )
        spec["duration"] = duration
        base_value = DEFAULT_CLASSES.get(name, {}).get("value_per_gpu_hour", 0.0)
        spec["value_per_gpu_hour"] = _round(base_value * draw.log_uniform(ranges.value_scale))
        spec["value_sigma"] = draw.uniform(ranges.value_sigma)
        # deadlines count reference-GPU durations: on slower GPUs they stretch alike
        stretch = 1 / min(1.0, _slowest(name, groups))
        spec["deadline_factor"] = _round(draw.uniform(ranges.deadline_factor) * stretch)
        spec["decay_factor"] = _round(draw.uniform(ranges.decay_factor) * stretch)
    _weigh(classes, groups, ranges, draw)
    return classes


def _slowest(name: str, groups: list[dict[str, Any]]) -> float:
    """The slowest relative speed among the GPU nodes that can host the class (1 for CPU-only
    jobs): MIG nodes for inference, the others for whole GPUs and time-slice shares."""
    if name == "batch":
        return 1.0
    speeds = [
        CATALOGUE[g["gpu_model"]].relative_speed
        for g in groups
        if g.get("gpus") and (g["mode"] == "mig") == (name == "inference")
    ]
    return min(speeds)


def _home_capacity(name: str, groups: list[dict[str, Any]]) -> float:
    """Speed-weighted GPUs of the nodes that serve a class: MIG nodes for inference,
    time-sliced ones for notebooks, exclusive ones (else time-sliced) for training."""
    modes = {g["mode"] for g in groups if g.get("gpus")}
    home = {
        "training": {"exclusive"} if "exclusive" in modes else {"timeslice"},
        "inference": {"mig"},
        "notebook": {"timeslice"},
    }[name]
    return sum(
        CATALOGUE[g["gpu_model"]].relative_speed * g["gpus"] * g["count"]
        for g in groups
        if g.get("gpus") and g["mode"] in home
    )


def _work_per_job(spec: dict[str, Any], kind: RequestKind) -> float:
    """Expected GPU-seconds one job of the class takes (a time-slice share takes turns on a
    whole GPU; lognormal mean of the duration, clipping ignored)."""
    sizes = spec["sizes"]
    total = sum(sizes.values())
    held = 0.0
    for label, weight in sizes.items():
        pods, request = parse_size(kind, label, tuple(spec.get("models", ())))
        held += weight / total * pods * (1.0 if kind == "share" else request.gpu_equivalent)
    duration = spec["duration"]
    return held * duration["median_seconds"] * math.exp(duration["sigma"] ** 2 / 2)


def _weigh(
    classes: dict[str, dict[str, Any]],
    groups: list[dict[str, Any]],
    ranges: ScenarioRanges,
    draw: _Draw,
) -> None:
    """Class weights that load each class's home nodes alike, times a drawn `class_weight`
    factor (so one class can be busier than another, within that range); CPU-only `batch` jobs
    come at a tenth of the mean GPU class weight."""
    weights = {}
    for name, spec in classes.items():
        if name == "batch":
            continue
        kind = DEFAULT_CLASSES[name]["kind"]
        weights[name] = (
            draw.uniform(ranges.class_weight)
            * _home_capacity(name, groups)
            / _work_per_job(spec, kind)
        )
    top = max(weights.values())
    for name, weight in weights.items():
        classes[name]["weight"] = _round(weight / top)
    if "batch" in classes:
        mean = sum(weights.values()) / len(weights) / top
        classes["batch"]["weight"] = _round(0.1 * draw.uniform(ranges.class_weight) * mean)


def _agents(ranges: ScenarioRanges, classes: Sequence[str], draw: _Draw) -> list[dict]:
    agents = []
    for index in range(draw.integer(ranges.agents)):
        agent: dict[str, Any] = {
            "name": f"tenant-{index:02d}",
            "weight": draw.log_uniform(ranges.agent_weight),
        }
        if draw.chance(ranges.class_preference):
            agent["class_weights"] = {
                draw.choice(classes): draw.uniform(ranges.preference_strength)
            }
        agents.append(agent)
    return agents


def _validated(document: dict[str, Any], seed: int) -> Scenario:
    where = f"generated scenario (seed {seed})"
    return Scenario(validate_document(ScenarioConfig, document, where, ScenarioError))


@dataclass(frozen=True)
class _Stream:
    """The first jobs of a scenario's own workload (at one arrival per hour unless a rate is
    given), with the GPUs each holds (`gpu_demand`) and the cluster's speed-weighted capacity."""

    jobs: list[Job]
    demand: list[float]
    capacity: float

    @classmethod
    def of(cls, document: dict[str, Any], seed: int, count: int, rate: float = 1.0) -> _Stream:
        document["workload"]["generator"].update(jobs=count, rate_per_hour=rate)
        scenario = _validated(document, seed)
        jobs = scenario.build_jobs(seed)
        capacity = speed_weighted_capacity(
            scenario.build_cluster(), scenario.settings.speed_scaling
        )
        return cls(jobs, [gpu_demand(job, scenario.settings) for job in jobs], capacity)

    def ceiling(self, count: int) -> float:
        return load_ceiling(self.jobs[:count], self.capacity, self.demand[:count])

    def scale(self, count: int, load: float) -> float:
        """The arrival scale that makes the first `count` jobs offer `load`."""
        return arrival_scale_for(self.jobs[:count], self.capacity, load, self.demand[:count])

    def hours(self, count: int, load: float) -> float:
        """The arrival window of the first `count` jobs when they offer `load`."""
        jobs = self.jobs[:count]
        return (jobs[-1].arrival - jobs[0].arrival) * self.scale(count, load) / 3600


def _shorten(classes: dict[str, dict[str, Any]], factor: float) -> None:
    """Scale every class's durations (median and clipping bounds) by `factor`."""
    for spec in classes.values():
        duration = spec["duration"]
        for key in ("median_seconds", "min_seconds", "max_seconds"):
            if duration.get(key) is not None:
                duration[key] = _round(duration[key] * factor)


def _fit_load(
    document: dict[str, Any], ranges: ScenarioRanges, seed: int, draw: _Draw
) -> dict[str, float]:
    """Set the job count, arrival rate (and, if need be, durations) for a drawn target load and
    arrival window (module docstring); returns what was drawn and what came of it."""
    target = draw.uniform(ranges.offered_load)
    hours = draw.log_uniform(ranges.arrival_hours)
    low, high = ranges.jobs
    stream = _Stream.of(document, seed, high)
    count = next(
        (n for n in range(low, high + 1) if stream.ceiling(n) >= LOAD_MARGIN * target), None
    )
    used, factor = target, 1.0
    if count is None:  # even `high` jobs cannot offer the target: lower it
        count = high
        used = _round(stream.ceiling(high) / LOAD_MARGIN)
    elif stream.hours(count, used) > hours:  # the fewest jobs already take too long
        factor = max(MIN_DURATION_FACTOR, _round(hours / stream.hours(count, used)))
        _shorten(document["workload"]["generator"]["classes"], factor)
        stream = _Stream.of(document, seed, high)
    else:  # the most jobs whose window fits (windows grow with the count)
        top = high
        while count < top:
            middle = (count + top + 1) // 2
            count, top = (
                (middle, top) if stream.hours(middle, used) <= hours else (count, middle - 1)
            )
    final = _Stream.of(document, seed, count, _round(1.0 / stream.scale(count, used)))
    return {
        "target": target,
        "used": used,
        "load": offered_load(final.jobs, final.capacity, final.demand),
        "hours": (final.jobs[-1].arrival - final.jobs[0].arrival) / 3600,
        "factor": factor,
    }


def sample_document(seed: int, ranges: ScenarioRanges | None = None) -> dict[str, Any]:
    """The scenario document of `seed` (plain data, in the scenario file layout)."""
    ranges = ranges or ScenarioRanges()
    draw = _Draw(seed)
    groups = _cluster(ranges, draw)
    classes = _classes(ranges, groups, draw)
    document: dict[str, Any] = {
        "name": f"generated-{seed}",
        "description": "",
        "seed": seed,
        "agents": _agents(ranges, list(classes), draw),
        "cluster": {"nodes": groups},
        "workload": {"generator": {"jobs": 1, "rate_per_hour": 1.0, "classes": classes}},
        "settings": {
            "timeslice_overhead": draw.uniform(ranges.timeslice_overhead),
            "relayout_downtime": draw.uniform(ranges.relayout_downtime),
            "preemption_keeps_progress": draw.chance(ranges.preemption_keeps_progress),
        },
        "market": {
            "mechanism": draw.weighted(ranges.mechanisms),
            "epoch_seconds": float(draw.choice(ranges.epoch_seconds)),
            "lease_term_epochs": draw.integer(ranges.lease_term_epochs),
            "clearing": draw.weighted(ranges.clearing),
            "clearing_interval": float(draw.choice(ranges.clearing_interval)),
        },
    }
    document["description"] = _describe(document, _fit_load(document, ranges, seed, draw))
    return document


def _describe(document: dict[str, Any], fit: dict[str, float]) -> str:
    groups = document["cluster"]["nodes"]
    gpus = sum(g.get("gpus", 0) * g["count"] for g in groups)
    shapes = ", ".join(
        f"{g['count']}x{g['gpus']} {g['gpu_model']} {g['mode']}" for g in groups if g.get("gpus")
    )
    cpu = sum(g["count"] for g in groups if not g.get("gpus"))
    jobs = document["workload"]["generator"]["jobs"]
    notes = []
    if fit["used"] < fit["target"]:
        notes.append(f"lowered from {fit['target']:.3g}: more jobs than {jobs} needed")
    if fit["factor"] < 1:
        notes.append(f"durations x{fit['factor']:.3g} to arrive within the window")
    return (
        f"{len(document['agents'])} agents; {gpus} GPUs ({shapes})"
        + (f" + {cpu} CPU-only nodes" if cpu else "")
        + f"; {jobs} jobs arriving over {fit['hours']:.1f} h at offered load {fit['load']:.2f}"
        + f" (target {fit['used']:.3g}{''.join('; ' + note for note in notes)})"
    )


def sample_scenario(seed: int, ranges: ScenarioRanges | None = None) -> Scenario:
    """The validated scenario of `seed` (what training and evaluation play)."""
    return _validated(sample_document(seed, ranges), seed)


def scenario_text(seed: int, ranges: ScenarioRanges | None = None, source: str = "default") -> str:
    """The scenario of `seed` as a YAML file (a comment says how to make it again)."""
    ranges = ranges or ScenarioRanges()
    header = (
        f"# Generated by `gpuparley scenario sample --seed {seed} --ranges {source}`\n"
        f"# (envs/scenario_generator.py); the same seed and ranges always give this file.\n"
    )
    return header + dump_yaml(sample_document(seed, ranges))


def parse_seed_range(text: str) -> range:
    """`first-last` (inclusive) as a range; ValueError saying the form otherwise."""
    first, dash, last = text.partition("-")
    if not (first.strip().isdigit() and dash and last.strip().isdigit()):
        raise ValueError(f"seeds {text!r}: use first-last, e.g. 0-999")
    if int(last) < int(first):
        raise ValueError(f"seeds {text!r}: the end is below the start")
    return range(int(first), int(last) + 1)


def check_training_seeds(seeds: range) -> None:
    """ValueError when training seeds overlap a reserved set (`SEED_SETS`)."""
    for name, reserved in SEED_SETS.items():
        if max(seeds.start, reserved.start) < min(seeds.stop, reserved.stop):
            raise ValueError(
                f"seeds {seeds.start}-{seeds.stop - 1} overlap the {name} generator seeds "
                f"({reserved.start}-{reserved.stop - 1}); train on others, e.g. 0-999"
            )
