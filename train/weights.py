"""The actor half of a policy as plain dense layers (what export, snapshots and runtime use).

Only the path from observation to action logits is kept: for an sb3 policy the features
extractor (a flatten of the 1-D observation), the policy MLP and the action head; for an RLlib
module its actor encoder and pi head (`rllib_module`). The value head is training-only.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from gpuparley.policy.runtime import Activation, Layer

_ACTIVATIONS: dict[type[nn.Module], Activation] = {nn.Tanh: "tanh", nn.ReLU: "relu"}


def policy_layers(policy: nn.Module) -> list[Layer]:
    """Dense layers of `policy` (an sb3 ActorCriticPolicy with an MLP), in order, as numpy."""
    return dense_layers([*policy.mlp_extractor.policy_net, policy.action_net])


def dense_layers(modules: Iterable[nn.Module]) -> list[Layer]:
    """Linear layers with their following activation, from `modules` in forward order
    (containers are skipped: only modules without children count)."""
    layers: list[Layer] = []
    for module in modules:
        if next(module.children(), None) is not None:
            continue
        if isinstance(module, nn.Linear):
            layers.append(
                Layer(
                    module.weight.detach().cpu().numpy().copy(),
                    module.bias.detach().cpu().numpy().copy(),
                    "identity",
                )
            )
        elif type(module) in _ACTIVATIONS and layers:
            last = layers[-1]
            layers[-1] = Layer(last.weight, last.bias, _ACTIVATIONS[type(module)])
        else:
            raise ValueError(f"cannot export policy module {module!r}: only Linear/Tanh/ReLU")
    return layers
