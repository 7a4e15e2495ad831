"""Checkpoint directories: the model, the config that made it, its spec, and how well it did.

    <dir>/model.zip      stable-baselines3 (Maskable)PPO model (or, from the RLlib backend,
    <dir>/rl_module/     the saved RLModule: `rllib_backend`)
    <dir>/policy.onnx    its actor as an ONNX graph of action logits (what everything outside
                         training plays: `policy.learned`, no torch needed)
    <dir>/config.yaml    the resolved training config (defaults filled in, actual seed)
    <dir>/spec.json      SPEC_VERSION and spec_hash() of the encoder it was trained on
    <dir>/metrics.json   its evaluation metrics and the step it was taken at

Loading checks spec.json first: a model trained on another observation layout would act on
misread features, so it is refused with both versions named. `export_checkpoint` writes a
checkpoint's policy anywhere else (`gpuparley export`): the graph holds the actor MLP only;
masking and the argmax stay outside it (`policy.runtime`), so any legal-action mask works, and
the encoder's spec goes into the ONNX metadata.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from sb3_contrib import MaskablePPO
from stable_baselines3 import PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.preprocessing import preprocess_obs

from gpuparley.envs.market.encoding import ACTION_COUNT, OBSERVATION_SIZE, SPEC_VERSION, spec_hash
from gpuparley.policy.encoder_spec import check_encoder_spec
from gpuparley.policy.learned import ONNX_FILE
from gpuparley.policy.onnx_graph import write_model
from gpuparley.policy.runtime import Layer
from gpuparley.train.config import TrainConfig, validate_config
from gpuparley.train.weights import policy_layers

MODEL_FILE, CONFIG_FILE, SPEC_FILE, METRICS_FILE = (
    "model.zip",
    "config.yaml",
    "spec.json",
    "metrics.json",
)
ALGORITHMS: dict[str, type[BaseAlgorithm]] = {"maskable_ppo": MaskablePPO, "ppo": PPO}


RLLIB_MODULE_DIR = "rl_module"
"""An RLlib checkpoint's model: the saved RLModule (`rllib_backend`), instead of model.zip."""


def is_rllib_checkpoint(directory: str | Path) -> bool:
    return (Path(directory) / RLLIB_MODULE_DIR).is_dir()


class CheckpointError(ValueError):
    """A checkpoint directory that is missing a part."""


def save_checkpoint(
    model: BaseAlgorithm, directory: str | Path, config: TrainConfig, metrics: dict[str, Any]
) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.save(directory / MODEL_FILE)
    write_policy(model, config, directory / ONNX_FILE, directory.name)
    return write_checkpoint_files(directory, config, metrics)


def write_checkpoint_files(directory: Path, config: TrainConfig, metrics: dict[str, Any]) -> Path:
    """The files every backend's checkpoint has beside its model: config, spec, metrics."""
    (directory / CONFIG_FILE).write_text(yaml.safe_dump(config.resolved(), sort_keys=False))
    spec = {
        "version": SPEC_VERSION,
        "hash": spec_hash(),
        "observation_size": OBSERVATION_SIZE,
        "action_count": ACTION_COUNT,
    }
    (directory / SPEC_FILE).write_text(json.dumps(spec, indent=2) + "\n")
    (directory / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
    return directory


def _require(directory: Path, name: str) -> Path:
    path = directory / name
    if not path.is_file():
        raise CheckpointError(f"{directory} is not a checkpoint directory: {name} is missing")
    return path


def check_checkpoint_spec(directory: str | Path) -> None:
    """Refuse a checkpoint trained on another encoder (SpecMismatchError names both)."""
    directory = Path(directory)
    spec = json.loads(_require(directory, SPEC_FILE).read_text())
    check_encoder_spec(spec.get("version"), spec.get("hash"), f"checkpoint {directory}")


def load_checkpoint_config(directory: str | Path) -> TrainConfig:
    path = _require(Path(directory), CONFIG_FILE)
    return validate_config(yaml.safe_load(path.read_text()), str(path))


def load_metrics(directory: str | Path) -> dict[str, Any]:
    return json.loads(_require(Path(directory), METRICS_FILE).read_text())


def load_model(directory: str | Path, env: Any = None) -> BaseAlgorithm:
    """The checkpoint's model on CPU, after checking its spec."""
    directory = Path(directory)
    check_checkpoint_spec(directory)
    config = load_checkpoint_config(directory)
    algorithm = ALGORITHMS[config.algorithm]
    return algorithm.load(_require(directory, MODEL_FILE), env=env, device="cpu")


class TorchLogits:
    """Action logits straight from the torch policy (the reference the exports are checked on)."""

    def __init__(self, policy: torch.nn.Module) -> None:
        self.policy = policy

    @torch.no_grad()
    def logits(self, observations: np.ndarray) -> np.ndarray:
        obs = torch.as_tensor(np.atleast_2d(observations), dtype=torch.float32)
        features = self.policy.pi_features_extractor(
            preprocess_obs(obs, self.policy.observation_space)
        )
        latent = self.policy.mlp_extractor.forward_actor(features)
        return self.policy.action_net(latent).numpy()  # raw, not log-softmax-normalised


def write_policy(model: BaseAlgorithm, config: TrainConfig, out: str | Path, name: str) -> Path:
    """The model's actor as an ONNX policy at `out`, with where it came from in its metadata."""
    return write_layers(policy_layers(model.policy), config, out, name, model.num_timesteps)


def write_layers(
    layers: list[Layer], config: TrainConfig, out: str | Path, name: str, timesteps: int
) -> Path:
    """An actor's dense layers as an ONNX policy at `out`, where it came from in its metadata."""
    metadata = {
        "gpuparley.checkpoint": name,
        "gpuparley.config": config.name,
        "gpuparley.algorithm": config.algorithm,
        "gpuparley.timesteps": str(timesteps),
    }
    return write_model(layers, out, metadata)


def export_checkpoint(checkpoint: str | Path, out: str | Path) -> Path:
    """Write `checkpoint`'s policy logits to `out` (refuses a checkpoint of another spec); an
    RLlib checkpoint (`rllib_backend.MODULE_DIR`) goes through `rllib_backend`."""
    checkpoint = Path(checkpoint)
    if is_rllib_checkpoint(checkpoint):
        from gpuparley.train.rllib_backend import export_rllib_checkpoint

        return export_rllib_checkpoint(checkpoint, out)
    model = load_model(checkpoint)
    return write_policy(model, load_checkpoint_config(checkpoint), out, checkpoint.resolve().name)
