"""Write a dense policy network as a small ONNX graph of action logits.

The graph is built directly from the layer weights (Gemm + Tanh/Relu) rather than traced from
torch: the result is the same for an MLP, needs no exporter toolchain that changes between torch
releases, and uses exactly the ops `policy.runtime`'s numpy fallback implements. Masking stays
outside the graph so any legal-action mask works at run time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import onnx
from onnx import TensorProto, helper, numpy_helper

from gpuparley.envs.market.encoding import SPEC_VERSION, spec_hash
from gpuparley.policy.encoder_spec import SPEC_HASH_KEY, SPEC_VERSION_KEY
from gpuparley.policy.runtime import Layer

INPUT_NAME = "observation"
OUTPUT_NAME = "logits"
OPSET = 17
_ACTIVATION_OPS = {"tanh": "Tanh", "relu": "Relu"}


def build_model(layers: Sequence[Layer], extra_metadata: Mapping[str, str] | None = None):
    """An ONNX ModelProto: observation[batch, in] -> logits[batch, actions], spec in metadata."""
    nodes, initializers = [], []
    current = INPUT_NAME
    for index, layer in enumerate(layers):
        weight, bias = f"layer{index}.weight", f"layer{index}.bias"
        initializers += [
            numpy_helper.from_array(layer.weight.astype("float32"), weight),
            numpy_helper.from_array(layer.bias.astype("float32"), bias),
        ]
        last = index == len(layers) - 1
        dense = OUTPUT_NAME if last and layer.activation == "identity" else f"dense{index}"
        nodes.append(helper.make_node("Gemm", [current, weight, bias], [dense], transB=1))
        current = dense
        if layer.activation != "identity":
            activated = OUTPUT_NAME if last else f"act{index}"
            nodes.append(helper.make_node(_ACTIVATION_OPS[layer.activation], [dense], [activated]))
            current = activated
    inputs = [
        helper.make_tensor_value_info(
            INPUT_NAME, TensorProto.FLOAT, ["batch", layers[0].weight.shape[1]]
        )
    ]
    outputs = [
        helper.make_tensor_value_info(
            OUTPUT_NAME, TensorProto.FLOAT, ["batch", layers[-1].weight.shape[0]]
        )
    ]
    graph = helper.make_graph(nodes, "gpuparley_policy_logits", inputs, outputs, initializers)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="gpuparley"
    )
    model.ir_version = 8  # readable by every onnxruntime >= 1.15
    metadata = {SPEC_VERSION_KEY: SPEC_VERSION, SPEC_HASH_KEY: spec_hash()}
    metadata.update(extra_metadata or {})
    helper.set_model_props(model, metadata)
    onnx.checker.check_model(model)
    return model


def write_model(
    layers: Sequence[Layer], path: str | Path, extra_metadata: Mapping[str, str] | None = None
) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(build_model(layers, extra_metadata), str(path))
    return path
