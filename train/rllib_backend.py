"""Training on RLlib: the same config, environment, opponents and checkpoints as the
stable-baselines3 path, with Ray doing the sampling (`gpuparley train --backend rllib`).

* Environment: `rllib_env` (the learner seats of each game; opponents drawn from the mix): the
  sb3 VecEnv's games (bundled scenarios x copies, then the `generator` section's games), with
  the same rewards (`reward_welfare` included).
* Policy: one module, `negotiator`, plays every learner slot (parameter sharing), PPO with masked
  logits (`rllib_module`); the network is `policy.net_arch`/`activation` for the actor and the
  critic separately, as sb3's `MlpPolicy`.
* PPO: `ppo` maps onto RLlib's names (n_steps per learner seat x seats = the train batch,
  batch_size = minibatch, n_epochs, learning rate, gamma, GAE lambda, clip range, entropy and
  value coefficients, gradient-norm clip); no KL penalty and no value clipping, as in sb3.
* Steps are learner decisions (agent steps), as sb3 counts them, so `total_timesteps`,
  `snapshots.every` and `evaluation.every` mean the same on both backends.
* Self-play: every `snapshots.every` steps the learner's actor is frozen and sent to every env
  runner's pool, and before every iteration the current actor (for `self` seats of generated
  games, as sb3 refreshes it every rollout).
* Warm start (`warm_start`): the teacher's decisions are collected in the sb3 VecEnv built from
  the same config (`trainer.teacher_demonstrations`), the learner's actor is fitted to them by
  the same masked cross-entropy (`imitation.fit_actor`), and the env runners get its weights.
* Evaluation, the `best/` rule (`evaluation.select`, on the validation generator seeds), `last/`
  and `training.json` are the sb3 path's (`trainer.evaluate_layers`), the warm-started actor
  evaluated before PPO begins; a checkpoint holds the saved RLModule (`rl_module/`) instead of
  `model.zip`, and `policy.onnx`.
* Logs: TensorBoard scalars in `<run>/tb/rllib` (returns, losses, evaluation).

The driver runs the learner; env runners are Ray actors (`rllib.env_runners`), on a local Ray
started for the run or on the cluster at `address` (`train.ray_cluster`). Runs are seeded
(RLlib's seed, each game's draws), but sampling on several actors is not bit-reproducible.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from ray.rllib.algorithms.algorithm import Algorithm
from ray.rllib.algorithms.ppo import PPOConfig
from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig
from ray.rllib.core.rl_module.multi_rl_module import MultiRLModuleSpec
from ray.rllib.core.rl_module.rl_module import RLModule, RLModuleSpec
from ray.rllib.utils.metrics import (
    ENV_RUNNER_RESULTS,
    EPISODE_RETURN_MEAN,
    LEARNER_RESULTS,
    NUM_AGENT_STEPS_SAMPLED_LIFETIME,
)
from rich.progress import Progress
from torch.utils.tensorboard import SummaryWriter

from gpuparley.policy.learned import ONNX_FILE
from gpuparley.train.checkpoint import (
    RLLIB_MODULE_DIR,
    check_checkpoint_spec,
    load_checkpoint_config,
    load_metrics,
    write_checkpoint_files,
    write_layers,
)
from gpuparley.train.config import TrainConfig, WarmStartConfig
from gpuparley.train.evaluate import Baselines
from gpuparley.train.imitation import fit_actor
from gpuparley.train.opponents import SnapshotPool
from gpuparley.train.ray_cluster import ray_session
from gpuparley.train.rllib_env import (
    MarketTrainingEnv,
    add_snapshot,
    learner_slots,
    set_current,
)
from gpuparley.train.rllib_module import MaskedPPOModule, module_layers
from gpuparley.train.scenario_sources import ScenarioSource, training_sources
from gpuparley.train.trainer import (
    BEST,
    LAST,
    TrainResult,
    WarmStart,
    build_env,
    eval_scalars,
    evaluate_layers,
    finish_run,
    generated_games,
    run_dir_of,
    teacher_demonstrations,
    validation_scenarios,
)

MODULE_ID = "negotiator"
NO_VALUE_CLIP = 1e12  # sb3 does not clip the value loss
SYNC_TIMEOUT = 600.0  # seconds to wait for the warm-started weights to reach the env runners


def games(config: TrainConfig) -> list[ScenarioSource]:
    """The scenario source of every training game (as the sb3 VecEnv's)."""
    return training_sources(config.scenarios, config.copies, generated_games(config))


def env_config(config: TrainConfig) -> dict[str, Any]:
    """What every environment of the run is built from (`rllib_env.MarketTrainingEnv`)."""
    return {
        "scenarios": list(config.scenarios),
        "copies": config.copies,
        "generated": generated_games(config),
        "mechanisms": list(config.mechanisms),
        "mix": dict(config.opponents),
        "seed": config.seed,
        "max_epochs": config.max_epochs,
        "reward_shaping": config.reward_shaping,
        "reward_scale": config.reward_scale,
        "reward_welfare": config.reward_welfare,
        "slots": max(learner_slots(games(config), config.opponents)),
        "pool_size": config.snapshots.pool_size,
    }


def algorithm_config(config: TrainConfig) -> PPOConfig:
    """RLlib's PPO config for a training config (module docstring)."""
    sources = games(config)
    seats = sum(learner_slots(sources, config.opponents))
    ppo, rllib = config.ppo, config.rllib
    model = DefaultModelConfig(
        fcnet_hiddens=list(config.policy.net_arch),
        fcnet_activation=config.policy.activation,
        vf_share_layers=False,
    )
    return (
        PPOConfig()
        .environment(MarketTrainingEnv, env_config=env_config(config), disable_env_checking=True)
        .env_runners(
            num_env_runners=rllib.env_runners,
            num_envs_per_env_runner=rllib.envs_per_runner or len(sources),
            num_cpus_per_env_runner=rllib.cpus_per_runner,
        )
        .multi_agent(
            policies={MODULE_ID},
            policy_mapping_fn=lambda agent_id, episode, **kwargs: MODULE_ID,
            count_steps_by="agent_steps",  # batches in learner decisions, as sb3's rollouts
        )
        .rl_module(
            rl_module_spec=MultiRLModuleSpec(
                rl_module_specs={
                    MODULE_ID: RLModuleSpec(module_class=MaskedPPOModule, model_config=model)
                }
            )
        )
        .training(
            train_batch_size_per_learner=ppo.n_steps * seats,
            minibatch_size=ppo.batch_size,
            num_epochs=ppo.n_epochs,
            lr=ppo.learning_rate,
            gamma=ppo.gamma,
            lambda_=ppo.gae_lambda,
            clip_param=ppo.clip_range,
            entropy_coeff=ppo.ent_coef,
            vf_loss_coeff=ppo.vf_coef,
            vf_clip_param=NO_VALUE_CLIP,
            grad_clip=ppo.max_grad_norm,
            grad_clip_by="global_norm",
            use_kl_loss=False,
        )
        .learners(num_learners=0)
        .debugging(seed=config.seed, log_level="ERROR")
    )


def agent_steps(result: dict[str, Any]) -> int:
    """Learner decisions sampled so far (RLlib reports them per agent)."""
    steps = result.get(ENV_RUNNER_RESULTS, {}).get(NUM_AGENT_STEPS_SAMPLED_LIFETIME, 0)
    return int(sum(steps.values()) if isinstance(steps, dict) else steps)


def save_rllib_checkpoint(
    module: MaskedPPOModule,
    directory: Path,
    config: TrainConfig,
    metrics: dict[str, Any],
) -> Path:
    """A checkpoint directory (`train.checkpoint`) with the saved module as the model."""
    directory.mkdir(parents=True, exist_ok=True)
    module.save_to_path(str((directory / RLLIB_MODULE_DIR).resolve()))
    layers = module_layers(module)
    write_layers(layers, config, directory / ONNX_FILE, directory.name, metrics["timesteps"])
    return write_checkpoint_files(directory, config, metrics)


def load_rllib_module(directory: str | Path) -> MaskedPPOModule:
    """The checkpoint's module on CPU, after checking its spec."""
    directory = Path(directory)
    check_checkpoint_spec(directory)
    module = RLModule.from_checkpoint(str((directory / RLLIB_MODULE_DIR).resolve()))
    assert isinstance(module, MaskedPPOModule)
    return module


def export_rllib_checkpoint(checkpoint: Path, out: str | Path) -> Path:
    """`checkpoint.export_checkpoint` for an RLlib checkpoint: the same ONNX policy."""
    module = load_rllib_module(checkpoint)
    config = load_checkpoint_config(checkpoint)
    steps = int(load_metrics(checkpoint).get("timesteps", 0))
    return write_layers(module_layers(module), config, out, checkpoint.resolve().name, steps)


class RLlibTrainer:
    """One RLlib training run: algorithm, warm start, snapshots, evaluation, checkpoints, logs."""

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.run_dir = run_dir_of(config)
        self.best_score = float("-inf")
        self.validation = validation_scenarios(config)
        self.baselines: Baselines = {}
        self.warm = WarmStart()
        torch.manual_seed(config.seed)
        torch.set_num_threads(config.threads)
        self.algorithm: Algorithm = algorithm_config(config).build_algo()
        self.writer = SummaryWriter(str(self.run_dir / "tb" / "rllib"))
        if config.warm_start is not None:
            started = time.perf_counter()
            self.warm.accuracy = self.warm_start(config.warm_start)
            self.warm.seconds = time.perf_counter() - started

    def module(self) -> MaskedPPOModule:
        module = self.algorithm.get_module(MODULE_ID)
        assert isinstance(module, MaskedPPOModule)
        return module

    def warm_start(self, spec: WarmStartConfig) -> float:
        """Fit the learner's actor to the teacher's decisions (`train.imitation`), collected in
        the games of the sb3 VecEnv of this config, and send it to the env runners; the fitted
        share."""
        env = build_env(self.config, SnapshotPool(self.config.snapshots.pool_size))
        try:
            demonstrations = teacher_demonstrations(spec, env, self.config.seed)
        finally:
            env.close()
        seed = self.config.seed

        def fit(learner: Any, **kwargs: Any) -> float:
            module = learner.module[MODULE_ID]
            return fit_actor(
                module.actor_logits,
                module.actor_parameters(),
                demonstrations,
                spec.epochs,
                spec.smoothing,
                seed=seed,
            )

        accuracy = float(next(iter(self.algorithm.learner_group.foreach_learner(fit))).get())
        self.algorithm.env_runner_group.sync_weights(
            from_worker_or_learner_group=self.algorithm.learner_group,
            inference_only=True,
            timeout_seconds=SYNC_TIMEOUT,
        )
        return accuracy

    def snapshot(self) -> None:
        layers = module_layers(self.module())
        self.algorithm.env_runner_group.foreach_env_runner(lambda runner: add_snapshot(layers))

    def refresh_current(self) -> None:
        layers = module_layers(self.module())
        self.algorithm.env_runner_group.foreach_env_runner(lambda runner: set_current(layers))

    def checkpoint(self, steps: int) -> dict[str, Any]:
        """Evaluate, save `last/`, and `best/` when the score improved."""
        layers = module_layers(self.module())
        metrics = evaluate_layers(layers, self.config, self.validation, self.baselines)
        metrics["timesteps"] = steps
        for key, value in eval_scalars(metrics).items():
            self.writer.add_scalar(f"eval/{key}", value, steps)
        save_rllib_checkpoint(self.module(), self.run_dir / LAST, self.config, metrics)
        if metrics["score"] > self.best_score:
            self.best_score = metrics["score"]
            save_rllib_checkpoint(self.module(), self.run_dir / BEST, self.config, metrics)
        return metrics

    def log(self, result: dict[str, Any], steps: int) -> None:
        returns = result.get(ENV_RUNNER_RESULTS, {}).get(EPISODE_RETURN_MEAN)
        if returns is not None:
            self.writer.add_scalar("rollout/ep_rew_mean", returns, steps)
        for key, value in result.get(LEARNER_RESULTS, {}).get(MODULE_ID, {}).items():
            if isinstance(value, int | float):
                self.writer.add_scalar(f"train/{key}", value, steps)

    def learn(self, progress: Progress | None = None) -> TrainResult:
        config = self.config
        total = config.total_timesteps
        task = None
        if progress is not None:
            label = f"train {config.name} (seed {config.seed}, rllib)"
            task = progress.add_task(label, total=total, completed=0, rate="-")
        self.snapshot()  # never an empty pool
        next_snapshot, next_eval = config.snapshots.every, config.evaluation.every
        started, cpu_started = time.perf_counter(), time.process_time()
        if self.warm.accuracy is not None:
            # the warm-started policy is a candidate for `best` too
            self.warm.score = self.checkpoint(0)["score"]
        steps = 0
        while steps < total:
            self.refresh_current()
            result = self.algorithm.train()
            steps = agent_steps(result)
            self.log(result, steps)
            if steps >= next_snapshot:
                self.snapshot()
                next_snapshot += config.snapshots.every
            if steps >= next_eval and steps < total:
                self.checkpoint(steps)
                next_eval += config.evaluation.every
            if progress is not None and task is not None:
                rate = steps / max(time.perf_counter() - started, 1e-9)
                progress.update(task, completed=min(steps, total), rate=f"{rate:,.0f}")
        seconds = time.perf_counter() - started
        metrics = self.checkpoint(steps)
        self.writer.close()
        self.algorithm.stop()
        return finish_run(
            self.run_dir,
            config,
            self.warm,
            steps,
            steps,
            seconds,
            time.process_time() - cpu_started,
            metrics,
            backend="rllib",
            env_runners=config.rllib.env_runners,
        )


def train_rllib(
    config: TrainConfig, address: str | None = None, progress: Progress | None = None
) -> TrainResult:
    """Train to `config.total_timesteps` on RLlib, on the Ray cluster at `address` or on a
    local Ray started (and stopped) for the run."""
    with ray_session(address):
        return RLlibTrainer(config).learn(progress)
