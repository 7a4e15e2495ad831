"""A trained policy behind the `Negotiator` interface, usable wherever a scripted one is.

It acts deterministically: the argmax of the policy's action logits over the legal actions only,
so it never picks a masked action and the same observation always gets the same answer (what a
deployed negotiator and a reproducible evaluation both need).

Weights come from a training checkpoint directory (`from_checkpoint`) or an exported ONNX file
(`from_onnx`); either way the observation spec they were trained on is checked against the
current encoder and a mismatch is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from gpuparley.deploy.runtime import LogitsModel, NumpyMlp, load_policy, masked_argmax
from gpuparley.envs.market.encoding import AgentView

ONNX_FILE = "policy.onnx"


class LearnedNegotiator:
    """Masked argmax over a policy's logits."""

    def __init__(self, model: LogitsModel, name: str = "learned") -> None:
        self.model = model
        self.name = name

    def reset(self, seed: int | None = None) -> None:
        return None  # a deterministic, stateless policy

    def act(self, observation: np.ndarray, mask: np.ndarray, view: AgentView) -> int:
        logits = self.model.logits(np.asarray(observation, dtype=np.float32).reshape(1, -1))
        return int(masked_argmax(logits[0], mask))

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        backend: Literal["numpy", "onnxruntime", "torch"] = "numpy",
        name: str = "learned",
    ) -> LearnedNegotiator:
        """Load a checkpoint directory. `numpy`/`onnxruntime` use its `policy.onnx` when it has
        one (no torch needed); otherwise, or with `torch`, the sb3 model is loaded."""
        path = Path(path)
        if backend != "torch" and (path / ONNX_FILE).is_file():
            return cls.from_onnx(path / ONNX_FILE, backend=backend, name=name)
        from gpuparley.train.checkpoint import TorchLogits, load_model
        from gpuparley.train.weights import policy_layers

        model = load_model(path)
        if backend == "torch":
            return cls(TorchLogits(model.policy), name=name)
        if backend == "onnxruntime":
            raise FileNotFoundError(f"{path} has no {ONNX_FILE}; run `gpuparley export` first")
        return cls(NumpyMlp(policy_layers(model.policy)), name=name)

    @classmethod
    def from_onnx(
        cls,
        path: str | Path,
        backend: Literal["numpy", "onnxruntime"] = "numpy",
        name: str = "learned",
    ) -> LearnedNegotiator:
        return cls(load_policy(path, backend=backend), name=name)
