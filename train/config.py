"""Training configs (`configs/train/<name>.yaml`), validated before anything is built.

Like scenario files, a typo must fail at load time with a message that names the file and the
field (`ppo.n_steps: Input should be greater than 0`), not twenty minutes into a run. Unknown keys
are errors. The resolved config (defaults filled in, generator ranges written out in full) is
stored in every checkpoint, so a run can be repeated from its checkpoint alone.

A run trains on bundled `scenarios`, on `generator` scenarios (a fresh random scenario from
`envs.scenario_generator` every episode), or both. The scenarios `gpuparley eval` reports on
as unseen (`HELD_OUT_SCENARIOS`) and the reserved generator seeds are refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    field_validator,
    model_validator,
)

from gpuparley.envs.generator_schema import RangesError, ScenarioRanges, load_ranges
from gpuparley.envs.resources import train_configs_dir
from gpuparley.envs.scenario_generator import check_training_seeds, parse_seed_range
from gpuparley.envs.validation import StrictConfig, validate_document
from gpuparley.policy.specs import parse_negotiator

HELD_OUT_SCENARIOS = frozenset({"timeslice-noisy", "openb", "openb-loaded"})
"""Never trained on, so results on them measure generalisation to unseen clusters."""
SELF, SNAPSHOTS = "self", "snapshots"


def _negotiator_spec(name: str, extra: str = "", where: str = "") -> None:
    """ValueError unless `name` is a negotiator's policy spec (`policy.specs`)."""
    try:
        parse_negotiator(name)
    except ValueError as error:
        raise ValueError(f"{where}unknown opponent {name!r}: {extra}{error}") from None


class TrainConfigError(ValueError):
    """A training config that cannot be used; the message names the file and the field."""


class PPOConfig(StrictConfig):
    """stable-baselines3 PPO hyperparameters (same meaning as there)."""

    n_steps: PositiveInt = 256  # per learner seat; a rollout is n_steps x seats
    batch_size: PositiveInt = 256
    n_epochs: PositiveInt = 4
    learning_rate: PositiveFloat = 3e-4
    gamma: float = Field(default=0.99, gt=0, le=1)
    gae_lambda: float = Field(default=0.95, ge=0, le=1)
    clip_range: PositiveFloat = 0.2
    ent_coef: NonNegativeFloat = 0.01
    vf_coef: NonNegativeFloat = 0.5
    max_grad_norm: PositiveFloat = 0.5


class PolicyConfig(StrictConfig):
    """The shared policy network: an MLP, so it exports to a few Gemm nodes."""

    net_arch: list[PositiveInt] = Field(default_factory=lambda: [64, 64], min_length=1)
    activation: Literal["tanh", "relu"] = "tanh"


class SnapshotConfig(StrictConfig):
    """Frozen copies of the learner that opponents seats may be given (self-play pool)."""

    every: PositiveInt = 20_000  # env steps (learner decisions) between snapshots
    pool_size: PositiveInt = 5  # the oldest is dropped beyond this


class GeneratorConfig(StrictConfig):
    """Training on generated scenarios: each of `games` games plays a new scenario every
    episode, drawn from `ranges` with a generator seed from `seeds` (`first-last`; never the
    held-out or validation seeds). The learner plays `learner_seats` seats of every game (a
    fixed number, so the vectorised environment keeps its width whatever the agent count); the
    other seats are drawn from the opponent mix, where `self` is the current policy."""

    ranges: str | dict[str, Any] = "default"
    seeds: str = "0-999"
    games: PositiveInt = 4
    learner_seats: PositiveInt = 2

    @field_validator("ranges")
    @classmethod
    def _loadable(cls, value: str | dict[str, Any]) -> str | dict[str, Any]:
        try:
            load_ranges(value)
        except RangesError as error:
            raise ValueError(str(error)) from None
        return value

    @field_validator("seeds")
    @classmethod
    def _training_seeds(cls, value: str) -> str:
        check_training_seeds(parse_seed_range(value))
        return value

    @model_validator(mode="after")
    def _seats_fit(self) -> GeneratorConfig:
        fewest = self.scenario_ranges().agents[0]
        if self.learner_seats > fewest:
            raise ValueError(
                f"learner_seats ({self.learner_seats}) exceeds the fewest agents a generated "
                f"scenario may have (ranges.agents starts at {fewest})"
            )
        return self

    def scenario_ranges(self) -> ScenarioRanges:
        return load_ranges(self.ranges)

    def seed_range(self) -> range:
        return parse_seed_range(self.seeds)


class WarmStartConfig(StrictConfig):
    """Imitation before PPO (`train.imitation`): `decisions` of the `imitate` negotiator in the
    learner's seats, fitted for `epochs` passes, `smoothing` of the target spread over every
    legal action (the exploration PPO starts with)."""

    imitate: str = "scripted:truthful"
    decisions: PositiveInt = 30_000
    epochs: PositiveInt = 10
    smoothing: float = Field(default=0.1, ge=0, lt=1)

    @field_validator("imitate")
    @classmethod
    def _teacher(cls, value: str) -> str:
        _negotiator_spec(value)
        return value


class EvaluationConfig(StrictConfig):
    """Periodic evaluation: one learner seat against scripted opponents, unshaped utility, on
    the training scenarios and on `generated` scenarios of the validation generator seeds
    (`envs.scenario_generator.VALIDATION_SEEDS`; with a `generator` section only).

    `select` picks the best checkpoint: `utility` (the seat's mean utility in budgets per
    epoch) or `welfare` (on the generated validation scenarios, every seat played by the policy:
    its welfare minus the all-truthful market's, relative to the latter, averaged with every gain
    capped at `gain_cap`, every loss in full: a checkpoint is picked for doing no harm across
    the scenarios, not for one scenario it happens to win big)."""

    every: PositiveInt = 50_000
    episodes: PositiveInt = 1  # per scenario x mechanism
    opponents: list[str] = Field(default_factory=lambda: ["scripted:truthful"], min_length=1)
    max_epochs: PositiveInt | None = 100  # None: each scenario's default episode length
    seed: int = 10_000  # evaluation workloads differ from training ones
    generated: NonNegativeInt = 0
    select: Literal["utility", "welfare"] = "utility"
    gain_cap: PositiveFloat = 0.02


class RLlibConfig(StrictConfig):
    """Settings only the RLlib backend reads (`backend: rllib`); PPO's hyperparameters come from
    `ppo` with the same meaning (n_steps per learner seat, batch_size as the minibatch)."""

    env_runners: NonNegativeInt = 1  # Ray actors stepping environments (0: the driver does)
    envs_per_runner: PositiveInt | None = None  # default: one per scenario x copies
    cpus_per_runner: PositiveFloat = 1.0


class TrainConfig(StrictConfig):
    name: str = Field(min_length=1)
    description: str = ""
    seed: int = Field(default=0, ge=0, le=2**32 - 1)  # numpy's legacy seeding takes 32 bits
    algorithm: Literal["maskable_ppo", "ppo"] = "maskable_ppo"
    backend: Literal["sb3", "rllib"] = "sb3"  # stable-baselines3, or RLlib on Ray
    total_timesteps: PositiveInt = 100_000
    scenarios: list[str] = Field(default_factory=list)
    generator: GeneratorConfig | None = None
    mechanisms: list[Literal["auction", "bargain"]] = Field(
        default_factory=lambda: ["auction", "bargain"], min_length=1
    )
    copies: PositiveInt = 1  # ParallelEnv copies per training scenario
    max_epochs: PositiveInt = 150  # episode cap (truncation), keeps episodes short and varied
    reward_shaping: NonNegativeFloat = 0.0
    reward_scale: PositiveFloat = 1.0  # applied to reward / the seat's budget per epoch
    reward_welfare: NonNegativeFloat = 0.0  # weight of the market's realised value per agent
    opponents: dict[str, NonNegativeFloat] = Field(
        default_factory=lambda: {SELF: 0.5, SNAPSHOTS: 0.3, "scripted:truthful": 0.2}
    )
    warm_start: WarmStartConfig | None = None
    snapshots: SnapshotConfig = Field(default_factory=SnapshotConfig)
    ppo: PPOConfig = Field(default_factory=PPOConfig)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    rllib: RLlibConfig = Field(default_factory=RLlibConfig)
    output_dir: str = "runs"
    threads: PositiveInt = 1

    @field_validator("scenarios")
    @classmethod
    def _development_only(cls, value: list[str]) -> list[str]:
        held_out = sorted(HELD_OUT_SCENARIOS & {Path(name).stem for name in value})
        if held_out:
            raise ValueError(
                f"{', '.join(held_out)} are held out for evaluation on unseen scenarios; "
                "train on development scenarios (e.g. tiny, mig-mixed, gang-heavy)"
            )
        return value

    @field_validator("opponents")
    @classmethod
    def _known_opponents(cls, value: dict[str, float]) -> dict[str, float]:
        for name in value:
            if name not in (SELF, SNAPSHOTS):
                _negotiator_spec(name, f"not `{SELF}` or `{SNAPSHOTS}`, and ")
        if value.get(SELF, 0.0) <= 0:
            raise ValueError("the mix needs a positive `self` share (the seats being trained)")
        return value

    @model_validator(mode="after")
    def _rllib_masks(self) -> TrainConfig:
        if self.backend == "rllib" and self.algorithm != "maskable_ppo":
            raise ValueError("algorithm: the rllib backend trains masked PPO; use maskable_ppo")
        return self

    @model_validator(mode="after")
    def _evaluation_opponents(self) -> TrainConfig:
        for name in self.evaluation.opponents:
            _negotiator_spec(name, "", "evaluation.opponents: ")
        return self

    @model_validator(mode="after")
    def _something_to_play(self) -> TrainConfig:
        if not self.scenarios and self.generator is None:
            raise ValueError("give `scenarios` (bundled names or files), `generator`, or both")
        if self.generator is None and (
            self.evaluation.generated or self.evaluation.select != "utility"
        ):
            raise ValueError(
                "evaluation.generated and evaluation.select: welfare need a `generator` section"
            )
        if self.evaluation.select == "welfare" and not self.evaluation.generated:
            raise ValueError("evaluation.select: welfare needs evaluation.generated >= 1")
        return self

    def resolved(self) -> dict[str, Any]:
        """Every field with defaults filled in (generator ranges in full), as plain data."""
        data = self.model_dump(mode="json")
        if self.generator is not None:
            data["generator"]["ranges"] = self.generator.scenario_ranges().model_dump(mode="json")
        return data


def validate_config(raw: Any, source: str) -> TrainConfig:
    """Validate already-parsed data; errors name `source` and every bad field."""
    return validate_document(TrainConfig, raw, f"train config {source}", TrainConfigError)


def resolve_config_path(name_or_path: str | Path) -> Path:
    """A path as given, or `configs/train/<name>.yaml` for a bare name."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml") and path.parent == Path(".") and not path.is_file():
        path = train_configs_dir() / f"{name_or_path}.yaml"
    if not path.is_file():
        raise TrainConfigError(f"train config {path} does not exist")
    return path


def load_config(name_or_path: str | Path) -> TrainConfig:
    """Load and validate a training config by name or path."""
    path = resolve_config_path(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise TrainConfigError(f"train config {path} is not valid YAML: {exc}") from None
    return validate_config(raw, str(path))
