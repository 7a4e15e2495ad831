"""Shared by the training/export/runtime tests: one smoke-trained checkpoint per test process."""

from __future__ import annotations

import atexit
import functools
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from gpuparley.train.config import TrainConfig, load_config


def smoke_config(output_dir: Path, **updates: object) -> TrainConfig:
    return load_config("smoke").model_copy(update={"output_dir": str(output_dir), **updates})


@functools.cache
def smoke_run() -> Path:
    """Run directory of one smoke training run (trained once, reused by every test of this
    process, removed when the process ends)."""
    from gpuparley.train.trainer import train

    root = Path(tempfile.mkdtemp(prefix="gpuparley-smoke-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return train(smoke_config(root)).run_dir


def tampered_copy(checkpoint: Path, destination: Path, version: str, digest: str) -> Path:
    """A copy of `checkpoint` whose spec.json claims another encoder."""
    shutil.copytree(checkpoint, destination)
    spec_path = destination / "spec.json"
    spec = json.loads(spec_path.read_text())
    spec.update(version=version, hash=digest)
    spec_path.write_text(json.dumps(spec))
    return destination


def assert_float32_close(actual: np.ndarray, expected: np.ndarray) -> None:
    """Two float32 evaluations of one network agree up to summation order: a tolerance relative
    to the logits' scale (float32 carries ~7 digits), not an absolute one."""
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5 * scale)


def flat(text: str) -> str:
    """CLI output with rich's line wrapping undone."""
    return " ".join(text.split())
