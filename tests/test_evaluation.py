"""Evaluation: policy specs, seeds, CIs, best-value marking, a tiny tournament end to end (files,
report rebuild, reproducibility), the FGD inflation path on a reduced trace, and CLI errors."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import typer
import yaml
from rich.console import Console
from typer.testing import CliRunner

from gpuparley.commands import evaluate
from gpuparley.envs.resources import scenarios_dir
from gpuparley.envs.scenario import load_scenario
from gpuparley.evaluation.fgd_inflation import run_inflation_experiment
from gpuparley.evaluation.report import REPORT_MD, best_policies, format_cell, write_report
from gpuparley.evaluation.results import Results, load_results, write_results
from gpuparley.evaluation.stats import mean_ci, t_critical
from gpuparley.evaluation.tournament import parse_seeds, run_tournament
from gpuparley.policy.specs import parse_policies, parse_policy, policy_choices

POLICIES = "first-fit,kueue,scripted:truthful,learned:checkpoints/default"
PLOTS = ("allocation_over_time.png", "jct_cdf.png", "agent_utility.png", "occupancy.png")


def cli() -> typer.Typer:
    app = typer.Typer(pretty_exceptions_enable=False)
    evaluate.register(app)
    return app


def run_cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli(), list(args))
    return result.exit_code, " ".join(result.output.split())  # undo rich's line wrapping


# ----------------------------------------------------------------------------- parsing


def test_policy_specs_parse() -> None:
    assert parse_policy("kai").kind == "scheduler"
    market = parse_policy("scripted:truthful@bargain")
    assert (market.kind, market.name, market.mechanism) == ("scripted", "truthful", "bargain")
    assert parse_policy("scripted:boulware").mechanism is None  # the scenario's
    for source in ("checkpoints/default", "default", "checkpoints/default/policy.onnx"):
        learned = parse_policy(f"learned:{source}@auction")
        assert learned.kind == "learned" and learned.mechanism == "auction"
        assert learned.source is not None and learned.source.name == "policy.onnx"
    specs = [p.spec for p in parse_policies(" fgd, scripted:truthful ")]
    assert specs == ["fgd", "scripted:truthful"]


@pytest.mark.parametrize(
    "spec", ["nope", "scripted:nope", "scripted:truthful@vickrey", "scripted:", "market:truthful"]
)
def test_bad_policy_lists_every_choice(spec: str) -> None:
    with pytest.raises(ValueError) as error:
        parse_policy(spec)
    for choice in policy_choices():
        assert choice in str(error.value)
    assert "kube-default" in str(error.value) and "scripted:tit-for-tat" in str(error.value)


def test_missing_checkpoint_and_repeats_are_errors() -> None:
    with pytest.raises(ValueError, match=r"no checkpoint directory or \.onnx file 'no/such/dir'"):
        parse_policy("learned:no/such/dir")
    with pytest.raises(ValueError, match="more than once: kai"):
        parse_policies("kai,fgd,kai")
    with pytest.raises(ValueError, match="no policies"):
        parse_policies(" , ")


def test_seeds_parse() -> None:
    assert parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert parse_seeds("0,2,7") == [0, 2, 7]
    assert parse_seeds("0-1, 9") == [0, 1, 9]
    for bad in ("", "a", "4-2", "1,1", "-1", "1-", "0-2,2"):
        with pytest.raises(ValueError):
            parse_seeds(bad)


# ----------------------------------------------------------------------------- statistics


def test_t_critical_matches_tables() -> None:
    for df, expected in ((1, 12.706), (2, 4.303), (4, 2.776), (9, 2.262), (30, 2.042)):
        assert t_critical(df) == pytest.approx(expected, abs=1e-3)
    assert t_critical(10, 0.99) == pytest.approx(3.169, abs=1e-3)


def test_mean_ci_on_known_numbers() -> None:
    mean, half = mean_ci([1, 2, 3, 4, 5])
    assert mean == 3.0
    assert half == pytest.approx(2.7764451 * math.sqrt(2.5 / 5), rel=1e-6)
    assert mean_ci([2.0, None, 4.0])[0] == 3.0  # missing values are skipped
    assert mean_ci([7.0]) == (7.0, None)
    assert mean_ci([None, None]) == (None, None)


def test_best_value_respects_direction() -> None:
    means = {"a": 0.9, "b": 0.5, "c": None, "d": 0.9}
    assert best_policies(means, "max") == {"a", "d"}
    assert best_policies(means, "min") == {"b"}
    assert best_policies({"a": None}, "min") == set()
    assert best_policies({"a": 1.36, "b": 1.43, "c": 1.6}, "min", "{:.0f}") == {"a", "b"}
    assert format_cell(0.5, 0.01, "{:.3f}", bold=True) == "**0.500 ± 0.010**"
    assert format_cell(0.5, None, "{:.2f}", bold=False) == "0.50"
    assert format_cell(None, None, "{:.2f}", bold=True) == "–"


# ----------------------------------------------------------------------------- tournament


@pytest.fixture(scope="module")
def tournament(tmp_path_factory: pytest.TempPathFactory) -> tuple[Results, Path]:
    out = tmp_path_factory.mktemp("eval")
    results = run_tournament(load_scenario("tiny"), parse_policies(POLICIES), [0, 1])
    write_results(results, out)
    write_report(results, out)
    return results, out


def test_tournament_writes_every_file(tournament: tuple[Results, Path]) -> None:
    results, out = tournament
    for name in ("results.json", "results.csv", REPORT_MD, *PLOTS):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert len(results.runs) == 8
    with (out / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert set(rows[0]) == {"policy", "seed", "metric", "value"}
    assert {(r["policy"], r["seed"]) for r in rows} == {
        (p, str(s)) for p in POLICIES.split(",") for s in (0, 1)
    }
    truthful = [r for r in rows if r["policy"] == "scripted:truthful"]
    assert any(r["metric"] == "agreement_rate" and r["value"] for r in truthful)
    loaded = load_results(out)
    assert loaded.runs == json.loads(json.dumps(results.runs))
    report = (out / REPORT_MD).read_text()
    assert "| allocation ratio (time avg) ↑ |" in report and "**" in report
    assert "`learned:checkpoints/default`" in report and "![JCT CDF](jct_cdf.png)" in report


def test_every_policy_sees_the_same_workload(tournament: tuple[Results, Path]) -> None:
    results, _ = tournament
    for seed in (0, 1):
        jobs = {r["metrics"]["jobs"] for r in results.runs if r["seed"] == seed}
        assert len(jobs) == 1
    market = results.runs_of("scripted:truthful")[0]
    assert market["mechanism"] == "auction" and set(market["utility_by_agent"]) == {
        "alice",
        "bob",
        "carol",
    }
    assert market["jct_sorted"] == sorted(market["jct_sorted"])
    assert len(market["timeline"]["time"]) == len(market["timeline"]["allocation_ratio"])


def test_report_command_rebuilds_identical_report(tournament: tuple[Results, Path]) -> None:
    _, out = tournament
    before = (out / REPORT_MD).read_text()
    (out / REPORT_MD).unlink()
    (out / "jct_cdf.png").unlink()
    code, output = run_cli("report", str(out))
    assert code == 0, output
    assert (out / REPORT_MD).read_text() == before
    assert (out / "jct_cdf.png").is_file()


def test_terminal_table_fits_80_columns(tournament: tuple[Results, Path]) -> None:
    """Policies as rows, the headline metrics as columns, and no number split across lines."""
    results, _ = tournament
    console = Console(width=80, record=True, color_system=None)
    console.print(evaluate.means_table(results))
    lines = console.export_text().splitlines()
    assert max(len(line) for line in lines) <= 80
    for policy in results.policies:
        row = next(line for line in lines if line.strip().startswith(policy[:10]))
        cells = row.split()[1:]
        assert len(cells) == len(evaluate.COMPACT), row  # every number whole, on one line
        assert all(cell.replace(".", "").isdigit() or cell == "–" for cell in cells), row


def test_same_seed_same_results(tournament: tuple[Results, Path]) -> None:
    results, _ = tournament
    again = run_tournament(load_scenario("tiny"), parse_policies(POLICIES), [1])
    for run in again.runs:
        (first,) = [r for r in results.runs_of(run["policy"]) if r["seed"] == 1]
        assert run["metrics"] == first["metrics"], run["policy"]
        assert run["utility_by_agent"] == first["utility_by_agent"]


def test_cells_take_the_markets_first_and_give_records_in_order(
    tournament: tuple[Results, Path],
) -> None:
    results, _ = tournament
    taken: list[str] = []

    def in_process(fn, cells, labels, on_progress=None):  # type: ignore[no-untyped-def]
        taken.extend(labels)
        return [fn(*args) for args in cells]

    on_cells = run_tournament(
        load_scenario("tiny"), parse_policies(POLICIES), [0, 1], cells=in_process
    )
    markets = [label for label in taken if label.startswith(("scripted:", "learned:"))]
    assert taken[: len(markets)] == markets and len(markets) == 4  # the long runs go first
    strip = [{k: v for k, v in run.items() if k != "wall_s"} for run in results.runs]
    assert [{k: v for k, v in run.items() if k != "wall_s"} for run in on_cells.runs] == strip


# ----------------------------------------------------------------------------- inflation


@pytest.fixture(scope="module")
def small_trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """openb's first 60 pods on a 32-GPU time-sliced cluster (the full one takes ~12 s)."""
    raw = yaml.safe_load((scenarios_dir() / "openb.yaml").read_text())
    raw["name"] = "openb-small"
    raw["workload"]["trace"]["limit"] = 60
    raw["cluster"] = {
        "nodes": [
            {"name": "v100", "count": 4, "cpu_milli": 96000, "memory_mib": 786432,
             "gpu_model": "V100M16", "gpus": 8, "mode": "timeslice", "replicas": 20}
        ]
    }  # fmt: skip
    path = tmp_path_factory.mktemp("scenario") / "openb-small.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_fgd_inflation_experiment(small_trace: Path, tmp_path: Path) -> None:
    scenario = load_scenario(small_trace)
    results = run_inflation_experiment(scenario, parse_policies("fgd,first-fit"), [0, 1])
    assert results.experiment == "fgd-inflation" and len(results.runs) == 4
    for run in results.runs:
        assert 0 < run["metrics"]["final_allocation_ratio@130%"] <= 1
        assert run["metrics"]["gpus"] == 32
        assert run["arrived"][0] == 0 and run["arrived"][-1] == pytest.approx(1.3)
    write_results(results, tmp_path)
    write_report(results, tmp_path)
    report = (tmp_path / REPORT_MD).read_text()
    assert "final allocation ratio" in report and "unallocated GPUs" in report
    assert (tmp_path / "inflation.png").is_file()
    with pytest.raises(ValueError, match="market policies cannot run it: scripted:truthful"):
        run_inflation_experiment(scenario, parse_policies("fgd,scripted:truthful"), [0])


def test_cli_inflation_runs(small_trace: Path, tmp_path: Path) -> None:
    code, output = run_cli(
        "eval", "--scenario", str(small_trace), "--policies", "fgd", "--seeds", "0",
        "--experiment", "fgd-inflation", "--out", str(tmp_path),
    )  # fmt: skip
    assert code == 0, output
    assert load_results(tmp_path).runs[0]["policy"] == "fgd"


# ----------------------------------------------------------------------------- CLI errors


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--policies", "kai,nope"], "unknown policy 'nope'"),
        (["--policies", "learned:missing/ckpt"], "no checkpoint directory or .onnx file"),
        (["--scenario", "nope"], "unknown scenario 'nope'"),
        (["--seeds", "3-1"], "bad seed range"),
        (["--seeds", "x"], "bad seeds 'x'"),
        (["--experiment", "nope"], "unknown experiment 'nope'"),
        (["--experiment", "fgd-inflation", "--policies", "fgd,scripted:truthful"], "market"),
        (["--set", "novalue"], "bad --set 'novalue'"),
        (["--set", "agents=["], "bad --set 'agents=[': the value is not YAML"),  # was a traceback
        (["--set", "settings.horizon=-5"], "settings.horizon"),
    ],
)
def test_cli_bad_input_exits_2(args: list[str], message: str, tmp_path: Path) -> None:
    base = {"--scenario": "tiny", "--policies": "kai", "--seeds": "0", "--out": str(tmp_path)}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[flag] = value
    code, output = run_cli("eval", *(item for pair in base.items() for item in pair))
    assert code == 2, output
    assert message in output and "Traceback" not in output
    assert not (tmp_path / "results.json").exists()


def test_cli_bad_policy_lists_choices() -> None:
    code, output = run_cli("eval", "--scenario", "tiny", "--policies", "nope")
    assert code == 2
    assert "kube-default" in output and "scripted:truthful" in output and "learned:<" in output


def test_report_without_results_exits_2(tmp_path: Path) -> None:
    code, output = run_cli("report", str(tmp_path))
    assert code == 2 and "results.json does not exist" in output
    (tmp_path / "results.json").write_text("{not json")
    code, output = run_cli("report", str(tmp_path))
    assert code == 2 and "not a gpuparley results file" in output
