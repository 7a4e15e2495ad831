"""Scenario files: one YAML file fixes the cluster, the tenants, the workload, physics and market.

Files live in `gpuparley.paths.scenarios_dir()` (`configs/scenarios/<name>.yaml`) and are
validated with pydantic before anything is built, so a typo fails at load time with a message
naming the file, the field path (`cluster.nodes[1].mig_layout`) and what is allowed there, rather
than deep inside a simulation. Unknown keys are errors.

Layout of a file (every section is documented in the bundled scenarios)::

    name, description, seed
    agents:   [{name, weight, class_weights, budget_per_epoch, quota_share}] or a count
    cluster:  {nodes: [{name, count, cpu_milli, memory_mib, gpu_model, gpus, mode, replicas,
                        mig_layout}]}
              or {trace: openb, mode, replicas, include_cpu_nodes}
    workload: {generator: {...}} or {trace: {name: openb, split, fractional, ...}}
    settings: SimulationSettings fields
    market:   {mechanism, epoch_seconds, lease_term_epochs, ...}

Defaults that depend on the cluster: an agent's `quota_share` defaults to an equal split of what
the explicit shares leave, and its `budget_per_epoch` to its quota share of the cluster's list
price (catalogue `price_per_hour` summed over all GPUs) for one epoch.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    ValidationInfo,
    field_validator,
    model_validator,
)

from gpuparley.envs import mig
from gpuparley.envs.catalogue import CATALOGUE, gpu_model
from gpuparley.envs.jobs import Job, PodDemand
from gpuparley.envs.settings import SimulationSettings
from gpuparley.envs.topology import ClusterSpec, NodeSpec, SharingMode
from gpuparley.envs.workloads.generators import GeneratorConfig, generate_jobs
from gpuparley.envs.workloads.openb import (
    DEFAULT_REPLICAS,
    SPLITS,
    Fractional,
    load_openb_jobs,
    load_openb_nodes,
)
from gpuparley.paths import scenarios_dir
from gpuparley.validation import validate_document

# NVIDIA mig-parted's `all-balanced` configs, per profile family (A100-80GB and H100 share one).
_BALANCED = {
    "A100-40GB": ("1g.5gb", "1g.5gb", "2g.10gb", "3g.20gb"),
    "A100-80GB": ("1g.10gb", "1g.10gb", "2g.20gb", "3g.40gb"),
    "H100-80GB": ("1g.10gb", "1g.10gb", "2g.20gb", "3g.40gb"),
}


class ScenarioError(ValueError):
    """A scenario that cannot be loaded; the message names the file, the field and the choices."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AgentConfig(_Strict):
    """A tenant. `class_weights` multiply `weight` per generated job class (affinity)."""

    name: str = Field(min_length=1)
    weight: PositiveFloat = 1.0
    class_weights: dict[str, NonNegativeFloat] = Field(default_factory=dict)
    budget_per_epoch: NonNegativeFloat | None = None
    quota_share: float | None = Field(default=None, ge=0, le=1)


class NodeGroup(_Strict):
    """`count` identical nodes named `<name>-<i>`."""

    name: str = Field(min_length=1)
    count: PositiveInt = 1
    cpu_milli: PositiveInt = 64000
    memory_mib: PositiveInt = 524288
    gpu_model: str | None = None
    gpus: int = Field(default=0, ge=0)
    mode: SharingMode = SharingMode.EXCLUSIVE
    replicas: PositiveInt = 1
    mig_layout: str | list[str | tuple[str, int]] | None = Field(
        default=None, validate_default=True
    )

    @field_validator("gpu_model")
    @classmethod
    def _known_model(cls, value: str | None) -> str | None:
        if value is not None:
            gpu_model(value)  # lists the valid models
        return value

    @field_validator("replicas")
    @classmethod
    def _replicas_fit_mode(cls, value: int, info: ValidationInfo) -> int:
        if info.data.get("mode") is SharingMode.TIMESLICE and value < 2:
            raise ValueError("mode: timeslice needs replicas >= 2 (GPU units advertised per GPU)")
        return value

    @field_validator("mig_layout")
    @classmethod
    def _resolve_layout(
        cls, value: str | list[str | tuple[str, int]] | None, info: ValidationInfo
    ) -> list[tuple[str, int]] | None:
        """Resolve the layout to explicit (profile, start) pairs, validated for the model."""
        mode, model = info.data.get("mode"), info.data.get("gpu_model")
        if mode is not SharingMode.MIG:
            if value is not None:
                raise ValueError(f"mig_layout is only allowed with mode: mig (mode is {mode})")
            return None
        if model is None:
            return None  # the missing/invalid gpu_model is reported on its own field
        table = mig.profiles_of(model)  # non-MIG model -> lists the MIG-capable ones
        choices = f"'balanced', 'all-<profile>' or a list; profiles: {', '.join(table)}"
        if value is None:
            raise ValueError(f"mode: mig needs a mig_layout: {choices}")
        if isinstance(value, str):
            if value == "balanced":
                return mig.fill_layout(model, _BALANCED[model])
            if value.startswith("all-"):
                return mig.uniform_layout(model, mig.lookup_profile(model, value[4:]).name)
            raise ValueError(f"unknown mig_layout {value!r}; use {choices}")
        if all(isinstance(item, str) for item in value):
            return mig.fill_layout(model, value)
        if all(isinstance(item, tuple) for item in value):
            mig.validate_layout(model, value)
            return list(value)
        raise ValueError("mig_layout lists either profile names or [profile, start] pairs")

    @model_validator(mode="after")
    def _gpus_need_model(self) -> NodeGroup:
        if self.gpus and self.gpu_model is None:
            raise ValueError(f"node group {self.name!r} has gpus but no gpu_model")
        if self.mode is SharingMode.MIG and not self.gpus:
            raise ValueError(f"node group {self.name!r}: mode mig needs gpus >= 1")
        return self

    def build(self) -> list[NodeSpec]:
        layout = tuple(self.mig_layout or ())
        return [
            NodeSpec(
                name=f"{self.name}-{i}",
                cpu_milli=self.cpu_milli,
                memory_mib=self.memory_mib,
                gpu_model=self.gpu_model if self.gpus else None,
                gpu_count=self.gpus,
                mode=self.mode if self.gpus else SharingMode.EXCLUSIVE,
                replicas=self.replicas,
                mig_layout=layout,
                labels={"group": self.name},
            )
            for i in range(self.count)
        ]


class ClusterConfig(_Strict):
    """Either explicit node groups (`nodes`) or a trace's nodes (`trace` + its options)."""

    nodes: list[NodeGroup] | None = None
    trace: Literal["openb"] | None = None
    mode: Literal["exclusive", "timeslice"] = "timeslice"
    replicas: PositiveInt = DEFAULT_REPLICAS
    include_cpu_nodes: bool = False

    @model_validator(mode="after")
    def _one_source(self) -> ClusterConfig:
        if (self.nodes is None) == (self.trace is None):
            raise ValueError("give exactly one of `nodes` (node groups) or `trace: openb`")
        if self.nodes is not None:
            trace_only = self.model_fields_set & {"mode", "replicas", "include_cpu_nodes"}
            if trace_only:
                raise ValueError(
                    f"{', '.join(sorted(trace_only))} apply to `trace` clusters; "
                    "set them per node group"
                )
            if not self.nodes:
                raise ValueError("`nodes` needs at least one node group")
        elif self.mode == "timeslice" and self.replicas < 2:
            raise ValueError("mode: timeslice needs replicas >= 2")
        return self

    def build(self) -> ClusterSpec:
        if self.nodes is not None:
            return ClusterSpec(tuple(node for group in self.nodes for node in group.build()))
        return ClusterSpec(
            tuple(
                load_openb_nodes(
                    SharingMode(self.mode),
                    self.replicas if self.mode == "timeslice" else 1,
                    self.include_cpu_nodes,
                )
            )
        )


class TraceWorkload(_Strict):
    """A trace replay (see `gpuparley.envs.workloads.openb` for every mapping choice)."""

    name: Literal["openb"] = "openb"
    split: str = "dev"
    fractional: Fractional = "timeslice"
    mig_model: str | None = None
    time_scale: PositiveFloat = 1.0
    limit: PositiveInt | None = None
    phases: list[Literal["Running", "Succeeded", "Failed", "Pending"]] | None = None
    value_per_gpu_hour: NonNegativeFloat = 2.0
    value_sigma: NonNegativeFloat = 0.0

    @field_validator("split")
    @classmethod
    def _known_split(cls, value: str) -> str:
        if value not in SPLITS:
            raise ValueError(f"unknown split {value!r}; available: {', '.join(SPLITS)}")
        return value

    @field_validator("mig_model")
    @classmethod
    def _mig_capable(cls, value: str | None) -> str | None:
        if value is not None:
            mig.profiles_of(value)  # lists the MIG-capable models
        return value


class WorkloadConfig(_Strict):
    """Either a seeded `generator` or a `trace` replay."""

    generator: GeneratorConfig | None = None
    trace: TraceWorkload | None = None

    @model_validator(mode="after")
    def _one_source(self) -> WorkloadConfig:
        if (self.generator is None) == (self.trace is None):
            raise ValueError("give exactly one of `generator` or `trace`")
        return self

    @property
    def kind(self) -> str:
        return "generator" if self.generator is not None else f"trace:{self.trace.name}"


class SettingsConfig(_Strict):
    """The fields of `SimulationSettings` (documented there)."""

    horizon: PositiveFloat | None = None
    timeslice_overhead: float = Field(default=0.05, ge=0, lt=1)
    contention: bool = True
    speed_scaling: bool = True
    relayout_downtime: NonNegativeFloat = 120.0
    preemption_keeps_progress: bool = False


class MarketConfig(_Strict):
    """Knobs of the negotiation market (used by the market allocators)."""

    mechanism: Literal["auction", "bargain"] = "auction"
    epoch_seconds: PositiveFloat = 300.0
    lease_term_epochs: PositiveInt = 12
    reserve_price_per_gpu_hour: NonNegativeFloat = 0.0
    payment_rule: Literal["first", "second"] = "second"
    max_rounds: PositiveInt = 10
    budget_refill: Literal["reset", "accumulate"] = "accumulate"


class ScenarioConfig(_Strict):
    """The schema of one scenario file."""

    name: str | None = None
    description: str = ""
    seed: int = 0
    agents: list[AgentConfig] = Field(min_length=1)
    cluster: ClusterConfig
    workload: WorkloadConfig
    settings: SettingsConfig = Field(default_factory=SettingsConfig)
    market: MarketConfig = Field(default_factory=MarketConfig)

    @field_validator("agents", mode="before")
    @classmethod
    def _agent_count(cls, value: Any) -> Any:
        # `agents: 8` is shorthand for eight equal agents named agent-0 .. agent-7.
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            return [{"name": f"agent-{i}"} for i in range(value)]
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ScenarioConfig:
        names = [a.name for a in self.agents]
        if len(set(names)) != len(names):
            raise ValueError(f"agents: names must be unique, got {names}")
        if sum(a.quota_share or 0 for a in self.agents) > 1 + 1e-9:
            raise ValueError("agents[*].quota_share: the shares add up to more than 1")
        generator = self.workload.generator
        if generator is not None:
            for i, agent in enumerate(self.agents):
                unknown = set(agent.class_weights) - set(generator.classes)
                if unknown:
                    raise ValueError(
                        f"agents[{i}].class_weights: unknown classes "
                        f"{sorted(unknown)}; classes: {', '.join(generator.classes)}"
                    )
        return self


class Scenario:
    """A validated scenario: builds its cluster, its jobs and its settings on demand."""

    def __init__(self, config: ScenarioConfig, path: Path | None = None) -> None:
        self.config = config
        self.path = path
        self.name = config.name or (path.stem if path else "scenario")
        self.description = config.description
        self.seed = config.seed
        self.market = config.market
        self.settings = SimulationSettings(**config.settings.model_dump())
        if config.workload.generator is not None:
            self._check_servable(config.workload.generator)

    def _check_servable(self, generator: GeneratorConfig) -> None:
        """Every generated size must fit some node, or those jobs could never run."""
        nodes = self.build_cluster().nodes
        for class_name, spec in generator.classes.items():
            for label in spec.sizes:
                _pods, demand = spec.demand(label)
                if not any(_can_host(node, demand, spec.allowed_models) for node in nodes):
                    raise ScenarioError(
                        f"scenario {self.path or self.name} is invalid:\n"
                        f"  workload.generator.classes.{class_name}.sizes: size {label!r} "
                        f"({demand.gpu.describe()}, {demand.cpu_milli} mCPU, "
                        f"{demand.memory_mib} MiB, models {list(spec.allowed_models) or 'any'}) "
                        "fits no node of the cluster; GPUs there: " + ", ".join(_gpu_summary(nodes))
                    )

    def build_cluster(self) -> ClusterSpec:
        """The cluster (built once and cached; `ClusterSpec` is immutable)."""
        return self._cluster

    @cached_property
    def _cluster(self) -> ClusterSpec:
        return self.config.cluster.build()

    @cached_property
    def agents(self) -> list[AgentConfig]:
        """The agents with `quota_share` and `budget_per_epoch` filled in (module docstring)."""
        agents = self.config.agents
        explicit = sum(a.quota_share or 0 for a in agents)
        unset = [a for a in agents if a.quota_share is None]
        fill = (1 - explicit) / len(unset) if unset else 0.0
        price = sum(
            CATALOGUE[n.gpu_model].price_per_hour * n.gpu_count
            for n in self.build_cluster().nodes
            if n.gpu_model
        )
        epoch_hours = self.market.epoch_seconds / 3600
        resolved = []
        for agent in agents:
            share = agent.quota_share if agent.quota_share is not None else fill
            budget = agent.budget_per_epoch
            if budget is None:
                budget = round(share * price * epoch_hours, 4)
            resolved.append(
                agent.model_copy(update={"quota_share": share, "budget_per_epoch": budget})
            )
        return resolved

    def build_jobs(self, seed: int | None = None) -> list[Job]:
        """The workload for `seed` (default: the scenario's), sorted by arrival, ids 0..n-1."""
        seed = self.seed if seed is None else seed
        weights = {a.name: a.weight for a in self.config.agents}
        workload = self.config.workload
        if workload.generator is not None:
            affinity = {a.name: a.class_weights for a in self.config.agents}
            return generate_jobs(workload.generator, seed, weights, affinity)
        trace = workload.trace
        return load_openb_jobs(
            weights,
            split=trace.split,
            fractional=trace.fractional,
            mig_model=trace.mig_model,
            time_scale=trace.time_scale,
            limit=trace.limit,
            phases=trace.phases,
            value_per_gpu_hour=trace.value_per_gpu_hour,
            value_sigma=trace.value_sigma,
            seed=seed,
        )

    def to_dict(self) -> dict[str, Any]:
        """The resolved scenario (defaults filled, layouts explicit), reloadable as a file."""
        data = self.config.model_dump(mode="json", exclude_none=True)
        data["name"] = self.name
        if self.config.cluster.nodes is not None:  # trace-only options do not apply
            for key in ("mode", "replicas", "include_cpu_nodes"):
                data["cluster"].pop(key)
        data["agents"] = [a.model_dump(mode="json", exclude_none=True) for a in self.agents]
        return data


def _can_host(node: NodeSpec, demand: PodDemand, models: tuple[str, ...]) -> bool:
    """Whether one pod of `demand` could ever run on an empty `node` (rules of `envs.cluster`)."""
    if node.cpu_milli < demand.cpu_milli or node.memory_mib < demand.memory_mib:
        return False
    request = demand.gpu
    if request.kind == "none":
        return True
    if not node.gpu_model or (models and node.gpu_model not in models):
        return False
    if request.kind == "mig":
        return node.mode is SharingMode.MIG and request.profile in mig.profiles_of(node.gpu_model)
    return node.mode is not SharingMode.MIG and node.gpu_count >= max(request.count, 1)


def _gpu_summary(nodes: tuple[NodeSpec, ...]) -> list[str]:
    counts = Counter(
        f"{node.gpu_model}/{node.mode.value}" for node in nodes for _ in range(node.gpu_count)
    )
    return [f"{count}x {key}" for key, count in sorted(counts.items())]


# ----------------------------------------------------------------------------- loading


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    target: Any = data
    for part in parts[:-1]:
        if isinstance(target, list) and part.isdigit():
            target = target[int(part)]
        else:
            target = target.setdefault(part, {})
    if isinstance(target, list) and parts[-1].isdigit():
        target[int(parts[-1])] = value
    else:
        target[parts[-1]] = value


def _deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if "." in key:
            _set_dotted(merged, key, value)
        elif isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _validate(raw: Any, source: str) -> ScenarioConfig:
    return validate_document(ScenarioConfig, raw, f"scenario {source}", ScenarioError)


def _scenario_files() -> dict[str, Path]:
    folder = scenarios_dir()
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))} if folder.is_dir() else {}


def _resolve_path(name_or_path: str | Path) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.parent != Path(".") or path.is_file():
        if not path.is_file():
            raise ScenarioError(f"scenario file {path} does not exist")
        return path
    files = _scenario_files()
    if str(name_or_path) not in files:
        raise ScenarioError(
            f"unknown scenario {str(name_or_path)!r} (looked in {scenarios_dir()}); "
            f"available: {', '.join(files) or 'none'}"
        )
    return files[str(name_or_path)]


def load_scenario(name_or_path: str | Path, overrides: Mapping[str, Any] | None = None) -> Scenario:
    """Load, merge `overrides` into (nested or dotted keys), and validate one scenario."""
    path = _resolve_path(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ScenarioError(f"scenario {path} is not valid YAML: {exc}") from None
    if overrides and isinstance(raw, dict):
        raw = _deep_merge(raw, overrides)
    return Scenario(_validate(raw, str(path)), path)


def list_scenarios() -> list[tuple[str, str]]:
    """(name, description) of every scenario file, sorted by name; unreadable files say so."""
    found = []
    for name, path in _scenario_files().items():
        try:
            raw = yaml.safe_load(path.read_text())
            description = str(raw.get("description", "")) if isinstance(raw, dict) else ""
        except yaml.YAMLError:
            description = "(not valid YAML)"
        found.append((name, description.strip()))
    return found
