"""`--experiment generalisation`: the comparison it sets up, its paired figures on hand-made
results, and one small run end to end (a smoke-trained checkpoint, fewer workloads)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gpuparley.cli import app
from gpuparley.envs.scenario_generator import HELD_OUT_SEEDS
from gpuparley.evaluation.generalisation import comparison, run_generalisation, workloads
from gpuparley.evaluation.generalisation_report import render, targets
from gpuparley.evaluation.generalisation_stats import (
    bundled_comparisons,
    gap,
    generated_comparisons,
)
from gpuparley.evaluation.report import REPORT_MD, write_report
from gpuparley.evaluation.results import Results, load_results, write_results
from gpuparley.policy.specs import parse_policy

from train_helpers import smoke_run

LEARNED, TRUTHFUL = "learned:x@auction", "scripted:truthful@auction"
CONFIG = {
    "experiment": "generalisation",
    "learned": LEARNED,
    "truthful": TRUTHFUL,
    "incumbents": ["fgd", "themis"],
    "policies": [LEARNED, TRUTHFUL, "fgd", "themis"],
    "bundled": ["tiny"],
    "seeds": [0, 1],
    "held_out_seeds": [1_000_000, 1_000_001, 1_000_002],
    "training_seeds": [0, 1],
    "horizon": {"rule": "r", "source": "s"},
}


def run(group: str, scenario: str, seed: int, policy: str, welfare: float, done: int = 10) -> dict:
    metrics = {"welfare": welfare, "jobs": 10, "jobs_finished": done}
    return {
        "group": group,
        "scenario": scenario,
        "seed": seed,
        "policy": policy,
        "metrics": metrics,
    }


def results() -> Results:
    """tiny: learned 110/90 vs truthful 100/100, fgd 105/105, themis 100/100; held-out: one
    win, one tie, one loss; training: two wins."""
    rows = []
    for seed, learned in ((0, 110.0), (1, 90.0)):
        rows += [
            run("bundled", "tiny", seed, LEARNED, learned),
            run("bundled", "tiny", seed, TRUTHFUL, 100.0),
            run("bundled", "tiny", seed, "fgd", 105.0),
            run("bundled", "tiny", seed, "themis", 100.0, done=9),
        ]
    for seed, learned, fgd in (
        (1_000_000, 120.0, 50.0),
        (1_000_001, 100.0, 150.0),
        (1_000_002, 80.0, 50.0),
    ):
        name = f"generated-{seed}"
        rows += [
            run("held-out", name, seed, LEARNED, learned),
            run("held-out", name, seed, TRUTHFUL, 100.0),
            run("held-out", name, seed, "fgd", fgd),
            run("held-out", name, seed, "themis", 60.0),
        ]
    for seed in (0, 1):
        rows += [
            run("training", f"generated-{seed}", seed, LEARNED, 150.0),
            run("training", f"generated-{seed}", seed, TRUTHFUL, 100.0),
            run("training", f"generated-{seed}", seed, "fgd", 90.0),
            run("training", f"generated-{seed}", seed, "themis", 90.0),
        ]
    return Results(config=dict(CONFIG), runs=rows)


def test_the_comparison_adds_truthful_in_the_same_mechanism() -> None:
    learned = parse_policy(f"learned:{smoke_run() / 'best'}")
    policies = comparison(learned, ["fgd"])
    assert [p.spec for p in policies[1:]] == ["scripted:truthful@auction", "fgd"]
    assert policies[0].mechanism == "auction"
    bargain = comparison(parse_policy(f"learned:{smoke_run() / 'best'}@bargain@epoch"), ["fgd"])
    assert bargain[1].spec == "scripted:truthful@bargain@epoch"
    with pytest.raises(ValueError, match="one learned negotiator"):
        comparison(parse_policy("scripted:truthful"), ["fgd"])
    with pytest.raises(ValueError, match="central schedulers"):
        comparison(learned, ["scripted:aggressive"])


def test_workloads_cover_the_three_groups() -> None:
    found = workloads([0, 1], 3, [7, 8], bundled=("tiny", "gang-heavy"))
    groups = [w.group for w in found]
    assert groups == ["bundled"] * 4 + ["held-out"] * 3 + ["training"] * 2
    assert [w.seed for w in found if w.group == "held-out"] == list(HELD_OUT_SEEDS[:3])
    with pytest.raises(ValueError, match="at most 100"):
        workloads([0], 101, [])
    with pytest.raises(ValueError, match="not among"):
        workloads([0], 1, [], bundled=("openb",))


def test_bundled_figures_are_paired_against_the_best_incumbent_by_mean() -> None:
    (tiny,) = bundled_comparisons(results())
    assert tiny.best == "fgd"  # mean 105 beats themis' 100
    assert tiny.vs_truthful[0] == pytest.approx(0.0)
    assert tiny.vs_best[0] == pytest.approx(-5.0)
    assert tiny.at_least_truthful == 1 and not tiny.above_best_mean
    assert tiny.best_finishes_all and tiny.learned_finishes_all


def test_generated_figures_use_the_best_incumbent_of_each_seed() -> None:
    groups = generated_comparisons(results())
    held_out = groups["held-out"]
    assert held_out.n == 3 and held_out.at_least_truthful == 2 and held_out.ties == 1
    assert held_out.vs_truthful[0] == pytest.approx(0.0)
    assert held_out.best == "per seed"
    # best incumbent per seed: themis 60, fgd 150, themis 60
    assert held_out.vs_best[0] == pytest.approx((60 - 50 + 20) / 3)
    assert held_out.above_best == 2
    training = groups["training"]
    assert training.vs_truthful_pct[0] == pytest.approx(50.0)
    difference, _half = gap(results())
    assert difference == pytest.approx(50.0 - 0.0)


def test_the_report_states_each_target_and_whether_it_is_met() -> None:
    rows = targets(bundled_comparisons(results()), generated_comparisons(results()))
    assert [row[2] for row in rows] == ["met", "**not met**", "met", "**not met**"]
    text = render(results())
    assert "## Proof targets" in text and "| `tiny` |" in text
    assert "held-out (3)" in text and "Gap (training distribution minus held-out" in text
    assert "2 of 3 (67%; 1 ties)" in text


@pytest.mark.slow
def test_a_small_run_end_to_end(tmp_path: Path) -> None:
    learned = parse_policy(f"learned:{smoke_run() / 'best'}")
    found = run_generalisation(
        learned, [0], held_out=2, training=1, incumbents=["fgd"], bundled=["tiny"]
    )
    assert len(found.runs) == (1 + 2 + 1) * 3
    assert {run["group"] for run in found.runs} == {"bundled", "held-out", "training"}
    assert found.config["trained_on"]["config"] == "smoke"
    assert found.config["trained_on"]["scenarios"] == ["tiny"]
    write_results(found, tmp_path)
    (report,) = write_report(found, tmp_path)
    text = report.read_text()
    assert "**the checkpoint trained on bundled scenarios tiny**" in text
    with (tmp_path / "results.csv").open() as handle:
        assert next(csv.reader(handle)) == ["scenario", "policy", "seed", "metric", "value"]
    assert render(load_results(tmp_path)) == text  # `gpuparley report` rebuilds it

    # a cell engine that runs the workloads in another order gives the same records, in order
    def backwards(fn, cells, labels, on_progress=None):  # type: ignore[no-untyped-def]
        done = {i: fn(*cells[i]) for i in reversed(range(len(cells)))}
        return [done[i] for i in range(len(cells))]

    again = run_generalisation(
        learned,
        [0],
        held_out=2,
        training=1,
        incumbents=["fgd"],
        bundled=["tiny"],
        cell_map=backwards,
    )
    strip = [{k: v for k, v in run.items() if k != "wall_s"} for run in found.runs]
    assert [{k: v for k, v in run.items() if k != "wall_s"} for run in again.runs] == strip


def test_cli_refuses_what_the_experiment_does_not_take(tmp_path: Path) -> None:
    runner = CliRunner()
    for args, expected in (
        (["--scenario", "tiny"], "drop --scenario"),
        (["--policies", "fgd,themis"], "one learned negotiator"),
        (["--policies", "scripted:truthful"], "one learned negotiator"),
    ):
        result = runner.invoke(
            app, ["eval", "--experiment", "generalisation", *args, "--out", str(tmp_path)]
        )
        assert result.exit_code == 2 and expected in " ".join(result.output.split()), args
    tournament = runner.invoke(app, ["eval", "--scenario", "tiny", "--held-out", "5"])
    assert tournament.exit_code == 2 and "belong to" in tournament.output
    assert not (tmp_path / REPORT_MD).exists()
