"""Synthetic generators: determinism per seed, mix proportions, agent affinity, validation."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from gpuparley.envs.workloads import GeneratorConfig, generate_jobs

AGENTS = {"alice": 1.0, "bob": 1.0, "carol": 1.0}


@given(seed=st.integers(0, 2**32 - 1))
@settings(max_examples=20, deadline=None)
def test_same_seed_same_jobs(seed: int) -> None:
    config = GeneratorConfig(jobs=30)
    assert generate_jobs(config, seed, AGENTS) == generate_jobs(config, seed, AGENTS)


def test_different_seeds_differ() -> None:
    config = GeneratorConfig(jobs=30)
    assert generate_jobs(config, 1, AGENTS) != generate_jobs(config, 2, AGENTS)


def test_ids_names_and_arrival_order() -> None:
    jobs = generate_jobs(GeneratorConfig(jobs=100), 0, AGENTS)
    assert [j.id for j in jobs] == list(range(100))
    assert jobs[42].name == "gen-000042"
    assert all(a.arrival <= b.arrival for a, b in itertools.pairwise(jobs))


def test_mix_proportions_roughly_honoured() -> None:
    config = GeneratorConfig(
        jobs=2000,
        classes={"training": {"weight": 1}, "inference": {"weight": 2}, "notebook": {"weight": 1}},
    )
    counts = Counter(j.tags["class"] for j in generate_jobs(config, 7, AGENTS))
    assert counts["inference"] / 2000 == pytest.approx(0.5, abs=0.05)
    assert counts["training"] / 2000 == pytest.approx(0.25, abs=0.05)


def test_class_kinds_and_values() -> None:
    jobs = generate_jobs(GeneratorConfig(jobs=300), 3, AGENTS)
    kinds = {j.tags["class"]: j.pod.gpu.kind for j in jobs}
    assert kinds == {"training": "whole", "inference": "mig", "notebook": "share"}
    inference = [j for j in jobs if j.pod.gpu.kind == "mig"]
    assert all(j.allowed_models == ("A100-80GB", "H100-80GB") for j in inference)
    assert all(j.value > 0 and j.deadline > j.duration for j in jobs)
    assert len({round(j.value, 6) for j in jobs}) == len(jobs)  # noise makes bids differ


def test_gang_sizes_parsed() -> None:
    config = GeneratorConfig(jobs=50, classes={"training": {"sizes": {"2x8": 1}}})
    jobs = generate_jobs(config, 0, AGENTS)
    assert all(j.pods == 2 and j.pod.gpu.count == 8 and j.is_gang for j in jobs)


def test_time_window_bounds_stream() -> None:
    jobs = generate_jobs(GeneratorConfig(jobs=None, hours=5, rate_per_hour=20), 0, AGENTS)
    assert 60 < len(jobs) < 140
    assert jobs[-1].arrival <= 5 * 3600


def test_agent_affinity_skews_ownership() -> None:
    config = GeneratorConfig(jobs=2000)
    jobs = generate_jobs(config, 0, AGENTS, {"alice": {"training": 10}})
    training = Counter(j.owner for j in jobs if j.tags["class"] == "training")
    assert training["alice"] > 3 * training["bob"]
    assert set(Counter(j.owner for j in jobs)) == set(AGENTS)


@pytest.mark.parametrize(
    ("classes", "fragment"),
    [
        ({"inference": {"sizes": {"9g.99gb": 1}}}, "valid profiles"),
        ({"inference": {"models": ["A100-40GB"]}}, "1g.5gb"),
        ({"training": {"sizes": {"eight": 1}}}, "<pods>x<gpus>"),
        ({"notebook": {"sizes": {"2000": 1}}}, "1..1000"),
        ({"training": {"models": ["B200"]}}, "valid models"),
    ],
)
def test_bad_classes_explain_choices(classes: dict, fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment.replace(".", r"\.").replace("<", "<")):
        GeneratorConfig(classes=classes)
