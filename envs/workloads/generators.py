"""Seeded synthetic workloads: Poisson arrivals of a configurable mix of job classes.

Why synthetic: the openb trace has no tenants, no values and no MIG requests, so experiments on
MIG layouts, gangs and noisy neighbours need a workload whose shape we control. Every random draw
comes from one `numpy.random.Generator` seeded by the caller, in arrival order, so the same seed
and config always give identical jobs and different seeds give different ones.

A job class (`JobClass`) fixes one kind of GPU request and draws, per job:

* a size from `sizes` (label -> relative weight): `"PxG"` pods x whole GPUs for `whole`
  (`"1x8"`, `"2x8"`; a bare `"4"` means one pod of 4 GPUs), a MIG profile name for `mig`
  (`"1g.10gb"`), milli-GPU for `share` (`250`), and `"cpu"` for `none`;
* a duration, lognormal with median `duration.median_seconds` and log-sigma `duration.sigma`,
  clipped to `[min_seconds, max_seconds]` (seconds on a reference GPU, see `envs.jobs`);
* a value: `value_per_gpu_hour * work_gpu_hours * LogNormal(0, value_sigma)` (median noise 1), so
  that two jobs of equal size bid differently;
* an owner, by weight: agent weight x the agent's affinity for the class (default 1).

The deadline is `deadline_factor * duration` after arrival and the value then decays to zero over
`decay_factor * duration` seconds (see `Job.realised_value`).

`DEFAULT_CLASSES` holds the three classes of the project's story: `training` gangs of whole GPUs,
`inference` on MIG slices, `notebook` time-slice shares. A scenario names them and overrides only
the fields it wants to change.
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
from pydantic import Field, PositiveFloat, field_validator, model_validator

from gpuparley.envs import mig
from gpuparley.envs.catalogue import gpu_model
from gpuparley.envs.jobs import GPURequest, Job, PodDemand, QoS
from gpuparley.envs.validation import StrictConfig

RequestKind = Literal["whole", "mig", "share", "none"]
_WHOLE_SIZE = re.compile(r"^(?:(\d+)x)?(\d+)$")


class Duration(StrictConfig):
    """A lognormal run time in seconds: median and log-space sigma, clipped to a range."""

    median_seconds: PositiveFloat
    sigma: float = Field(default=1.0, ge=0)
    min_seconds: PositiveFloat = 60.0
    max_seconds: PositiveFloat | None = None

    @model_validator(mode="after")
    def _range(self) -> Duration:
        if self.max_seconds is not None and self.max_seconds < self.min_seconds:
            raise ValueError("max_seconds must be >= min_seconds")
        return self


class JobClass(StrictConfig):
    """One class of jobs in the mix (see the module docstring for what each field draws)."""

    kind: RequestKind
    weight: float = Field(default=1.0, ge=0)
    sizes: dict[str, PositiveFloat]
    duration: Duration
    cpu_milli: int = Field(default=4000, ge=0)
    memory_mib: int = Field(default=16384, ge=0)
    models: tuple[str, ...] = ()
    value_per_gpu_hour: float = Field(default=4.0, ge=0)
    value_sigma: float = Field(default=0.3, ge=0)
    deadline_factor: PositiveFloat = 3.0
    decay_factor: float = Field(default=1.0, ge=0)
    qos: QoS = QoS.BE
    priority: int = 0

    @field_validator("sizes", mode="before")
    @classmethod
    def _size_keys_as_text(cls, value: Any) -> Any:
        # YAML reads `250: 0.5` with an int key; sizes are labels, so keep them as text.
        if isinstance(value, Mapping):
            return {str(key): weight for key, weight in value.items()}
        return value

    @field_validator("models")
    @classmethod
    def _known_models(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            gpu_model(name)  # unknown name -> ValueError listing the valid models
        return value

    @model_validator(mode="after")
    def _sizes_fit_kind(self) -> JobClass:
        if not self.sizes:
            raise ValueError("sizes must name at least one size")
        if self.kind == "mig":
            models = self.models or mig_family_of(next(iter(self.sizes)))
            if not models:
                raise ValueError(
                    f"mig class needs `models` (MIG-capable: {', '.join(mig.PROFILES)})"
                )
            for model in models:
                for profile in self.sizes:
                    mig.lookup_profile(model, profile)  # lists the valid profiles on error
        else:
            for label in self.sizes:
                parse_size(self.kind, label)
        return self

    @property
    def allowed_models(self) -> tuple[str, ...]:
        """Models a job of this class may run on (MIG classes default to a profile family)."""
        if self.kind == "mig" and not self.models:
            return mig_family_of(next(iter(self.sizes)))
        return self.models

    def demand(self, label: str) -> tuple[int, PodDemand]:
        """(pods, per-pod demand) of one size label."""
        pods, request = parse_size(self.kind, label, self.allowed_models)
        return pods, PodDemand(request, self.cpu_milli, self.memory_mib)


def mig_family_of(profile: str) -> tuple[str, ...]:
    """The MIG-capable models that offer `profile` with identical geometry (e.g. 3g.40gb: 80GB)."""
    tables = [table for table in mig.PROFILES.values() if profile in table]
    if not tables:
        return ()
    first = tables[0]
    return tuple(model for model, table in mig.PROFILES.items() if table is first)


def parse_size(
    kind: RequestKind, label: str, models: tuple[str, ...] = ()
) -> tuple[int, GPURequest]:
    """Turn a size label into (pods, GPU request); raises `ValueError` saying what is allowed."""
    if kind == "whole":
        match = _WHOLE_SIZE.match(label)
        if not match or int(match.group(2)) < 1 or int(match.group(1) or 1) < 1:
            raise ValueError(f"whole-GPU size {label!r} must look like '<pods>x<gpus>', e.g. 2x8")
        return int(match.group(1) or 1), GPURequest("whole", count=int(match.group(2)))
    if kind == "share":
        if not label.isdigit() or not 0 < int(label) <= 1000:
            raise ValueError(f"share size {label!r} must be milli-GPU in 1..1000, e.g. 250")
        return 1, GPURequest("share", milli=int(label))
    if kind == "mig":
        if not models:
            raise ValueError(f"MIG size {label!r} needs the GPU models it runs on")
        profile = mig.lookup_profile(models[0], label)
        return 1, GPURequest("mig", profile=label, compute_slices=profile.compute_slices)
    if label != "cpu":
        raise ValueError(f"CPU-only size {label!r} must be 'cpu'")
    return 1, GPURequest("none")


_TRAINING = {
    "kind": "whole",
    "sizes": {"1x1": 0.35, "1x2": 0.2, "1x4": 0.2, "1x8": 0.15, "2x8": 0.1},
    "duration": {"median_seconds": 4 * 3600, "sigma": 0.8, "min_seconds": 600},
    "cpu_milli": 8000,
    "memory_mib": 65536,
    "value_per_gpu_hour": 8.0,
    "deadline_factor": 3.0,
    "decay_factor": 2.0,
    "qos": "Guaranteed",
    "priority": 1,
}
_INFERENCE = {
    "kind": "mig",
    "sizes": {"1g.10gb": 0.4, "2g.20gb": 0.3, "3g.40gb": 0.2, "4g.40gb": 0.1},
    "duration": {"median_seconds": 1800, "sigma": 1.0, "min_seconds": 120},
    "cpu_milli": 4000,
    "memory_mib": 16384,
    "models": ["A100-80GB", "H100-80GB"],
    "value_per_gpu_hour": 6.0,
    "deadline_factor": 1.5,
    "decay_factor": 0.5,
    "qos": "LS",
    "priority": 2,
}
_NOTEBOOK = {
    "kind": "share",
    "sizes": {"100": 0.3, "250": 0.35, "400": 0.2, "500": 0.15},
    "duration": {"median_seconds": 2 * 3600, "sigma": 0.7, "min_seconds": 300},
    "cpu_milli": 2000,
    "memory_mib": 8192,
    "value_per_gpu_hour": 2.0,
    "deadline_factor": 4.0,
    "decay_factor": 4.0,
    "qos": "BE",
}
DEFAULT_CLASSES: dict[str, dict[str, Any]] = {
    "training": _TRAINING,
    "inference": _INFERENCE,
    "notebook": _NOTEBOOK,
}
"""Raw (unvalidated) defaults of the built-in classes; a config's fields are merged over them."""


def _merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Merge `override` over `base`; nested mappings merge, except `sizes`, which replace."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping) and key != "sizes":
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


class GeneratorConfig(StrictConfig):
    """A generated stream: Poisson arrivals at `rate_per_hour`, bounded by `jobs` and/or `hours`.

    `classes` maps class names to `JobClass` fields; the built-in names (`training`, `inference`,
    `notebook`) start from `DEFAULT_CLASSES`, so `{training: {weight: 3}}` is enough. Omitting
    `classes` gives all three built-ins at weight 1.
    """

    jobs: int | None = Field(default=50, ge=1)
    hours: PositiveFloat | None = None
    rate_per_hour: PositiveFloat = 10.0
    classes: dict[str, JobClass] = Field(
        default_factory=lambda: {
            name: JobClass.model_validate(spec) for name, spec in DEFAULT_CLASSES.items()
        }
    )

    @field_validator("classes", mode="before")
    @classmethod
    def _fill_builtins(cls, value: Any) -> Any:
        if not isinstance(value, Mapping):
            return value
        return {
            name: _merge(DEFAULT_CLASSES[name], spec or {})
            if name in DEFAULT_CLASSES and isinstance(spec, Mapping | None)
            else spec
            for name, spec in value.items()
        }

    @model_validator(mode="after")
    def _bounded(self) -> GeneratorConfig:
        if self.jobs is None and self.hours is None:
            raise ValueError("bound the stream with `jobs`, `hours` or both")
        if not self.classes or sum(c.weight for c in self.classes.values()) <= 0:
            raise ValueError("the mix needs at least one class with weight > 0")
        return self


AgentWeights = Mapping[str, float]
"""Agent name -> relative share of the jobs."""
ClassAffinity = Mapping[str, Mapping[str, float]]
"""Agent name -> class name -> multiplier on the agent's weight for that class (default 1)."""


def _owner_table(
    config: GeneratorConfig, agents: AgentWeights, affinity: ClassAffinity
) -> tuple[list[str], dict[str, np.ndarray]]:
    """Per class, the probabilities of each agent owning a job of that class."""
    names = list(agents)
    if not names:
        raise ValueError("a generated workload needs at least one agent")
    table = {}
    for cls in config.classes:
        weights = np.array(
            [agents[a] * affinity.get(a, {}).get(cls, 1.0) for a in names], dtype=float
        )
        if weights.sum() <= 0:
            raise ValueError(f"no agent has a positive weight for class {cls!r}")
        table[cls] = weights / weights.sum()
    return names, table


class _Choice:
    """`rng.choice(len(p), p=p)` for one fixed `p`, drawn at a fraction of the cost.

    numpy checks `p` and re-sums it at every call, then maps one uniform number `u` to
    `cdf.searchsorted(u, side="right")` through the normalised cumulative sum. Here the checks run
    once, through numpy itself, at the first draw (so a bad `p` fails where it did), and each draw
    is that same search over the same `cdf` for the same `u`: identical jobs, seed for seed.
    """

    def __init__(self, p: np.ndarray) -> None:
        self._p = p
        self._cdf: list[float] | None = None

    def __call__(self, rng: np.random.Generator) -> int:
        if self._cdf is None:
            _CHECKER.choice(len(self._p), p=self._p)  # numpy's own checks of `p`
            cdf = self._p.cumsum()
            cdf /= cdf[-1]
            self._cdf = cdf.tolist()
        return bisect.bisect_right(self._cdf, rng.random())


_CHECKER = np.random.default_rng(0)  # draws nothing anyone reads; `_Choice` checks `p` with it


def generate_jobs(
    config: GeneratorConfig,
    seed: int,
    agents: AgentWeights,
    affinity: ClassAffinity | None = None,
) -> list[Job]:
    """Draw the job stream of `config` with `seed`: ids 0..n-1 in arrival order."""
    rng = np.random.default_rng(seed)
    names, owner_p = _owner_table(config, agents, affinity or {})
    class_names = list(config.classes)
    class_p = np.array([config.classes[c].weight for c in class_names], dtype=float)
    class_p /= class_p.sum()
    choose_class = _Choice(class_p)
    choose_owner = {c: _Choice(p) for c, p in owner_p.items()}
    sizes = {c: list(spec.sizes) for c, spec in config.classes.items()}
    choose_size = {
        c: _Choice(np.array(list(spec.sizes.values())) / sum(spec.sizes.values()))
        for c, spec in config.classes.items()
    }
    horizon = config.hours * 3600 if config.hours is not None else math.inf
    limit = config.jobs if config.jobs is not None else math.inf
    mean_gap = 3600 / config.rate_per_hour
    jobs: list[Job] = []
    demands: dict[tuple[str, str], tuple[int, PodDemand]] = {}  # one per class and size
    clock = 0.0
    while len(jobs) < limit:
        clock += rng.exponential(mean_gap)
        if clock > horizon:
            break
        name = class_names[choose_class(rng)]
        spec = config.classes[name]
        label = sizes[name][choose_size[name](rng)]
        pods, demand = demands.get((name, label)) or demands.setdefault(
            (name, label), spec.demand(label)
        )
        dur = spec.duration
        drawn = dur.median_seconds * math.exp(dur.sigma * rng.standard_normal())
        # np.clip's arithmetic, on a Python float
        duration = float(min(max(drawn, dur.min_seconds), dur.max_seconds or math.inf))
        noise = math.exp(spec.value_sigma * rng.standard_normal())
        owner = names[choose_owner[name](rng)]
        work_hours = duration * pods * demand.gpu.gpu_equivalent / 3600
        job_id = len(jobs)
        jobs.append(
            Job(
                id=job_id,
                owner=owner,
                pod=demand,
                duration=duration,
                arrival=clock,
                pods=pods,
                allowed_models=spec.allowed_models,
                value=spec.value_per_gpu_hour * work_hours * noise,
                deadline=spec.deadline_factor * duration,
                decay=spec.decay_factor * duration,
                qos=spec.qos,
                priority=spec.priority,
                name=f"gen-{job_id:06d}",
                tags={"class": name, "source": "generator"},
            )
        )
    return jobs
