"""Export to ONNX: metadata, CLI, and exact parity with the torch policy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import typer
from typer.testing import CliRunner

from gpuparley.commands import export as export_command
from gpuparley.envs.market.encoding import (
    ACTION_COUNT,
    OBSERVATION_BOUND,
    OBSERVATION_SIZE,
    SPEC_VERSION,
    spec_hash,
)
from gpuparley.policy.encoder_spec import SPEC_HASH_KEY, SPEC_VERSION_KEY
from gpuparley.policy.learned import LearnedNegotiator
from gpuparley.policy.runtime import load_onnx_policy, masked_argmax
from gpuparley.train.checkpoint import TorchLogits, export_checkpoint, load_model

from train_helpers import assert_float32_close, flat, smoke_run, tampered_copy

SAMPLES = 10_000


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_checkpoint(smoke_run() / "best", tmp_path_factory.mktemp("onnx") / "p.onnx")


def random_masked_observations(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Observations across the encoder's range (mostly small, some extreme) and random masks."""
    rng = np.random.default_rng(seed)
    scale = rng.choice([1.0, 3.0, OBSERVATION_BOUND], size=(count, 1), p=[0.6, 0.3, 0.1])
    observations = (rng.uniform(-1, 1, (count, OBSERVATION_SIZE)) * scale).astype(np.float32)
    masks = rng.random((count, ACTION_COUNT)) < rng.uniform(0.05, 0.9, (count, 1))
    masks[np.arange(count), rng.integers(ACTION_COUNT, size=count)] = True  # >= 1 legal
    return observations, masks


def test_metadata_records_the_spec(exported: Path) -> None:
    model = onnx.load(str(exported))
    metadata = {prop.key: prop.value for prop in model.metadata_props}
    assert metadata[SPEC_VERSION_KEY] == SPEC_VERSION
    assert metadata[SPEC_HASH_KEY] == spec_hash()
    assert {node.op_type for node in model.graph.node} <= {"Gemm", "Tanh", "Relu"}
    assert [o.name for o in model.graph.output] == ["logits"]


def test_parity_with_torch_on_random_masked_observations(exported: Path) -> None:
    observations, masks = random_masked_observations(SAMPLES)
    reference = TorchLogits(load_model(smoke_run() / "best").policy).logits(observations)
    expected = masked_argmax(reference, masks)
    for backend in ("onnxruntime", "numpy"):
        logits = load_onnx_policy(exported, backend=backend).logits(observations)
        assert_float32_close(logits, reference)
        chosen = masked_argmax(logits, masks)
        assert (chosen == expected).all(), f"{backend} picked another action"
        assert masks[np.arange(SAMPLES), chosen].all()


def cli() -> typer.Typer:
    app = typer.Typer()
    export_command.register(app)
    app.command("noop")(lambda: None)
    return app


def test_cli_exports_and_refuses_other_specs(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "policy.onnx"
    result = runner.invoke(cli(), ["export", str(smoke_run() / "best"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    player = LearnedNegotiator.from_onnx(out)
    assert player.act(np.zeros(OBSERVATION_SIZE, np.float32), np.ones(ACTION_COUNT), None) >= 0
    bad = tampered_copy(smoke_run() / "best", tmp_path / "old", "gpu_market_v0/0", "feed")
    result = runner.invoke(cli(), ["export", str(bad), "--out", str(tmp_path / "x.onnx")])
    assert result.exit_code == 2
    assert "gpu_market_v0/0" in flat(result.output) and spec_hash() in flat(result.output)
    result = runner.invoke(cli(), ["export", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "not a directory" in flat(result.output)
