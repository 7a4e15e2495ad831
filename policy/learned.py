"""A trained policy behind the `Negotiator` interface, usable wherever a scripted one is.

It acts deterministically: the argmax of the policy's action logits over the legal actions only,
so it never picks a masked action and the same observation always gets the same answer (what a
deployed negotiator and a reproducible evaluation both need).

Weights come from an exported ONNX file (`from_onnx`) or a checkpoint directory, which holds one
(`policy.onnx`, written with every training checkpoint); either way the encoder they were
trained for is checked against the current one. Any other `LogitsModel` (a numpy copy of the
learner during self-play, the torch policy in training's checks) plays through the same class.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gpuparley.envs.market.encoding import AgentView
from gpuparley.policy.runtime import Backend, LogitsModel, load_onnx_policy, masked_argmax

ONNX_FILE = "policy.onnx"


class LearnedNegotiator:
    """Masked argmax over a policy's logits."""

    deterministic = True  # `act` depends on its arguments alone

    def __init__(self, model: LogitsModel, name: str = "learned") -> None:
        self.model = model
        self.name = name

    def reset(self, seed: int | None = None) -> None:
        return None  # a deterministic, stateless policy

    def act(self, observation: np.ndarray, mask: np.ndarray, view: AgentView | None) -> int:
        logits = self.model.logits(np.asarray(observation, dtype=np.float32).reshape(1, -1))
        return int(masked_argmax(logits[0], mask))

    @classmethod
    def from_onnx(
        cls, path: str | Path, backend: Backend = "numpy", name: str = "learned"
    ) -> LearnedNegotiator:
        return cls(load_onnx_policy(path, backend=backend), name=name)

    @classmethod
    def from_checkpoint(
        cls, directory: str | Path, backend: Backend = "numpy", name: str = "learned"
    ) -> LearnedNegotiator:
        """The checkpoint directory's exported policy (`policy.onnx`)."""
        path = Path(directory) / ONNX_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"{directory} has no {ONNX_FILE}; write one with "
                f"`gpuparley export {directory} --out {path}`"
            )
        return cls.from_onnx(path, backend=backend, name=name)
