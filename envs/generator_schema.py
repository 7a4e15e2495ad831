"""The ranges the scenario generator draws from: a validated, documented config section.

`envs.scenario_generator` turns a seed and these ranges into one scenario in the ordinary
scenario schema. The ranges are a mapping (a file such as the bundled
`configs/generator/default.yaml`, which comments every field, or the `generator.ranges` section
of a training config); unknown keys, reversed ranges and unknown GPU models, modes or mechanisms
fail at load time with the field named, like every other config (`envs.validation`).

A range `[low, high]` is drawn uniformly (integers inclusive), except those marked log-uniform;
a `{choice: weight}` mapping is a weighted draw; a list of values is a uniform choice; a
probability is one Bernoulli draw.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    Field,
    PositiveFloat,
    field_validator,
    model_validator,
)

from gpuparley.envs.catalogue import MODEL_NAMES, gpu_model
from gpuparley.envs.resources import generator_configs_dir
from gpuparley.envs.validation import StrictConfig, validate_document


class RangesError(ValueError):
    """Generator ranges that cannot be used; the message names the file and the field."""


def _range(minimum: float, below: float | None = None) -> AfterValidator:
    """A `[low, high]` pair with minimum <= low <= high (and high < `below`)."""

    def check(value: tuple[float, float]) -> tuple[float, float]:
        low, high = value
        if low > high:
            raise ValueError(f"a range is [low, high] with low <= high, got {list(value)}")
        if low < minimum:
            raise ValueError(f"the low end must be >= {minimum:g}, got {list(value)}")
        if below is not None and high >= below:
            raise ValueError(f"the high end must be < {below:g}, got {list(value)}")
        return value

    return AfterValidator(check)


def _weights(value: dict[str, float]) -> dict[str, float]:
    if not value or sum(value.values()) <= 0:
        raise ValueError("needs at least one choice with a weight > 0")
    return value


IntPair = tuple[int, int]
FloatPair = tuple[float, float]
Probability = Annotated[float, Field(ge=0, le=1)]
Weight = Annotated[float, Field(ge=0)]
Mode = Literal["exclusive", "mig", "timeslice"]
Mechanism = Literal["auction", "bargain"]
Clearing = Literal["continuous", "epoch"]
_MODES: dict[Mode, float] = {"exclusive": 1.0, "mig": 1.0, "timeslice": 1.0}
_MECHANISMS: dict[Mechanism, float] = {"auction": 1.0, "bargain": 1.0}
_CLEARINGS: dict[Clearing, float] = {"continuous": 3.0, "epoch": 1.0}


class ScenarioRanges(StrictConfig):
    """What a generated scenario may look like (every field is commented in
    `configs/generator/default.yaml`, whose values are these defaults)."""

    # -- tenants
    agents: Annotated[IntPair, _range(2)] = (2, 16)
    agent_weight: Annotated[FloatPair, _range(1e-3)] = (0.25, 4.0)  # log-uniform
    class_preference: Probability = 0.5
    preference_strength: Annotated[FloatPair, _range(1e-3)] = (2.0, 5.0)
    # -- cluster
    node_groups: Annotated[IntPair, _range(1)] = (1, 4)
    nodes_per_group: Annotated[IntPair, _range(1)] = (1, 4)
    gpus_per_node: list[Annotated[int, Field(ge=1, le=16)]] = Field(
        default_factory=lambda: [1, 2, 4, 8], min_length=1
    )
    max_gpus: int = Field(default=32, ge=1)
    gpu_models: list[str] = Field(default_factory=lambda: list(MODEL_NAMES), min_length=1)
    modes: Annotated[dict[Mode, Weight], AfterValidator(_weights)] = Field(
        default_factory=lambda: dict(_MODES)
    )
    replicas: Annotated[IntPair, _range(2)] = (2, 8)
    cpu_only_nodes: Probability = 0.3
    # -- workload
    offered_load: Annotated[FloatPair, _range(1e-3)] = (0.5, 1.5)
    arrival_hours: Annotated[FloatPair, _range(1e-3)] = (4.0, 48.0)  # log-uniform
    jobs: Annotated[IntPair, _range(2)] = (30, 300)
    class_weight: Annotated[FloatPair, _range(1e-3)] = (0.5, 3.0)
    duration_scale: Annotated[FloatPair, _range(1e-3)] = (0.25, 2.0)  # log-uniform
    value_scale: Annotated[FloatPair, _range(1e-3)] = (0.5, 2.0)  # log-uniform
    value_sigma: Annotated[FloatPair, _range(0)] = (0.1, 0.6)
    deadline_factor: Annotated[FloatPair, _range(1e-3)] = (1.5, 5.0)
    decay_factor: Annotated[FloatPair, _range(0)] = (0.5, 4.0)
    # -- market and physics
    mechanisms: Annotated[dict[Mechanism, Weight], AfterValidator(_weights)] = Field(
        default_factory=lambda: dict(_MECHANISMS)
    )
    epoch_seconds: list[PositiveFloat] = Field(
        default_factory=lambda: [300.0, 600.0, 900.0], min_length=1
    )
    lease_term_epochs: Annotated[IntPair, _range(1)] = (3, 12)
    clearing: Annotated[dict[Clearing, Weight], AfterValidator(_weights)] = Field(
        default_factory=lambda: dict(_CLEARINGS)
    )
    clearing_interval: list[Annotated[float, Field(ge=0)]] = Field(
        default_factory=lambda: [0.0, 60.0, 300.0], min_length=1
    )
    timeslice_overhead: Annotated[FloatPair, _range(0, below=1)] = (0.02, 0.1)
    relayout_downtime: Annotated[FloatPair, _range(0)] = (60.0, 300.0)
    preemption_keeps_progress: Probability = 0.5

    @field_validator("gpu_models")
    @classmethod
    def _known_models(cls, value: list[str]) -> list[str]:
        for name in value:
            gpu_model(name)  # lists the valid models
        return value

    @model_validator(mode="after")
    def _room_for_a_node(self) -> ScenarioRanges:
        if min(self.gpus_per_node) > self.max_gpus:
            raise ValueError(
                f"max_gpus ({self.max_gpus}) is below the smallest node "
                f"(gpus_per_node: {self.gpus_per_node})"
            )
        if "mig" in self.modes and self.modes["mig"] > 0 and not self.mig_models:
            raise ValueError(
                "modes.mig needs a MIG-capable model in gpu_models "
                "(A100-40GB, A100-80GB, H100-80GB), or set modes.mig: 0"
            )
        return self

    @property
    def mig_models(self) -> list[str]:
        return [name for name in self.gpu_models if gpu_model(name).mig_capable]


RangesSource = str | Path | ScenarioRanges | dict[str, Any]
"""A bundled ranges name (`default`), a YAML file, an inline mapping, or validated ranges."""


def validate_ranges(raw: Any, source: str) -> ScenarioRanges:
    """Validate parsed data; the error names `source` and every bad field."""
    return validate_document(ScenarioRanges, raw, f"generator ranges {source}", RangesError)


def load_ranges(source: RangesSource = "default") -> ScenarioRanges:
    """Ranges by bundled name (`configs/generator/<name>.yaml`), file path or inline mapping."""
    if isinstance(source, ScenarioRanges):
        return source
    if isinstance(source, dict):
        return validate_ranges(source, "(inline)")
    path = Path(source)
    if path.suffix not in (".yaml", ".yml") and path.parent == Path(".") and not path.is_file():
        path = generator_configs_dir() / f"{source}.yaml"
    if not path.is_file():
        bundled = sorted(p.stem for p in generator_configs_dir().glob("*.yaml"))
        raise RangesError(
            f"generator ranges {source!s} not found (a YAML file, or a bundled name: "
            f"{', '.join(bundled) or 'none'})"
        )
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise RangesError(f"generator ranges {path} is not valid YAML: {exc}") from None
    return validate_ranges(raw, str(path))
