"""Train one shared negotiator policy with (Maskable)PPO by self-play plus scripted opponents.

A run writes to `<output_dir>/<name>/seed-<seed>/`: TensorBoard logs in `tb/`, two checkpoints,
`best/` (highest evaluation score so far) and `last/`, and `training.json` (wall time, steps/s).
Everything random is seeded from the config's seed (torch, the policy's sampling, each game's
workload/mechanism/seat draws), and torch runs single-threaded by default, so the same config and
seed repeat the same run.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.progress import Progress
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.utils import set_random_seed
from torch import nn

from gpuparley.policy.learned import LearnedNegotiator
from gpuparley.policy.runtime import Layer, NumpyMlp
from gpuparley.train.checkpoint import ALGORITHMS, load_metrics, load_model, save_checkpoint
from gpuparley.train.config import TrainConfig
from gpuparley.train.evaluate import evaluate
from gpuparley.train.opponents import SnapshotPool
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


def run_dir_of(config: TrainConfig) -> Path:
    return Path(config.output_dir) / config.name / f"seed-{config.seed}"


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
        pool=pool,
    )


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
) -> dict[str, Any]:
    """The evaluation of `train.evaluate` for the model's current (deterministic) policy."""
    return evaluate_layers(policy_layers(model.policy), config)


def evaluate_layers(layers: list[Layer], config: TrainConfig) -> dict[str, Any]:
    """The evaluation of `train.evaluate` for the actor with these dense layers."""
    weights = NumpyMlp(layers)
    spec = config.evaluation
    return evaluate(
        lambda: LearnedNegotiator(weights),
        config.scenarios,
        config.mechanisms,
        spec.opponents,
        episodes=spec.episodes,
        max_epochs=spec.max_epochs,
        seed=spec.seed,
    )


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
        set_random_seed(config.seed)
        torch.set_num_threads(config.threads)
        self.pool = SnapshotPool(config.snapshots.pool_size)
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
        self.pool.add(policy_layers(self.model.policy))  # never an empty pool

    def checkpoint(self, model: BaseAlgorithm, logger: Any = None) -> dict[str, Any]:
        """Evaluate, save `last/`, and `best/` when the score improved."""
        metrics = evaluate_policy(model, self.config)
        metrics["score"] = metrics["mean_budget_utility"]
        metrics["timesteps"] = int(model.num_timesteps)
        if logger is not None:
            logger.record("eval/mean_utility", metrics["mean_utility"])
            logger.record("eval/mean_budget_utility", metrics["mean_budget_utility"])
            for game, value in metrics["per_game"].items():
                logger.record(f"eval/{game}", value)
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
        self.model.learn(
            total_timesteps=max(total - start_steps, 0),
            callback=callback,
            reset_num_timesteps=start_steps == 0,
            tb_log_name="ppo",
        )
        metrics = self.checkpoint(self.model, self.model.logger)
        self.env.close()
        seconds = time.perf_counter() - started
        steps = self.model.num_timesteps - start_steps
        record = {
            "config": self.config.name,
            "seed": self.config.seed,
            "timesteps": int(self.model.num_timesteps),
            "wall_seconds": seconds,
            "cpu_seconds": time.process_time() - cpu_started,
            "steps_per_second": steps / max(seconds, 1e-9),
            "threads": self.config.threads,
        }
        (self.run_dir / TRAINING_RECORD).write_text(json.dumps(record, indent=2) + "\n")
        return TrainResult(
            run_dir=self.run_dir,
            best=self.run_dir / BEST,
            last=self.run_dir / LAST,
            timesteps=int(self.model.num_timesteps),
            seconds=seconds,
            steps_per_second=steps / max(seconds, 1e-9),
            metrics=metrics,
        )


def train(
    config: TrainConfig,
    resume: Path | None = None,
    progress: Progress | None = None,
) -> TrainResult:
    """Run training to `config.total_timesteps` (from a checkpoint's step count when resuming)."""
    return Trainer(config, resume).learn(progress)
