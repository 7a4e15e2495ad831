"""Equal terms: one horizon cap per workload for schedulers and markets, the default cap rule,
and the same accounting of unfinished jobs (value, rho with the cap, unfinished work)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from gpuparley.agents.first_fit import FirstFit
from gpuparley.commands import evaluate
from gpuparley.envs.metrics import summarise
from gpuparley.envs.scenario import load_scenario
from gpuparley.envs.settings import SimulationSettings
from gpuparley.envs.simulator import Simulator
from gpuparley.envs.topology import ClusterSpec
from gpuparley.evaluation.horizon import (
    SOURCES,
    Horizon,
    default_horizon,
    resolve_horizon,
)
from gpuparley.evaluation.report import REPORT_MD, write_report
from gpuparley.evaluation.results import Results, load_results
from gpuparley.evaluation.tournament import run_policy, run_tournament
from gpuparley.policy.specs import parse_policies, parse_policy

from builders import exclusive_cluster, gpu_job, timeslice_cluster

# ----------------------------------------------------------------------------- the default rule


def test_default_cap_is_latest_finish_plus_ten_drains_in_whole_epochs() -> None:
    jobs = [
        gpu_job(0, "a", gpus=2, duration=1000.0, arrival=0.0),
        gpu_job(1, "a", gpus=1, duration=3000.0, arrival=500.0),
    ]
    cluster = exclusive_cluster(1, 4, "A100-40GB")  # speed 1.0
    # latest uncontended finish 500 + 3000; work 2 x 1000 + 3000 over 4 GPUs = 1250 s
    assert default_horizon(jobs, cluster, SimulationSettings(), 1.0) == 3500 + 10 * 1250
    # rounded up to whole epochs: 16,000 s is 53.3 five-minute epochs -> 54
    assert default_horizon(jobs, cluster, SimulationSettings(), 300.0) == 54 * 300


def test_default_cap_counts_slow_gpus_and_contended_shares() -> None:
    t4 = exclusive_cluster(1, 2, "T4")  # relative speed 0.2
    job = [gpu_job(0, "a", gpus=1, duration=100.0, arrival=10.0)]
    # 10 + 100 / 0.2 = 510, work 100 over a capacity of 2 x 0.2 = 250 s
    assert default_horizon(job, t4, SimulationSettings(), 1.0) == pytest.approx(510 + 2500)
    assert default_horizon(job, t4, SimulationSettings(speed_scaling=False), 1.0) == (
        pytest.approx(110 + 10 * 50)
    )
    share = [gpu_job(0, "a", milli=250, duration=100.0), gpu_job(1, "a", milli=250, arrival=1.0)]
    sliced = timeslice_cluster(gpus=1)  # A100-40GB, speed 1
    contended = SimulationSettings(timeslice_overhead=0.2)
    # a contended share takes turns on a whole GPU: 100 / 0.8 + 1000 / 0.8 GPU-seconds
    assert default_horizon(share, sliced, contended, 1.0) == pytest.approx(1001 + 10 * 1100 / 0.8)
    free = SimulationSettings(contention=False)
    assert default_horizon(share, sliced, free, 1.0) == pytest.approx(1001 + 10 * 0.25 * 1100)


def test_cap_precedence_override_then_scenario_then_rule() -> None:
    tiny = load_scenario("tiny")  # settings.horizon: 172800
    assert resolve_horizon(tiny, 0, 5000.0) == Horizon(5000.0, SOURCES[0])
    assert resolve_horizon(tiny, 0) == Horizon(172800.0, SOURCES[1])
    free = load_scenario("gang-heavy")
    rule = resolve_horizon(free, 2)
    expected = default_horizon(
        free.build_jobs(2), free.build_cluster(), free.settings, free.market.epoch_seconds
    )
    assert rule == Horizon(expected, SOURCES[2])
    assert rule.seconds % free.market.epoch_seconds == 0
    with pytest.raises(ValueError, match="--horizon"):
        resolve_horizon(tiny, 0, 0.0)


def test_market_epochs_cover_the_cap_exactly() -> None:
    assert Horizon(3000.0, "x").epochs(300.0) == 10
    assert Horizon(3001.0, "x").epochs(300.0) == 11
    assert Horizon(10.0, "x").epochs(300.0) == 1


# ----------------------------------------------------------------------------- unfinished jobs


def test_unfinished_jobs_count_with_the_cap() -> None:
    """One 1-GPU job done at 1000 s, one cut at the 1500 s cap with 500 s left, one 2-GPU job
    that never fits the 1-GPU cluster (and so waits until the cap)."""
    cluster = ClusterSpec(exclusive_cluster(1, 1, "A100-40GB").nodes)
    jobs = [
        dataclasses.replace(job, value=10.0)
        for job in (
            gpu_job(0, "a", duration=1000.0),
            gpu_job(1, "a", duration=1000.0),
            gpu_job(2, "a", gpus=2, duration=300.0, arrival=100.0),
        )
    ]
    sim = Simulator(cluster, jobs, FirstFit(), SimulationSettings(horizon=1500.0))
    sim.run()
    assert sim.now == 1500.0
    metrics = summarise(sim, ["a"])
    assert (metrics["jobs_finished"], metrics["jobs_unfinished"]) == (1, 2)
    # 500 s left of job 1 on one GPU; all 300 s of job 2 on two GPUs
    assert metrics["unfinished_gpu_hours"] == pytest.approx((500 + 2 * 300) / 3600)
    # rho: 1000/1000; 1500/1000 (the cap as finish); (1500 - 100) / (300 x 2/1 stretch)
    rho = [1.0, 1.5, 1400 / 600]
    assert metrics["ftf_rho_mean"] == pytest.approx(sum(rho) / 3)
    assert metrics["ftf_rho_max"] == pytest.approx(1400 / 600)
    assert metrics["ftf_share_rho_above_1"] == pytest.approx(2 / 3)
    assert metrics["welfare"] == pytest.approx(10.0)  # unfinished jobs realise nothing


def test_without_a_cap_a_stuck_job_still_counts_until_the_run_ends() -> None:
    cluster = ClusterSpec(exclusive_cluster(1, 1, "A100-40GB").nodes)
    jobs = [gpu_job(0, "a", duration=100.0), gpu_job(1, "a", gpus=2, duration=50.0)]
    sim = Simulator(cluster, jobs, FirstFit(), SimulationSettings())
    sim.run()
    metrics = summarise(sim, ["a"])
    assert sim.now == 100.0 and metrics["jobs_unfinished"] == 1
    assert metrics["ftf_rho_max"] == pytest.approx(100 / 100)  # 100 / (50 x stretch 2)
    assert metrics["unfinished_gpu_hours"] == pytest.approx(100 / 3600)


# ----------------------------------------------------------------------------- evaluation


@pytest.fixture(scope="module")
def cut_runs() -> Results:
    """kueue and a truthful market on tiny seed 0, cut at 2 h 10 min (arrivals go on for 4 h)."""
    return run_tournament(
        load_scenario("tiny"), parse_policies("kueue,scripted:truthful"), [0], horizon=7800.0
    )


def test_scheduler_and_market_share_one_cap(cut_runs: Results) -> None:
    horizon = cut_runs.config["horizon"]
    assert horizon["seconds_by_seed"] == {"0": 7800.0}
    assert horizon["source"] == "--horizon"
    for run in cut_runs.runs:
        metrics = run["metrics"]
        assert metrics["horizon"] == 7800.0
        assert metrics["sim_time"] == 7800.0, run["policy"]  # both cut at the cap exactly
        assert metrics["jobs_unfinished"] > 0 and metrics["unfinished_gpu_hours"] > 0
        assert metrics["jobs_finished"] + metrics["jobs_unfinished"] == metrics["jobs"]
    market = cut_runs.runs_of("scripted:truthful")[0]["metrics"]
    assert market["epochs"] == math.ceil(7800.0 / 300)


def test_default_horizon_is_shared_per_seed() -> None:
    scenario = load_scenario("tiny", {"settings.horizon": None, "workload.generator.jobs": 8})
    results = run_tournament(scenario, parse_policies("first-fit,scripted:truthful"), [0, 1])
    caps = results.config["horizon"]["seconds_by_seed"]
    assert results.config["horizon"]["source"] == "default rule"
    for seed in (0, 1):
        assert caps[str(seed)] == resolve_horizon(scenario, seed).seconds
        assert {run["metrics"]["horizon"] for run in results.runs if run["seed"] == seed} == {
            caps[str(seed)]
        }
    for run in results.runs:  # generous: everyone finishes well inside it
        assert run["metrics"]["jobs_unfinished"] == 0
        assert run["metrics"]["sim_time"] < caps[str(run["seed"])]


def test_run_policy_defaults_to_the_seed_cap() -> None:
    scenario = load_scenario("tiny", {"workload.generator.jobs": 5})
    record = run_policy(scenario, parse_policy("fgd"), 0)
    assert record["metrics"]["horizon"] == 172800.0  # tiny's settings.horizon


def test_report_states_the_cap(cut_runs: Results, tmp_path: Path) -> None:
    write_report(cut_runs, tmp_path)
    report = (tmp_path / REPORT_MD).read_text()
    assert "the cap of 7,800 s (2.2 h)" in report and "from the --horizon" in report
    assert "| jobs unfinished at the horizon ↓ |" in report
    assert "| unfinished work (GPU-hours) ↓ |" in report
    old = Results(config={**cut_runs.config, "horizon": None}, runs=cut_runs.runs)
    write_report(old, tmp_path)
    assert "horizon: not recorded" in (tmp_path / REPORT_MD).read_text()


def test_cli_horizon_flag(tmp_path: Path) -> None:
    app = typer.Typer(pretty_exceptions_enable=False)
    evaluate.register(app)
    args = ["eval", "--scenario", "tiny", "--policies", "fgd", "--seeds", "0"]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path), "--horizon", "3600"])
    assert result.exit_code == 0, result.output
    assert load_results(tmp_path).config["horizon"]["seconds_by_seed"] == {"0": 3600.0}
    bad = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "x"), "--horizon", "-1"])
    assert bad.exit_code == 2 and "--horizon" in bad.output
    inflation = [*args, "--experiment", "fgd-inflation", "--horizon", "10"]
    bad = CliRunner().invoke(app, [*inflation, "--out", str(tmp_path / "y")])
    assert bad.exit_code == 2 and "--horizon applies to tournaments" in bad.output
