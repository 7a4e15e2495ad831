"""A warm start by imitation: the policy first learns to act like a scripted negotiator.

Reinforcement learning from random weights spends its first hundred thousand decisions finding
out that bidding at all is worth something, and lands wherever the noise of self-play takes it.
Starting from a negotiator that already plays sensibly (the truthful one, by default) turns the
question into "where does deviating from it pay?". The warm start collects the teacher's
decisions in the learner's own seats of the training games (the opponents drawn as in
training), then fits the actor by cross-entropy on the legal actions only (the masked logits),
with some of the target spread over every legal action so that the policy is not so sure of
itself that PPO never tries anything else; PPO continues from there. The value head is left to
PPO. The fit (`fit_actor`) takes any actor: the stable-baselines3 model's (`imitate`) or the
RLlib module's (`rllib_backend`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.preprocessing import preprocess_obs

from gpuparley.envs.market.negotiator import Negotiator
from gpuparley.train.vec_env import MarketVecEnv


@dataclass(frozen=True)
class Demonstrations:
    """Observations, legal-action masks and the teacher's actions, one row per decision."""

    observations: np.ndarray
    masks: np.ndarray
    actions: np.ndarray


def collect(env: MarketVecEnv, teacher: Negotiator, decisions: int) -> Demonstrations:
    """Play the teacher in every learner seat of `env` for at least `decisions` decisions."""
    observations, masks, actions = [], [], []
    obs = env.reset()
    while len(actions) * env.num_envs < decisions:
        mask = env.action_masks()
        chosen = np.array(
            [
                teacher.act(obs[i], mask[i], env.games[game].env.views[agent])
                for i, (game, agent) in enumerate(map(env.seat, range(env.num_envs)))
            ]
        )
        observations.append(obs)
        masks.append(mask)
        actions.append(chosen)
        obs, _rewards, _dones, _infos = env.step(chosen)
    return Demonstrations(
        np.concatenate(observations), np.concatenate(masks), np.concatenate(actions)
    )


def imitate(
    model: BaseAlgorithm,
    demonstrations: Demonstrations,
    epochs: int,
    smoothing: float = 0.0,
    seed: int = 0,
) -> float:
    """`fit_actor` for a stable-baselines3 model's actor (policy MLP and action head)."""
    policy = model.policy
    actor = [*policy.mlp_extractor.policy_net.parameters(), *policy.action_net.parameters()]
    return fit_actor(
        lambda observations: _logits(policy, observations),
        actor,
        demonstrations,
        epochs,
        smoothing,
        seed=seed,
    )


def fit_actor(
    actor_logits: Callable[[torch.Tensor], torch.Tensor],
    parameters: Iterable[torch.nn.Parameter],
    demonstrations: Demonstrations,
    epochs: int,
    smoothing: float = 0.0,
    batch_size: int = 256,
    learning_rate: float = 1e-3,
    seed: int = 0,
) -> float:
    """Fit an actor (`actor_logits`: observations to unmasked logits, with gradients, through
    `parameters`) to the demonstrations (masked cross-entropy, the target spreading `smoothing`
    of its mass over the legal actions, so that PPO still explores); returns the share of them
    the fitted policy's argmax reproduces."""
    optimiser = torch.optim.Adam(list(parameters), lr=learning_rate)
    observations = torch.as_tensor(demonstrations.observations, dtype=torch.float32)
    illegal = torch.as_tensor(~demonstrations.masks.astype(bool))
    targets = torch.as_tensor(demonstrations.actions, dtype=torch.long)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(targets), generator=generator)
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            legal = ~illegal[batch]
            logits = actor_logits(observations[batch]).masked_fill(~legal, -1e9)
            target = torch.nn.functional.one_hot(targets[batch], logits.shape[1]).float()
            spread = legal.float() / legal.sum(dim=1, keepdim=True)
            target = (1 - smoothing) * target + smoothing * spread
            loss = -(target * torch.log_softmax(logits, dim=1)).sum(dim=1).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    with torch.no_grad():
        logits = actor_logits(observations).masked_fill(illegal, -1e9)
        return float((logits.argmax(dim=1) == targets).float().mean())


def _logits(policy: torch.nn.Module, observations: torch.Tensor) -> torch.Tensor:
    """Action logits with gradients (`checkpoint.TorchLogits` is the same path without)."""
    features = policy.pi_features_extractor(preprocess_obs(observations, policy.observation_space))
    return policy.action_net(policy.mlp_extractor.forward_actor(features))
