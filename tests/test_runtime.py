"""The torch-free runtime: import hygiene, spec checks, masking, the shipped default."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gpuparley.envs.market.encoding import ACTION_COUNT, OBSERVATION_SIZE, SPEC_VERSION, spec_hash
from gpuparley.envs.resources import checkpoints_dir
from gpuparley.policy.encoder_spec import SpecMismatchError, check_encoder_spec
from gpuparley.policy.learned import LearnedNegotiator
from gpuparley.policy.onnx_graph import write_model
from gpuparley.policy.runtime import Layer, load_onnx_policy, masked_argmax
from gpuparley.train.checkpoint import TorchLogits, load_model

from train_helpers import assert_float32_close

DEFAULT = checkpoints_dir() / "default"


def tiny_layers(inputs: int = OBSERVATION_SIZE, outputs: int = ACTION_COUNT) -> list[Layer]:
    rng = np.random.default_rng(0)
    return [
        Layer(rng.normal(size=(8, inputs)).astype(np.float32), np.zeros(8, np.float32), "relu"),
        Layer(
            rng.normal(size=(outputs, 8)).astype(np.float32),
            np.ones(outputs, np.float32),
            "identity",
        ),
    ]


def test_the_negotiator_image_needs_no_training_stack() -> None:
    """What the negotiator image runs (deploy/Dockerfile) imports none of torch, sb3, gymnasium,
    pettingzoo or matplotlib (the image has no torch or sb3; the others it installs only
    because the package's metadata names them)."""
    code = (
        "import sys, gpuparley.policy.runtime, gpuparley.policy.learned, gpuparley.policy.specs\n"
        "import gpuparley.deploy.negotiator, gpuparley.deploy.process_cli\n"
        "heavy = ('torch', 'stable_baselines3', 'sb3_contrib', 'gymnasium', 'pettingzoo',\n"
        "         'matplotlib', 'tensorboard')\n"
        "bad = [m for m in heavy if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_command_line_starts_without_plotting_or_training_libraries() -> None:
    """Every `gpuparley` command imports the whole command table; a command that draws nothing
    or trains nothing (the market and negotiators the cluster tests start by the dozen, `--help`)
    must not pay for matplotlib or torch: they are imported where a figure is drawn or a model
    is trained."""
    code = (
        "import sys, gpuparley.cli\n"
        "bad = [m for m in ('matplotlib', 'torch', 'stable_baselines3') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_runtime_refuses_another_spec(tmp_path: Path) -> None:
    path = write_model(
        tiny_layers(),
        tmp_path / "old.onnx",
        {"gpuparley.spec_version": "gpu_market_v0/0", "gpuparley.spec_hash": "0123"},
    )
    for backend in ("onnxruntime", "numpy"):
        with pytest.raises(SpecMismatchError, match=r"gpu_market_v0/0.*0123.*" + SPEC_VERSION):
            load_onnx_policy(path, backend=backend)
    with pytest.raises(SpecMismatchError, match=spec_hash()):
        check_encoder_spec(SPEC_VERSION, "other", "model x")
    with pytest.raises(SpecMismatchError, match="model x records no observation spec"):
        check_encoder_spec(None, None, "model x")  # not "built for spec None"


@pytest.mark.parametrize("content", [b"not a model\n", b""], ids=["text", "empty"])
def test_a_file_that_is_no_onnx_model_is_a_value_error_naming_it(
    tmp_path: Path, content: bytes
) -> None:
    """Before: onnx's DecodeError or onnxruntime's InvalidProtobuf, a traceback from every
    command given `learned:<file>`; also a model cut short (its first 3,000 bytes)."""
    broken = {"garbage.onnx": content, "cut.onnx": (DEFAULT / "policy.onnx").read_bytes()[:3000]}
    for name, data in broken.items():
        (tmp_path / name).write_bytes(data)
        for backend in ("onnxruntime", "numpy"):
            # an empty file is an empty (valid) protobuf to onnx: a model without our metadata
            reason = "(is not an ONNX policy|records no observation spec)"
            with pytest.raises(ValueError, match=f"{tmp_path / name}.* {reason}"):
                load_onnx_policy(tmp_path / name, backend=backend)


def test_runtime_refuses_wrong_shapes(tmp_path: Path) -> None:
    path = write_model(tiny_layers(inputs=OBSERVATION_SIZE - 1), tmp_path / "narrow.onnx")
    with pytest.raises(SpecMismatchError, match="features"):
        load_onnx_policy(path)


def test_relu_graph_numpy_matches_onnxruntime(tmp_path: Path) -> None:
    path = write_model(tiny_layers(), tmp_path / "relu.onnx")
    observations = np.random.default_rng(1).normal(size=(500, OBSERVATION_SIZE)).astype(np.float32)
    fast = load_onnx_policy(path).logits(observations)
    assert_float32_close(load_onnx_policy(path, "numpy").logits(observations), fast)


def test_masking_never_picks_an_illegal_action(tmp_path: Path) -> None:
    policy = LearnedNegotiator.from_onnx(write_model(tiny_layers(), tmp_path / "p.onnx"))
    rng = np.random.default_rng(2)
    for _ in range(200):
        mask = np.zeros(ACTION_COUNT, np.int8)
        mask[rng.choice(ACTION_COUNT, size=rng.integers(1, 4), replace=False)] = 1
        assert mask[policy.act(rng.normal(size=OBSERVATION_SIZE), mask, None)]
    logits = np.array([[3.0, 1.0, 2.0]])
    assert masked_argmax(logits, np.array([[0, 1, 1]]))[0] == 2


def test_shipped_default_loads_and_matches_its_model() -> None:
    """checkpoints/default must be re-trained whenever the encoder spec changes."""
    assert (DEFAULT / "policy.onnx").is_file() and (DEFAULT / "model.zip").is_file()
    size = sum(p.stat().st_size for p in DEFAULT.iterdir())
    assert size < 5 * 2**20
    runtime = LearnedNegotiator.from_checkpoint(DEFAULT, backend="onnxruntime")
    reference = LearnedNegotiator(TorchLogits(load_model(DEFAULT).policy))
    observations = np.random.default_rng(3).uniform(-3, 3, (2000, OBSERVATION_SIZE))
    observations = observations.astype(np.float32)
    assert_float32_close(runtime.model.logits(observations), reference.model.logits(observations))
