"""Scenarios: one YAML file fixes the cluster, the tenants, the workload, physics and market.

Bundled files live in `envs.resources.scenarios_dir()` (`configs/scenarios/<name>.yaml`); any
other file is loaded by path. Each is validated against `envs.scenario_schema.ScenarioConfig`
before anything is built (the schema documents the layout), and the trace files it names are
checked for existence and columns at load time, so a mistake is reported with the file and the
field rather than deep inside a simulation.

Defaults that depend on the cluster: an agent's `quota_share` defaults to an equal split of what
the explicit shares leave, and its `budget_per_epoch` to its quota share of the cluster's list
price (catalogue `price_per_hour` summed over all GPUs) for one epoch.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from gpuparley.envs import mig
from gpuparley.envs.catalogue import CATALOGUE
from gpuparley.envs.jobs import Job, PodDemand
from gpuparley.envs.resources import scenarios_dir
from gpuparley.envs.scenario_schema import (
    AgentConfig,
    ScenarioConfig,
    ScenarioError,
)
from gpuparley.envs.settings import SimulationSettings
from gpuparley.envs.topology import ClusterSpec, NodeSpec, SharingMode
from gpuparley.envs.validation import validate_document
from gpuparley.envs.workloads.generators import GeneratorConfig, generate_jobs
from gpuparley.envs.workloads.openb import (
    ALL_NODE_FILE,
    GPU_NODE_FILE,
    NODE_COLUMNS,
    POD_COLUMNS,
    TraceFile,
    TraceFormatError,
    TraceNotFoundError,
    check_header,
    load_openb_jobs,
    openb_dir,
    split_file,
)

__all__ = [
    "AgentConfig",
    "Scenario",
    "ScenarioConfig",
    "ScenarioError",
    "load_scenario",
    "parse_overrides",
]


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
        self._check_trace_files()
        if config.workload.generator is not None:
            self._check_servable(config.workload.generator)

    def with_horizon(self, seconds: float) -> Scenario:
        """The same scenario with `settings.horizon` set to `seconds` (everything else, and the
        already-built cluster, shared): how an evaluation gives every policy the same cap."""
        settings = self.config.settings.model_copy(update={"horizon": seconds})
        capped = Scenario(self.config.model_copy(update={"settings": settings}), self.path)
        if "_cluster" in self.__dict__:
            capped.__dict__["_cluster"] = self._cluster
        return capped

    def trace_files(self) -> dict[str, Path]:
        """The trace files the scenario reads, by the field that names them (bundled defaults
        filled in): `workload.trace.path`, `cluster.trace.nodes`, `cluster.trace.cpu_nodes`."""
        files: dict[str, Path] = {}
        pods = self.config.workload.trace
        if pods is not None:
            files["workload.trace.path"] = pods.path or split_file(pods.split or "dev")
        cluster = self.config.cluster
        if cluster.trace is not None:
            files["cluster.trace.nodes"] = cluster.trace.nodes or openb_dir() / GPU_NODE_FILE
            if cluster.include_cpu_nodes:
                files["cluster.trace.cpu_nodes"] = (
                    cluster.trace.cpu_nodes or openb_dir() / ALL_NODE_FILE
                )
        return files

    def _check_trace_files(self) -> None:
        """Every trace file exists and has the columns its format needs (a ScenarioError naming
        the field otherwise), so a bad file fails at load time, not mid-run."""
        where = self.path or self.name
        try:  # the bundled trace's folder itself may be missing (GPUPARLEY_TRACES elsewhere)
            files = self.trace_files()
        except TraceNotFoundError as error:
            raise ScenarioError(f"scenario {where}: {error}") from None
        for field, path in files.items():
            columns = POD_COLUMNS if field == "workload.trace.path" else NODE_COLUMNS
            try:
                check_header(path, columns)
            except (TraceNotFoundError, TraceFormatError) as error:
                raise ScenarioError(f"scenario {where}: {field}: {error}") from None

    @cached_property
    def provenance(self) -> dict[str, dict[str, str | int]]:
        """Name, path, row count and sha256 of every trace file read, by field: what a result
        must record to say which data it came from."""
        return {field: TraceFile.of(path).describe() for field, path in self.trace_files().items()}

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
        assert trace is not None
        path = self.trace_files()["workload.trace.path"]
        jobs = load_openb_jobs(
            weights,
            path=path,
            fractional=trace.fractional,
            mig_model=trace.mig_model,
            time_scale=trace.time_scale,
            arrival_scale=trace.arrival_scale,
            offset=trace.offset,
            limit=trace.limit,
            phases=trace.phases,
            value_per_gpu_hour=trace.value_per_gpu_hour,
            value_sigma=trace.value_sigma,
            seed=seed,
            default_lifetime=trace.default_lifetime,
        )
        if not jobs:  # a replay of nothing would "succeed" with every metric zero
            raise ScenarioError(
                f"scenario {self.path or self.name}: workload.trace: no pod of {path} to replay"
                " (its phases, offset and limit keep none); widen them or use another file"
            )
        return jobs

    def to_dict(self) -> dict[str, Any]:
        """The resolved scenario (defaults filled, layouts explicit), reloadable as a file."""
        data = self.config.model_dump(mode="json", exclude_none=True)
        data["name"] = self.name
        if self.config.cluster.nodes is not None:  # trace-only options do not apply
            for key in ("mode", "replicas", "include_cpu_nodes", "node_fraction"):
                data["cluster"].pop(key)
        elif data["cluster"]["trace"] == {}:
            data["cluster"]["trace"] = "openb"  # the bundled node list, as files name it
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


def parse_overrides(pairs: Iterable[str]) -> dict[str, Any]:
    """`--set KEY=VALUE` pairs as dotted-key overrides for `load_scenario`, each value parsed as
    YAML (3, true, [1, 2]); a `ScenarioError` naming a malformed pair."""
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, equals, value = pair.partition("=")
        if not equals or not key.strip():
            raise ScenarioError(
                f"bad --set {pair!r}: use KEY=VALUE, e.g. workload.generator.jobs=50"
            )
        try:
            overrides[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or "not YAML"
            raise ScenarioError(
                f"bad --set {pair!r}: the value is not YAML ({problem}); quote it"
            ) from None
    return overrides


def load_scenario(
    name_or_path: str | Path,
    overrides: Mapping[str, Any] | None = None,
    trace: str | Path | None = None,
) -> Scenario:
    """Load, merge `overrides` into (nested or dotted keys), and validate one scenario.

    `trace` replays another openb-format pod list (relative to the cwd) in place of the
    scenario's own; only a scenario that replays a trace can take one.
    """
    path = _resolve_path(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ScenarioError(f"scenario {path} is not valid YAML: {exc}") from None
    if overrides and isinstance(raw, dict):
        raw = _deep_merge(raw, overrides)
    if trace is not None:
        raw = _with_trace(raw, Path(trace).resolve(), path)
    return Scenario(_validate(raw, str(path)).anchored(path.parent), path)


def _with_trace(raw: Any, trace: Path, path: Path) -> Any:
    pods = raw.get("workload", {}).get("trace") if isinstance(raw, dict) else None
    if not isinstance(pods, dict):
        raise ScenarioError(
            f"--trace replays an openb pod list, but scenario {path} generates its workload; "
            "use a trace scenario such as `openb`"
        )
    pods = {key: value for key, value in pods.items() if key != "split"}
    return {**raw, "workload": {**raw["workload"], "trace": {**pods, "path": str(trace)}}}


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
