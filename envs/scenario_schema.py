"""The schema of a scenario file: pydantic models that validate it before anything is built.

A typo fails at load time with a message naming the file, the field path
(`cluster.nodes[1].mig_layout`) and what is allowed there, rather than deep inside a simulation.
Unknown keys are errors. `envs.scenario` loads files against `ScenarioConfig` and builds what
they describe.

Layout of a file (every section is documented in the bundled scenarios)::

    name, description, seed
    agents:   [{name, weight, class_weights, budget_per_epoch, quota_share}] or a count
    cluster:  {nodes: [{name, count, cpu_milli, memory_mib, gpu_model, gpus, mode, replicas,
                        mig_layout}]}
              or {trace: openb | {nodes: FILE, cpu_nodes: FILE}, mode, replicas,
                  include_cpu_nodes, node_fraction}
    workload: {generator: {...}}
              or {trace: {name: openb, split | path: FILE, fractional, time_scale,
                          arrival_scale, offset, limit, ...}}
    settings: SimulationSettings fields
    market:   {mechanism, epoch_seconds, lease_term_epochs, ...}

Trace files (`cluster.trace.nodes`, `cluster.trace.cpu_nodes`, `workload.trace.path`) are
openb-format CSVs (`envs.workloads.openb` lists the columns); a relative path is relative to
the scenario file. Without one, the bundled openb development split is used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, cast

from pydantic import (
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationInfo,
    field_validator,
    model_validator,
)

from gpuparley.envs import mig
from gpuparley.envs.catalogue import gpu_model
from gpuparley.envs.topology import ClusterSpec, NodeSpec, SharingMode
from gpuparley.envs.validation import StrictConfig
from gpuparley.envs.workloads.generators import GeneratorConfig
from gpuparley.envs.workloads.openb import (
    DEFAULT_LIFETIME,
    DEFAULT_REPLICAS,
    SPLITS,
    Fractional,
    load_openb_nodes,
)

# NVIDIA mig-parted's `all-balanced` configs, per profile family (A100-80GB and H100 share one).
_BALANCED = {
    "A100-40GB": ("1g.5gb", "1g.5gb", "2g.10gb", "3g.20gb"),
    "A100-80GB": ("1g.10gb", "1g.10gb", "2g.20gb", "3g.40gb"),
    "H100-80GB": ("1g.10gb", "1g.10gb", "2g.20gb", "3g.40gb"),
}


class ScenarioError(ValueError):
    """A scenario that cannot be loaded; the message names the file, the field and the choices."""


class AgentConfig(StrictConfig):
    """A tenant. `class_weights` multiply `weight` per generated job class (affinity)."""

    name: str = Field(min_length=1)
    weight: PositiveFloat = 1.0
    class_weights: dict[str, NonNegativeFloat] = Field(default_factory=dict)
    budget_per_epoch: NonNegativeFloat | None = None
    quota_share: float | None = Field(default=None, ge=0, le=1)


class NodeGroup(StrictConfig):
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
        names = [item for item in value if isinstance(item, str)]
        pairs = [item for item in value if isinstance(item, tuple)]
        if len(names) == len(value):
            return mig.fill_layout(model, names)
        if len(pairs) == len(value):
            mig.validate_layout(model, pairs)
            return pairs
        raise ValueError("mig_layout lists either profile names or [profile, start] pairs")

    @model_validator(mode="after")
    def _gpus_need_model(self) -> NodeGroup:
        if self.gpus and self.gpu_model is None:
            raise ValueError(f"node group {self.name!r} has gpus but no gpu_model")
        if self.mode is SharingMode.MIG and not self.gpus:
            raise ValueError(f"node group {self.name!r}: mode mig needs gpus >= 1")
        return self

    def build(self) -> list[NodeSpec]:
        # `_resolve_layout` turned any accepted form into explicit (profile, start) pairs
        layout = tuple(cast("list[mig.Instance]", self.mig_layout or []))
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


class ClusterTrace(StrictConfig):
    """A cluster read from openb-format node lists (defaults: the bundled openb lists)."""

    nodes: Path | None = None
    cpu_nodes: Path | None = None

    def files(self) -> dict[str, Path | None]:
        return {"nodes": self.nodes, "cpu_nodes": self.cpu_nodes}


class ClusterConfig(StrictConfig):
    """Either explicit node groups (`nodes`) or a trace's nodes (`trace` + its options).

    `trace: openb` is the bundled openb node list; `trace: {nodes: FILE}` any openb-format one.
    `node_fraction` < 1 keeps that share of the trace's nodes with their mix of shapes
    (`envs.workloads.openb.sample_nodes`): a smaller cluster a replay can load.
    """

    nodes: list[NodeGroup] | None = None
    trace: ClusterTrace | None = None
    mode: Literal["exclusive", "timeslice"] = "timeslice"
    replicas: PositiveInt = DEFAULT_REPLICAS
    include_cpu_nodes: bool = False
    node_fraction: float = Field(default=1.0, gt=0, le=1)

    @field_validator("trace", mode="before")
    @classmethod
    def _bundled_trace(cls, value: Any) -> Any:
        if isinstance(value, str):
            if value != "openb":
                raise ValueError(f"unknown trace {value!r}; use 'openb' or {{nodes: FILE}}")
            return {}
        return value

    @model_validator(mode="after")
    def _one_source(self) -> ClusterConfig:
        if (self.nodes is None) == (self.trace is None):
            raise ValueError("give exactly one of `nodes` (node groups) or `trace: openb`")
        if self.nodes is not None:
            trace_only = self.model_fields_set & {
                "mode",
                "replicas",
                "include_cpu_nodes",
                "node_fraction",
            }
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
        assert self.trace is not None
        return ClusterSpec(
            tuple(
                load_openb_nodes(
                    SharingMode(self.mode),
                    self.replicas if self.mode == "timeslice" else 1,
                    self.include_cpu_nodes,
                    nodes_file=self.trace.nodes,
                    all_nodes_file=self.trace.cpu_nodes,
                    fraction=self.node_fraction,
                )
            )
        )


class TraceWorkload(StrictConfig):
    """A trace replay (see `gpuparley.envs.workloads.openb` for every mapping choice).

    The pods are the bundled `split` (only `dev` ships) or any openb-format pod list at `path`.
    `time_scale` multiplies arrivals and lifetimes (a change of clock); `arrival_scale`
    multiplies the arrivals only, so below 1 the same pods arrive closer together and load the
    cluster more (`envs.load.offered_load` measures it). `offset` skips that many pods in
    creation order before `limit` takes the next ones.
    """

    name: Literal["openb"] = "openb"
    split: str | None = None
    path: Path | None = None
    fractional: Fractional = "timeslice"
    mig_model: str | None = None
    time_scale: PositiveFloat = 1.0
    arrival_scale: PositiveFloat = 1.0
    offset: NonNegativeInt = 0
    limit: PositiveInt | None = None
    phases: list[Literal["Running", "Succeeded", "Failed", "Pending"]] | None = None
    value_per_gpu_hour: NonNegativeFloat = 2.0
    value_sigma: NonNegativeFloat = 0.0
    default_lifetime: PositiveFloat = DEFAULT_LIFETIME

    @field_validator("split")
    @classmethod
    def _known_split(cls, value: str | None) -> str | None:
        if value is not None and value not in SPLITS:
            raise ValueError(
                f"unknown split {value!r}; bundled: {', '.join(SPLITS)} "
                "(any other openb-format pod list: `path: FILE`)"
            )
        return value

    @field_validator("mig_model")
    @classmethod
    def _mig_capable(cls, value: str | None) -> str | None:
        if value is not None:
            mig.profiles_of(value)  # lists the MIG-capable models
        return value

    @model_validator(mode="after")
    def _one_pod_list(self) -> TraceWorkload:
        if self.split is not None and self.path is not None:
            raise ValueError("give `split` (a bundled pod list) or `path` (a file), not both")
        return self


class WorkloadConfig(StrictConfig):
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
        if self.trace is not None:
            return f"trace:{self.trace.name}"
        return "generator"


class SettingsConfig(StrictConfig):
    """The fields of `SimulationSettings` (documented there)."""

    horizon: PositiveFloat | None = None
    timeslice_overhead: float = Field(default=0.05, ge=0, lt=1)
    contention: bool = True
    speed_scaling: bool = True
    relayout_downtime: NonNegativeFloat = 120.0
    preemption_keeps_progress: bool = False


class MarketConfig(StrictConfig):
    """Knobs of the negotiation market (used by the market allocators).

    `epoch_seconds` is the billing period: rents are per epoch, budgets refill each epoch and
    lease terms count epochs. `clearing` says when allocations are decided: `continuous` clears
    whenever something changes (an arrival, a completion, a new bid or offer, an epoch boundary),
    at most once per `clearing_interval` seconds (0: at every such event); `epoch` only at epoch
    boundaries. `placement` packs winning bundles by FGD's fragmentation score or first-fit.
    With `incumbency` a running job keeps its lease, renewed each term at its rent, for as long
    as its holder pays; without it leases are re-auctioned at the end of every term (the old
    rule, kept for ablation). `preemption_premium`: when set, a waiting bid whose price per
    GPU-hour exceeds a running lease's by more than this fraction may preempt it (the victim
    keeps its progress as `settings.preemption_keeps_progress` says); unset, nothing running is
    ever preempted.
    """

    mechanism: Literal["auction", "bargain"] = "auction"
    epoch_seconds: PositiveFloat = 300.0
    lease_term_epochs: PositiveInt = 12
    reserve_price_per_gpu_hour: NonNegativeFloat = 0.0
    payment_rule: Literal["first", "second"] = "second"
    max_rounds: PositiveInt = 10
    budget_refill: Literal["reset", "accumulate"] = "accumulate"
    clearing: Literal["continuous", "epoch"] = "continuous"
    clearing_interval: NonNegativeFloat = 0.0
    placement: Literal["fragmentation", "first-fit"] = "fragmentation"
    incumbency: bool = True
    preemption_premium: NonNegativeFloat | None = None


class ScenarioConfig(StrictConfig):
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

    def anchored(self, base: Path) -> ScenarioConfig:
        """A copy whose relative trace file paths are taken from `base` (the file's folder)."""

        def anchor(path: Path | None) -> Path | None:
            return path if path is None or path.is_absolute() else (base / path).resolve()

        cluster, workload = self.cluster, self.workload
        if cluster.trace is not None:
            trace = cluster.trace.model_copy(
                update={key: anchor(path) for key, path in cluster.trace.files().items()}
            )
            cluster = cluster.model_copy(update={"trace": trace})
        if workload.trace is not None and workload.trace.path is not None:
            pods = workload.trace.model_copy(update={"path": anchor(workload.trace.path)})
            workload = workload.model_copy(update={"trace": pods})
        return self.model_copy(update={"cluster": cluster, "workload": workload})
