"""The actor half of an sb3 policy as plain dense layers (what export, snapshots and runtime use).

Only the path from observation to action logits is kept: features extractor (a flatten of the 1-D
observation), the policy MLP and the action head. The value head is training-only.
"""

from __future__ import annotations

from torch import nn

from gpuparley.policy.runtime import Activation, Layer

_ACTIVATIONS: dict[type[nn.Module], Activation] = {nn.Tanh: "tanh", nn.ReLU: "relu"}


def policy_layers(policy: nn.Module) -> list[Layer]:
    """Dense layers of `policy` (an sb3 ActorCriticPolicy with an MLP), in order, as numpy."""
    modules = [*policy.mlp_extractor.policy_net, policy.action_net]
    layers: list[Layer] = []
    for module in modules:
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
