"""The scenario generator: seeded, in the validated schema, within its ranges, servable; its
ranges validate like every config; `gpuparley scenario sample` writes a loadable file."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from gpuparley.cli import app
from gpuparley.envs import mig
from gpuparley.envs.cluster import ClusterState
from gpuparley.envs.generator_schema import RangesError, ScenarioRanges, load_ranges
from gpuparley.envs.load import gpu_demand, offered_load, speed_weighted_capacity
from gpuparley.envs.planner import first_fit_choice, plan_job
from gpuparley.envs.resources import generator_configs_dir
from gpuparley.envs.scenario import load_scenario
from gpuparley.envs.scenario_generator import (
    SEED_SETS,
    check_training_seeds,
    random_layout,
    sample_document,
    sample_scenario,
    scenario_text,
)
from gpuparley.envs.topology import SharingMode

SEEDS = range(40)


@pytest.fixture(scope="module")
def scenarios() -> dict:
    return {seed: sample_scenario(seed) for seed in SEEDS}


def test_the_same_seed_gives_the_same_bytes_and_seeds_differ() -> None:
    assert scenario_text(11) == scenario_text(11)
    assert scenario_text(11) != scenario_text(12)


def test_a_sampled_file_loads_back_as_the_same_scenario(tmp_path: Path) -> None:
    path = tmp_path / "generated.yaml"
    path.write_text(scenario_text(5))
    loaded = load_scenario(path)
    assert loaded.config == sample_scenario(5).config
    assert loaded.build_jobs() == sample_scenario(5).build_jobs()


def test_scenarios_stay_within_their_ranges(scenarios: dict) -> None:
    ranges = ScenarioRanges()
    for seed, scenario in scenarios.items():
        cluster = scenario.build_cluster()
        assert ranges.agents[0] <= len(scenario.agents) <= ranges.agents[1], seed
        assert 0 < cluster.gpu_count <= ranges.max_gpus, seed
        assert set(cluster.gpu_models()) <= set(ranges.gpu_models), seed
        weights = {agent.weight for agent in scenario.agents}
        assert all(ranges.agent_weight[0] <= w <= ranges.agent_weight[1] for w in weights)
        jobs = scenario.build_jobs()
        assert ranges.jobs[0] <= len(jobs) <= ranges.jobs[1], seed
        market = scenario.market
        assert (
            ranges.lease_term_epochs[0] <= market.lease_term_epochs <= ranges.lease_term_epochs[1]
        )
        assert market.epoch_seconds in ranges.epoch_seconds


def test_load_and_window_are_the_drawn_ones_or_say_why_not(scenarios: dict) -> None:
    low, high = ScenarioRanges().offered_load
    lowered = 0
    for seed, scenario in scenarios.items():
        jobs = scenario.build_jobs()
        demand = [gpu_demand(job, scenario.settings) for job in jobs]
        load = offered_load(jobs, speed_weighted_capacity(scenario.build_cluster()), demand)
        stated = float(re.search(r"offered load ([\d.]+)", scenario.description).group(1))
        assert load == pytest.approx(stated, abs=0.006), seed
        hours = float(re.search(r"over ([\d.]+) h", scenario.description).group(1))
        window = (jobs[-1].arrival - jobs[0].arrival) / 3600
        assert window == pytest.approx(hours, abs=0.06), seed
        if "lowered" in scenario.description:
            lowered += 1
            assert load < high, seed
        else:
            assert low * 0.99 <= load <= high * 1.01, seed
            assert hours <= ScenarioRanges().arrival_hours[1] * 1.01, seed
    assert lowered <= len(scenarios) // 4  # the exception, not the rule


def test_every_job_fits_the_empty_cluster_as_laid_out(scenarios: dict) -> None:
    """Gangs never need more nodes than exist, and MIG sizes are ones the layouts hold."""
    for seed, scenario in scenarios.items():
        state = ClusterState(scenario.build_cluster())
        for job in scenario.build_jobs():
            assert plan_job(state, job, first_fit_choice) is not None, (seed, job)


def test_the_mix_covers_every_sharing_mode_and_class(scenarios: dict) -> None:
    modes, classes, mechanisms, clearings = set(), set(), set(), set()
    gangs = agents_with_preferences = 0
    for scenario in scenarios.values():
        modes |= {node.mode for node in scenario.build_cluster().nodes if node.gpu_count}
        classes |= set(scenario.config.workload.generator.classes)
        mechanisms.add(scenario.market.mechanism)
        clearings.add(scenario.market.clearing)
        gangs += any(job.pods > 1 for job in scenario.build_jobs())
        agents_with_preferences += sum(bool(a.class_weights) for a in scenario.agents)
    assert modes == set(SharingMode)
    assert classes == {"training", "inference", "notebook", "batch"}
    assert mechanisms == {"auction", "bargain"} and clearings == {"continuous", "epoch"}
    assert gangs >= 5 and agents_with_preferences >= 20


def test_random_layouts_are_legal_and_full() -> None:
    draw_seeds = range(30)
    for seed in draw_seeds:
        for model in ("A100-40GB", "H100-80GB"):
            document = sample_document(seed, ScenarioRanges(modes={"mig": 1.0}, gpu_models=[model]))
            for group in document["cluster"]["nodes"]:
                if group.get("mode") != "mig":
                    continue
                layout = [(name, start) for name, start in group["mig_layout"]]
                mig.validate_layout(model, layout)
                assert not any(
                    mig.possible_placements(model, p, layout) for p in mig.PROFILES[model]
                )
    first, again = (random_layout("A100-80GB", np.random.default_rng(1)) for _ in range(2))
    assert first == again


def test_narrow_ranges_narrow_the_scenarios() -> None:
    ranges = ScenarioRanges(
        agents=(3, 3), modes={"timeslice": 1.0}, gpu_models=["T4"], cpu_only_nodes=0.0
    )
    for seed in range(10):
        scenario = sample_scenario(seed, ranges)
        assert len(scenario.agents) == 3
        nodes = scenario.build_cluster().nodes
        assert {(node.gpu_model, node.mode) for node in nodes} == {("T4", SharingMode.TIMESLICE)}
        assert set(scenario.config.workload.generator.classes) == {"training", "notebook"}


def test_the_bundled_ranges_file_documents_the_defaults() -> None:
    assert load_ranges("default") == ScenarioRanges()
    raw = yaml.safe_load((generator_configs_dir() / "default.yaml").read_text())
    assert set(raw) == set(ScenarioRanges.model_fields)  # every field is in the file


def test_bad_ranges_name_the_field() -> None:
    with pytest.raises(RangesError) as error:
        load_ranges({"agents": [1, 4], "jobs": [50, 10], "agnets": 3, "gpu_models": ["B200"]})
    message = str(error.value)
    assert "agents: the low end must be >= 2" in message
    assert "jobs: a range is [low, high]" in message
    assert "unknown key 'agnets' (did you mean 'agents'?)" in message
    assert "gpu_models: unknown GPU model 'B200'" in message
    with pytest.raises(RangesError, match=r"modes\.mig needs a MIG-capable model"):
        load_ranges({"gpu_models": ["T4"]})
    with pytest.raises(RangesError, match="bundled name: default"):
        load_ranges("no-such-ranges")


def test_reserved_seed_sets_are_disjoint_and_kept_from_training() -> None:
    held_out, validation = SEED_SETS["held-out"], SEED_SETS["validation"]
    assert len(held_out) == 100 and not set(held_out) & set(validation)
    check_training_seeds(range(0, 1000))
    with pytest.raises(ValueError, match="held-out generator seeds"):
        check_training_seeds(range(999_990, 1_000_010))


def test_cli_sample_writes_a_file_that_loads(tmp_path: Path) -> None:
    out = tmp_path / "s.yaml"
    result = CliRunner().invoke(app, ["scenario", "sample", "--seed", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text() == scenario_text(3)
    assert "wrote" in result.output and load_scenario(out).name == "generated-3"
    printed = CliRunner().invoke(app, ["scenario", "sample", "--seed", "3"])
    assert printed.exit_code == 0 and printed.output == scenario_text(3)
    bad = tmp_path / "ranges.yaml"
    bad.write_text("agents: [0, 2]\n")
    refused = CliRunner().invoke(app, ["scenario", "sample", "--seed", "3", "--ranges", str(bad)])
    assert refused.exit_code == 2 and "agents" in refused.output
