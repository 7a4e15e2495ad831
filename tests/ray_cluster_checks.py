"""Checks run on a real two-node Ray cluster (`ray_helpers.local_ray_cluster`), collected only
by `test_ray.py`, which runs this file with pytest inside a loopback-only network namespace.

Evaluation sweeps through `--address` equal the in-process run (every field of every record but
the measured `wall_s`), and so does the FGD inflation experiment with one Ray worker and with two.
A smoke RLlib training (a few thousand steps, env runners on both nodes) through `--address`
writes checkpoints whose `gpuparley export` picks the module's actions on 10,000 observations;
so does a short one with the default config's features (generated games, a warm start, a
welfare reward, `best/` chosen by welfare on validation generator seeds).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from ray.rllib.core.columns import Columns
from test_export_onnx import SAMPLES, random_masked_observations
from typer.testing import CliRunner

from gpuparley.cli import app
from gpuparley.envs.scenario import load_scenario
from gpuparley.envs.scenario_generator import VALIDATION_SEEDS
from gpuparley.evaluation.fgd_inflation import run_inflation_experiment
from gpuparley.evaluation.ray_sweep import ray_cells
from gpuparley.evaluation.results import Results
from gpuparley.policy.runtime import load_onnx_policy, masked_argmax
from gpuparley.policy.specs import parse_policies
from gpuparley.train.config import load_config
from gpuparley.train.rllib_backend import load_rllib_module

from ray_helpers import local_ray_cluster
from train_helpers import assert_float32_close

EVAL = ["eval", "--scenario", "tiny", "--seeds", "0-1"]
EVAL_POLICIES = "fgd,themis,scripted:truthful@auction,learned:default@bargain"


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    with local_ray_cluster() as address:
        yield address


def without_timings(document: dict[str, Any]) -> dict[str, Any]:
    """Results as JSON text with the measured wall times dropped (everything else compared)."""
    runs = [{k: v for k, v in run.items() if k != "wall_s"} for run in document["runs"]]
    return json.loads(json.dumps({**document, "runs": runs}))


def evaluate(out: Path, *extra: str) -> dict[str, Any]:
    result = CliRunner().invoke(
        app, [*EVAL, "--policies", EVAL_POLICIES, "--out", str(out), *extra]
    )
    assert result.exit_code == 0, result.output
    return json.loads((out / "results.json").read_text())


def test_eval_sweep_on_the_cluster_equals_the_serial_run(cluster: str, tmp_path: Path) -> None:
    serial = evaluate(tmp_path / "serial")
    on_ray = evaluate(tmp_path / "ray", "--address", cluster)
    assert len(serial["runs"]) == 8
    assert without_timings(on_ray) == without_timings(serial)
    assert (tmp_path / "ray" / "report.md").read_text() == (
        tmp_path / "serial" / "report.md"
    ).read_text()


def inflation(cells: Any = None) -> dict[str, Any]:
    scenario = load_scenario("openb-loaded")
    policies = parse_policies("fgd,best-fit,random")
    results: Results = run_inflation_experiment(
        scenario, policies, [0, 1], (1.0, 1.3), workers=1, cells=cells
    )
    return without_timings({"config": results.config, "runs": results.runs})


def test_inflation_on_ray_equals_in_process_with_one_or_two_workers(cluster: str) -> None:
    serial = inflation()
    with ray_cells(cluster) as cells:
        assert inflation(cells) == serial  # two nodes of one CPU each
    with ray_cells(num_cpus=1) as cells:  # a local Ray with one worker
        assert inflation(cells) == serial


def smoke_rllib_config(folder: Path) -> Path:
    raw = load_config("smoke").resolved()
    raw.update(
        total_timesteps=3000,
        snapshots={"every": 1000, "pool_size": 2},
        evaluation={**raw["evaluation"], "every": 1500},
        rllib={"env_runners": 2},
    )
    path = folder / "smoke-rllib.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_rllib_training_on_the_cluster_exports_with_parity(cluster: str, tmp_path: Path) -> None:
    config = smoke_rllib_config(tmp_path)
    runs = tmp_path / "runs"
    args = ["--config", str(config), "--backend", "rllib", "--address", cluster]
    result = CliRunner().invoke(app, ["train", *args, "--output-dir", str(runs)])
    assert result.exit_code == 0, result.output
    run = runs / "smoke" / "seed-0"
    record = json.loads((run / "training.json").read_text())
    assert record["backend"] == "rllib" and record["timesteps"] >= 3000
    best = run / "best"
    assert {"rl_module", "policy.onnx", "spec.json", "config.yaml"} <= {
        p.name for p in best.iterdir()
    }
    assert any((run / "tb").rglob("events.out.tfevents.*"))
    assert_exports_with_parity(best, tmp_path / "exported.onnx")


def assert_exports_with_parity(best: Path, out: Path) -> None:
    """`gpuparley export` of an RLlib checkpoint picks the module's own masked actions on
    10,000 observations, in onnxruntime and in numpy."""
    result = CliRunner().invoke(app, ["export", str(best), "--out", str(out)])
    assert result.exit_code == 0, result.output

    module = load_rllib_module(best)
    observations, masks = random_masked_observations(SAMPLES)
    reference = module.logits(observations)
    batch = {Columns.OBS: {"observation": torch.as_tensor(observations),
                           "action_mask": torch.as_tensor(masks.astype(np.int8))}}  # fmt: skip
    masked = module.forward_inference(batch)[Columns.ACTION_DIST_INPUTS].numpy()
    expected = masked.argmax(axis=-1)  # the module's own masked choice
    assert (expected == masked_argmax(reference, masks)).all()
    for backend in ("onnxruntime", "numpy"):
        logits = load_onnx_policy(out, backend=backend).logits(observations)
        assert_float32_close(logits, reference)
        assert (masked_argmax(logits, masks) == expected).all(), backend


VALIDATE_BY_WELFARE = {"every": 200, "max_epochs": None, "generated": 2, "select": "welfare"}


def generated_rllib_config(folder: Path) -> Path:
    """The default config's features at smoke size: generated games, a warm start, a welfare
    reward and checkpoints chosen by welfare on validation generator seeds."""
    raw = load_config("smoke").resolved()
    raw.update(
        scenarios=[],
        mechanisms=["auction"],
        total_timesteps=400,
        generator={
            "ranges": {"agents": [2, 4], "jobs": [10, 20], "max_gpus": 8, "arrival_hours": [2, 4]},
            "seeds": "0-49",
            "games": 1,
            "learner_seats": 2,
        },
        warm_start={"imitate": "scripted:truthful", "decisions": 300, "epochs": 8},
        reward_welfare=1.0,
        evaluation={**raw["evaluation"], **VALIDATE_BY_WELFARE},
        rllib={"env_runners": 1},
    )
    path = folder / "generated-rllib.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_rllib_trains_on_generated_scenarios_with_a_warm_start(
    cluster: str, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    args = ["--config", str(generated_rllib_config(tmp_path)), "--backend", "rllib"]
    result = CliRunner().invoke(
        app, ["train", *args, "--address", cluster, "--output-dir", str(runs)]
    )
    assert result.exit_code == 0, result.output
    run = runs / "smoke" / "seed-0"
    record = json.loads((run / "training.json").read_text())
    assert record["backend"] == "rllib" and record["timesteps"] >= 400
    assert record["imitation_accuracy"] > 0.9  # truthful is one action per decision point
    assert record["warm_start_score"] is not None
    best = run / "best"
    metrics = json.loads((best / "metrics.json").read_text())
    gaps = list(metrics["welfare"]["per_scenario"].values())
    cap = yaml.safe_load((best / "config.yaml").read_text())["evaluation"]["gain_cap"]
    assert metrics["score"] == pytest.approx(sum(min(gap, cap) for gap in gaps) / len(gaps))
    assert list(metrics["welfare"]["per_scenario"]) == [
        f"generated-{seed}/auction" for seed in VALIDATION_SEEDS[:2]
    ]
    assert_exports_with_parity(best, tmp_path / "exported.onnx")


def test_tune_seed_sweep_on_the_cluster_reports_mean_and_ci(cluster: str, tmp_path: Path) -> None:
    args = ["tune", "--config", "smoke", "--seeds", "0-1", "--grid", "ppo.n_epochs=1,2"]
    result = CliRunner().invoke(app, [*args, "--address", cluster, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    document = json.loads((tmp_path / "results.json").read_text())
    assert document["config"]["experiment"] == "tune"
    cells = {(run["policy"], run["seed"]) for run in document["runs"]}
    assert cells == {(f"ppo.n_epochs={n}", s) for n in (1, 2) for s in (0, 1)}
    for run in document["runs"]:
        assert Path(run["best_checkpoint"], "policy.onnx").is_file()
    report = (tmp_path / "report.md").read_text()
    assert "| evaluation utility / budget per epoch (score) ↑ |" in report and " ± " in report
