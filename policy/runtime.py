"""Run an exported negotiator policy: onnxruntime, or pure numpy as a fallback.

A cluster-side negotiator must not drag in torch or stable-baselines3 (hundreds of MB, slow
start), so this module imports neither: the ONNX file written by `gpuparley export` holds the
policy's action *logits* as a small MLP (Gemm + activation), and masking is applied here, outside
the graph, so any legal-action mask works. With onnxruntime (what the negotiator image installs)
the file is read by onnxruntime alone, metadata included; the numpy fallback reads the same
weights from the ONNX initializers with the `onnx` package and evaluates the same ops, for hosts
without onnxruntime (and as a cross-check of the export).

Every model records the observation spec it was trained on in its metadata
(`policy.encoder_spec`); a model built for another encoder is refused, because it would
silently act on misread features.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from gpuparley.envs.market.encoding import ACTION_COUNT, OBSERVATION_SIZE
from gpuparley.policy.encoder_spec import (
    SPEC_HASH_KEY,
    SPEC_VERSION_KEY,
    SpecMismatchError,
    check_encoder_spec,
)

Activation = Literal["tanh", "relu", "identity"]
Backend = Literal["onnxruntime", "numpy"]
_ONNX_ACTIVATIONS: dict[str, Activation] = {"Tanh": "tanh", "Relu": "relu"}


@dataclass(frozen=True, slots=True)
class Layer:
    """One dense layer `activation(x @ weight.T + bias)`; weight has shape (out, in) as in torch."""

    weight: np.ndarray
    bias: np.ndarray
    activation: Activation


def _activate(x: np.ndarray, activation: Activation) -> np.ndarray:
    if activation == "tanh":
        return np.tanh(x)
    if activation == "relu":
        return np.maximum(x, 0.0)
    return x


class NumpyMlp:
    """Pure-numpy forward pass of the exported MLP (the ops `policy.onnx_graph` writes)."""

    def __init__(self, layers: Sequence[Layer]) -> None:
        self.layers = [
            Layer(
                np.ascontiguousarray(layer.weight.T, dtype=np.float32),  # stored (in, out)
                np.asarray(layer.bias, dtype=np.float32),
                layer.activation,
            )
            for layer in layers
        ]

    def logits(self, observations: np.ndarray) -> np.ndarray:
        x = np.asarray(observations, dtype=np.float32)
        for layer in self.layers:
            x = _activate(x @ layer.weight + layer.bias, layer.activation)
        return x


def masked_argmax(logits: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Deterministic choice: the highest-logit legal action per row (ties -> lowest index)."""
    masked = np.where(np.asarray(masks, dtype=bool), logits, -np.inf)
    return masked.argmax(axis=-1)


class LogitsModel(Protocol):
    def logits(self, observations: np.ndarray) -> np.ndarray: ...


class OnnxPolicy:
    """A loaded ONNX policy: the logits of a batch of observations, whatever the backend, and
    the model's metadata. (`policy.learned.LearnedNegotiator` turns logits into actions.)"""

    def __init__(self, model: LogitsModel, backend: str, metadata: dict[str, str]) -> None:
        self.model = model
        self.backend = backend
        self.metadata = metadata

    def logits(self, observations: np.ndarray) -> np.ndarray:
        return self.model.logits(np.atleast_2d(observations))


class OnnxRuntimeMlp:
    """The same logits through onnxruntime (single-threaded: one decision at a time is small)."""

    def __init__(self, path: Path, threads: int = 1) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name
        self.metadata: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)
        self.features = self.session.get_inputs()[0].shape[-1]
        self.actions = self.session.get_outputs()[0].shape[-1]

    def logits(self, observations: np.ndarray) -> np.ndarray:
        feed = {self.input_name: np.asarray(observations, dtype=np.float32)}
        return self.session.run(None, feed)[0]


def read_onnx(path: str | Path) -> tuple[list[Layer], dict[str, str]]:
    """The dense layers and metadata of an exported policy, checked against the current spec
    (needs the `onnx` package; the onnxruntime backend does not)."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise ImportError(
            "the numpy backend reads ONNX weights with the `onnx` package (pip install onnx); "
            "or load the policy with the onnxruntime backend"
        ) from None

    path = _existing(path)
    with _parsing(path):
        model = onnx.load(str(path))
    metadata = {prop.key: prop.value for prop in model.metadata_props}
    check_encoder_spec(
        metadata.get(SPEC_VERSION_KEY), metadata.get(SPEC_HASH_KEY), f"ONNX policy {path}"
    )
    weights = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    layers: list[Layer] = []
    nodes = list(model.graph.node)
    for index, node in enumerate(nodes):
        if node.op_type != "Gemm":
            continue
        following = nodes[index + 1].op_type if index + 1 < len(nodes) else ""
        activation = _ONNX_ACTIVATIONS.get(following, "identity")
        layers.append(Layer(weights[node.input[1]], weights[node.input[2]], activation))
    if not layers:
        raise ValueError(f"ONNX policy {path} holds no dense (Gemm) layers")
    return layers, metadata


@contextmanager
def _parsing(path: Path) -> Iterator[None]:
    """A file onnx or onnxruntime cannot parse (not a model, truncated) becomes a `ValueError`
    naming it, as every other bad policy is, instead of their own exception types."""
    try:
        yield
    except (ValueError, ImportError):
        raise
    except Exception as exc:  # onnx's DecodeError, onnxruntime's InvalidProtobuf, Fail, ...
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ValueError(f"{path} is not an ONNX policy ({reason})") from None


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no ONNX policy at {path}")
    return path


def _check_shape(path: Path, features: object, actions: object) -> None:
    if features != OBSERVATION_SIZE or actions != ACTION_COUNT:
        raise SpecMismatchError(
            f"ONNX policy {path} maps {features} features to {actions} actions; the encoder "
            f"has {OBSERVATION_SIZE} and {ACTION_COUNT}"
        )


def load_onnx_policy(
    path: str | Path, backend: Backend = "onnxruntime", threads: int = 1
) -> OnnxPolicy:
    """Load an exported policy; refuses one trained for another observation spec."""
    path = _existing(path)
    if backend == "onnxruntime":
        with _parsing(path):
            session = OnnxRuntimeMlp(path, threads)
        metadata = session.metadata
        check_encoder_spec(
            metadata.get(SPEC_VERSION_KEY), metadata.get(SPEC_HASH_KEY), f"ONNX policy {path}"
        )
        _check_shape(path, session.features, session.actions)
        return OnnxPolicy(session, backend, metadata)
    if backend == "numpy":
        layers, metadata = read_onnx(path)
        _check_shape(path, layers[0].weight.shape[1], layers[-1].weight.shape[0])
        return OnnxPolicy(NumpyMlp(layers), backend, metadata)
    raise ValueError(f"backend must be 'onnxruntime' or 'numpy', got {backend!r}")
