"""The shared negotiator as an RLlib module: RLlib's default PPO MLP with action masking.

Observations are the market's dicts (`observation`: the encoder's features, `action_mask`:
legal actions). The networks (separate actor and critic MLPs, as stable-baselines3's
`MlpPolicy`) see the features only; illegal actions get a logit of `FLOAT_MIN` added, so they
are never sampled in training, never chosen in inference, and carry no gradient. The actor
(actor encoder + pi head) is the same stack of dense layers as the stable-baselines3 actor, so
`module_layers` turns it into the `policy.runtime.Layer`s that snapshots, `policy.onnx` and
`gpuparley export` use; masking stays outside the exported graph as before.
"""

from __future__ import annotations

from typing import Any

import gymnasium
import torch
from ray.rllib.algorithms.ppo.torch.default_ppo_torch_rl_module import DefaultPPOTorchRLModule
from ray.rllib.core.columns import Columns
from ray.rllib.utils.torch_utils import FLOAT_MIN

from gpuparley.policy.runtime import Layer
from gpuparley.train.weights import dense_layers

FEATURES, MASK = "observation", "action_mask"


class MaskedPPOModule(DefaultPPOTorchRLModule):
    """PPO's default torch module on the features, with masked action logits."""

    def __init__(self, *args: Any, observation_space: gymnasium.spaces.Dict, **kwargs: Any):
        self.masked_space = observation_space
        super().__init__(*args, observation_space=observation_space[FEATURES], **kwargs)

    def setup(self) -> None:
        super().setup()
        self.observation_space = self.masked_space

    @staticmethod
    def _split(batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        observations = batch[Columns.OBS]
        return observations[MASK], {**batch, Columns.OBS: observations[FEATURES]}

    @staticmethod
    def _masked(outputs: dict[str, Any], mask: torch.Tensor) -> dict[str, Any]:
        penalty = torch.clamp(torch.log(mask.float()), min=FLOAT_MIN)
        outputs[Columns.ACTION_DIST_INPUTS] = outputs[Columns.ACTION_DIST_INPUTS] + penalty
        return outputs

    def _forward(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        mask, features = self._split(batch)
        return self._masked(super()._forward(features, **kwargs), mask)

    def _forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        mask, features = self._split(batch)
        return self._masked(super()._forward_train(features, **kwargs), mask)

    def compute_values(self, batch: dict[str, Any], embeddings: Any = None) -> torch.Tensor:
        if isinstance(batch[Columns.OBS], dict):
            batch = self._split(batch)[1]
        return super().compute_values(batch, embeddings)

    def actor_logits(self, features: torch.Tensor) -> torch.Tensor:
        """Unmasked action logits of a batch of feature vectors, with gradients (the actor:
        actor encoder, then the pi head; what the imitation warm start fits)."""
        encoded = self.encoder.actor_encoder({Columns.OBS: features})
        return self.pi(encoded["encoder_out"])

    def actor_parameters(self) -> list[torch.nn.Parameter]:
        """The actor's parameters (the critic's are left out)."""
        return [*self.encoder.actor_encoder.parameters(), *self.pi.parameters()]

    @torch.no_grad()
    def logits(self, observations: Any) -> Any:
        """Unmasked action logits of a batch of feature vectors (what the export must equal)."""
        return self.actor_logits(torch.as_tensor(observations, dtype=torch.float32)).numpy()


def module_layers(module: MaskedPPOModule) -> list[Layer]:
    """The actor of `module` (encoder MLP, then the pi head) as dense layers, in order."""
    return dense_layers([*module.encoder.actor_encoder.modules(), *module.pi.modules()])
