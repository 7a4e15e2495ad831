"""Export a checkpoint's policy as an ONNX graph of action logits (`gpuparley export`).

The graph holds the actor MLP only; masking and the argmax stay outside it (`deploy.runtime`), so
any legal-action mask works. The spec version and encoder hash go into the ONNX metadata, and the
runtime refuses a model whose spec differs from the code loading it.
"""

from __future__ import annotations

from pathlib import Path

from gpuparley.deploy.onnx_graph import write_model
from gpuparley.train.checkpoint import load_checkpoint_config, load_model
from gpuparley.train.weights import policy_layers


def export_checkpoint(checkpoint: str | Path, out: str | Path) -> Path:
    """Write `checkpoint`'s policy logits to `out` (refuses a checkpoint of another spec)."""
    checkpoint = Path(checkpoint)
    model = load_model(checkpoint)
    config = load_checkpoint_config(checkpoint)
    metadata = {
        "gpuparley.checkpoint": checkpoint.resolve().name,
        "gpuparley.config": config.name,
        "gpuparley.algorithm": config.algorithm,
        "gpuparley.timesteps": str(model.num_timesteps),
    }
    return write_model(policy_layers(model.policy), out, metadata)
