"""Train one shared negotiator policy with (Maskable)PPO by self-play plus scripted opponents.

A run writes to `<output_dir>/<name>/seed-<seed>/`: TensorBoard logs in `tb/`, two checkpoints,
`best/` (highest evaluation score so far) and `last/`, and `training.json` (wall time with the
imitation warm start if any, steps/s of the PPO part, the warm start's fit and evaluation
score). A warm-started policy is evaluated before PPO begins, so `best/` may be the imitation
itself (its `metrics.json` says at which step it was taken).
Everything random is seeded from the config's seed (torch, the policy's sampling, each game's
workload/mechanism/seat draws), and torch runs single-threaded by default, so the same config and
seed repeat the same run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.progress import Progress
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.utils import set_random_seed
from torch import nn

from gpuparley.envs.scenario import Scenario
from gpuparley.envs.scenario_generator import VALIDATION_SEEDS, sample_scenario
from gpuparley.policy.learned import LearnedNegotiator
from gpuparley.policy.runtime import Layer, NumpyMlp
from gpuparley.train.checkpoint import ALGORITHMS, load_metrics, load_model, save_checkpoint
from gpuparley.train.config import TrainConfig, WarmStartConfig
from gpuparley.train.evaluate import Baselines, evaluate, welfare_gap
from gpuparley.train.imitation import Demonstrations, collect, imitate
from gpuparley.train.opponents import SnapshotPool, make_opponent
from gpuparley.train.scenario_sources import GeneratedGames
from gpuparley.train.vec_env import MarketVecEnv
from gpuparley.train.weights import policy_layers

BEST, LAST = "best", "last"
TRAINING_RECORD = "training.json"  # wall time and throughput of the whole run
_ACTIVATION_CLASSES = {"tanh": nn.Tanh, "relu": nn.ReLU}


@dataclass(frozen=True, slots=True)
class TrainResult:
    run_dir: Path
    best: Path
    last: Path
    timesteps: int
    seconds: float
    steps_per_second: float
    metrics: dict[str, Any]


@dataclass
class WarmStart:
    """What a run's warm start did (nothing without one): the share of the teacher's decisions
    the actor fits, its time, and the warm-started policy's evaluation score."""

    accuracy: float | None = None
    seconds: float = 0.0
    score: float | None = None


def finish_run(
    run_dir: Path,
    config: TrainConfig,
    warm: WarmStart,
    timesteps: int,
    steps: int,
    seconds: float,
    cpu_seconds: float,
    metrics: dict[str, Any],
    **extra: Any,
) -> TrainResult:
    """Write the run's `training.json` (`extra`: backend-specific fields) and its result;
    `steps` of the `timesteps` were taken in this process, in `seconds` (warm start aside)."""
    rate = steps / max(seconds, 1e-9)
    record = {
        "config": config.name,
        "seed": config.seed,
        "timesteps": timesteps,
        "wall_seconds": seconds + warm.seconds,
        "warm_start_seconds": warm.seconds,
        "cpu_seconds": cpu_seconds,
        "steps_per_second": rate,
        "threads": config.threads,
        "imitation_accuracy": warm.accuracy,
        "warm_start_score": warm.score,
        **extra,
    }
    (run_dir / TRAINING_RECORD).write_text(json.dumps(record, indent=2) + "\n")
    return TrainResult(run_dir, run_dir / BEST, run_dir / LAST, timesteps, seconds, rate, metrics)


def run_dir_of(config: TrainConfig) -> Path:
    return Path(config.output_dir) / config.name / f"seed-{config.seed}"


def generated_games(config: TrainConfig) -> GeneratedGames | None:
    """The generated games a config's `generator` section asks for (None without one)."""
    spec = config.generator
    if spec is None:
        return None
    return GeneratedGames(spec.scenario_ranges(), spec.seed_range(), spec.games, spec.learner_seats)


def validation_scenarios(config: TrainConfig) -> list[Scenario]:
    """The generated scenarios of the first `evaluation.generated` validation seeds."""
    if config.generator is None:
        return []
    ranges = config.generator.scenario_ranges()
    return [
        sample_scenario(seed, ranges) for seed in VALIDATION_SEEDS[: config.evaluation.generated]
    ]


def build_env(
    config: TrainConfig,
    pool: SnapshotPool | None,
) -> MarketVecEnv:
    return MarketVecEnv(
        config.scenarios,
        config.mechanisms,
        copies=config.copies,
        mix=config.opponents,
        seed=config.seed,
        max_epochs=config.max_epochs,
        reward_shaping=config.reward_shaping,
        reward_scale=config.reward_scale,
        reward_welfare=config.reward_welfare,
        pool=pool,
        generated=generated_games(config),
    )


def teacher_demonstrations(spec: WarmStartConfig, env: MarketVecEnv, seed: int) -> Demonstrations:
    """The warm start's teacher (`spec.imitate`) played in every learner seat of `env` for
    `spec.decisions` decisions (`imitation.collect`)."""
    return collect(env, make_opponent(spec.imitate, seed), spec.decisions)


def eval_scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """What a checkpoint's evaluation logs to TensorBoard (`eval/<name>`)."""
    scalars = {"score": metrics["score"]}
    for key in ("mean_utility", "mean_budget_utility"):
        if key in metrics:
            scalars[key] = metrics[key]
    if "welfare" in metrics:
        scalars["mean_welfare_gap"] = metrics["welfare"]["mean_welfare_gap"]
        scalars["capped_welfare_gap"] = metrics["welfare"]["capped_welfare_gap"]
    scalars.update(metrics.get("per_game", {}))
    return scalars


def build_model(config: TrainConfig, env: MarketVecEnv, log_dir: Path | None) -> BaseAlgorithm:
    ppo = config.ppo.model_dump()
    policy_kwargs = {
        "net_arch": list(config.policy.net_arch),
        "activation_fn": _ACTIVATION_CLASSES[config.policy.activation],
    }
    return ALGORITHMS[config.algorithm](
        "MlpPolicy",
        env,
        seed=config.seed,
        device="cpu",
        policy_kwargs=policy_kwargs,
        tensorboard_log=str(log_dir) if log_dir else None,
        verbose=0,
        **ppo,
    )


def evaluate_policy(
    model: BaseAlgorithm,
    config: TrainConfig,
    validation: Sequence[Scenario] = (),
    baselines: Baselines | None = None,
) -> dict[str, Any]:
    """The evaluations of `train.evaluate` for the model's current (deterministic) policy
    (`evaluate_layers`)."""
    return evaluate_layers(policy_layers(model.policy), config, validation, baselines)


def evaluate_layers(
    layers: list[Layer],
    config: TrainConfig,
    validation: Sequence[Scenario] = (),
    baselines: Baselines | None = None,
) -> dict[str, Any]:
    """The evaluations of `train.evaluate` for the actor with these dense layers, and `score`,
    the one `evaluation.select` names: its utility against scripted opponents on the training
    scenarios (and, selecting by utility, on the `validation` ones); the welfare of a market it
    plays alone on the `validation` scenarios."""
    weights = NumpyMlp(layers)
    spec = config.evaluation
    played = [*config.scenarios, *(validation if spec.select == "utility" else ())]
    metrics: dict[str, Any] = {}
    if played:
        metrics = evaluate(
            lambda: LearnedNegotiator(weights),
            played,
            config.mechanisms,
            spec.opponents,
            episodes=spec.episodes,
            max_epochs=spec.max_epochs,
            seed=spec.seed,
        )
        metrics["score"] = metrics["mean_budget_utility"]
    if validation:
        metrics["welfare"] = welfare_gap(
            lambda: LearnedNegotiator(weights),
            validation,
            config.mechanisms,
            spec.max_epochs,
            baselines,
            spec.gain_cap,
        )
        if spec.select == "welfare":
            metrics["score"] = metrics["welfare"]["capped_welfare_gap"]
    return metrics


class TrainingCallback(BaseCallback):
    """Snapshots for self-play, periodic evaluation, best/last checkpoints, progress display."""

    def __init__(
        self,
        trainer: Trainer,
        progress: Progress | None,
        task: Any,
    ) -> None:
        super().__init__()
        self.trainer = trainer
        self.progress = progress
        self.task = task
        self.started = time.perf_counter()
        self.start_steps = 0
        self.next_snapshot = 0
        self.next_eval = 0

    def _on_rollout_start(self) -> None:
        self.trainer.pool.set_current(policy_layers(self.model.policy))  # `self` opponents

    def _on_training_start(self) -> None:
        config = self.trainer.config
        self.start_steps = self.num_timesteps
        self.next_snapshot = self.num_timesteps + config.snapshots.every
        self.next_eval = self.num_timesteps + config.evaluation.every
        self.started = time.perf_counter()

    def _on_step(self) -> bool:
        config = self.trainer.config
        if self.num_timesteps >= self.next_snapshot:
            self.trainer.pool.add(policy_layers(self.model.policy))
            self.next_snapshot += config.snapshots.every
        if self.num_timesteps >= self.next_eval:
            self.trainer.checkpoint(self.model, self.logger)
            self.next_eval += config.evaluation.every
        if self.progress is not None:
            elapsed = max(time.perf_counter() - self.started, 1e-9)
            rate = (self.num_timesteps - self.start_steps) / elapsed
            self.progress.update(self.task, completed=self.num_timesteps, rate=f"{rate:,.0f}")
        return True


class Trainer:
    """One training run: environment, model, snapshot pool and checkpoints."""

    def __init__(
        self,
        config: TrainConfig,
        resume: Path | None = None,
    ) -> None:
        self.config = config
        self.run_dir = run_dir_of(config)
        self.best_score = float("-inf")
        self.warm = WarmStart()
        set_random_seed(config.seed)
        torch.set_num_threads(config.threads)
        self.pool = SnapshotPool(config.snapshots.pool_size)
        self.validation = validation_scenarios(config)
        self.baselines: Baselines = {}
        self.env = build_env(config, self.pool)
        if resume is not None:
            self.model = load_model(resume, env=self.env)
            self.model.set_random_seed(config.seed)
            self.model.tensorboard_log = str(self.run_dir / "tb")
            best = self.run_dir / BEST
            if best.is_dir():
                self.best_score = load_metrics(best).get("score", float("-inf"))
        else:
            self.model = build_model(config, self.env, self.run_dir / "tb")
            if config.warm_start is not None:
                started = time.perf_counter()
                self.warm.accuracy = self.warm_start(config.warm_start)
                self.warm.seconds = time.perf_counter() - started
        self.pool.add(policy_layers(self.model.policy))  # never an empty pool
        self.pool.set_current(policy_layers(self.model.policy))

    def warm_start(self, spec: WarmStartConfig) -> float:
        """Imitate `spec.imitate` before PPO (`train.imitation`); the fitted share."""
        demonstrations = teacher_demonstrations(spec, self.env, self.config.seed)
        self.env.seed(self.config.seed)  # PPO's first reset replays the same draws
        return imitate(
            self.model, demonstrations, spec.epochs, spec.smoothing, seed=self.config.seed
        )

    def checkpoint(self, model: BaseAlgorithm, logger: Any = None) -> dict[str, Any]:
        """Evaluate, save `last/`, and `best/` when the score improved."""
        metrics = evaluate_policy(model, self.config, self.validation, self.baselines)
        metrics["timesteps"] = int(model.num_timesteps)
        if logger is not None:
            for key, value in eval_scalars(metrics).items():
                logger.record(f"eval/{key}", value)
            logger.dump(model.num_timesteps)
        save_checkpoint(model, self.run_dir / LAST, self.config, metrics)
        if metrics["score"] > self.best_score:
            self.best_score = metrics["score"]
            save_checkpoint(model, self.run_dir / BEST, self.config, metrics)
        return metrics

    def learn(self, progress: Progress | None = None) -> TrainResult:
        total = self.config.total_timesteps
        task = None
        if progress is not None:
            task = progress.add_task(
                f"train {self.config.name} (seed {self.config.seed})",
                total=total,
                completed=self.model.num_timesteps,
                rate="-",
            )
        callback = TrainingCallback(self, progress, task)
        start_steps = self.model.num_timesteps
        started, cpu_started = time.perf_counter(), time.process_time()
        if self.warm.accuracy is not None and start_steps == 0:
            # the warm-started policy is a candidate for `best` too
            self.warm.score = self.checkpoint(self.model)["score"]
        self.model.learn(
            total_timesteps=max(total - start_steps, 0),
            callback=callback,
            reset_num_timesteps=start_steps == 0,
            tb_log_name="ppo",
        )
        metrics = self.checkpoint(self.model, self.model.logger)
        self.env.close()
        seconds = time.perf_counter() - started
        return finish_run(
            self.run_dir,
            self.config,
            self.warm,
            int(self.model.num_timesteps),
            self.model.num_timesteps - start_steps,
            seconds,
            time.process_time() - cpu_started,
            metrics,
        )


def train(
    config: TrainConfig,
    resume: Path | None = None,
    progress: Progress | None = None,
) -> TrainResult:
    """Run training to `config.total_timesteps` (from a checkpoint's step count when resuming)."""
    return Trainer(config, resume).learn(progress)
