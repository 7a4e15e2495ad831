"""The environment's fast paths give exactly what the plain definitions give."""

import copy
import dataclasses
import pickle
from collections.abc import Iterator

import numpy as np
import pytest

from gpuparley.envs import gpu_market_v1
from gpuparley.envs.few_nodes import largest
from gpuparley.envs.market.encoding import (
    SLOT_FEATURES,
    AgentView,
    JobSlot,
    _affordable,
    _shape_features,
    _SlotCode,
    _state_features,
    action_mask,
    encode,
    encode_many,
    new_agent_view,
    new_job_slot,
)
from gpuparley.envs.market.lease_book import LeaseBook
from gpuparley.envs.market.views import cluster_free_fractions
from gpuparley.envs.workloads.generators import _Choice


def _random_rollout(env, seed: int, steps: int) -> Iterator[None]:
    """Reset `env`, then pause (yield) before each of up to `steps` steps of uniformly random
    legal actions, so that the caller can inspect it."""
    observations, _ = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        if not env.agents:
            return
        yield
        actions = {}
        for agent, obs in observations.items():
            legal = np.flatnonzero(obs["action_mask"])
            actions[agent] = int(legal[rng.integers(len(legal))])
        observations, *_ = env.step(actions)


def test_quick_constructors_build_ordinary_frozen_instances():
    values = {
        "job": "job-1",
        "gpus": 2.0,
        "gpu_kind": "whole",
        "pods": 1,
        "epoch_value": 3.0,
        "value_density": 1.5,
        "waited_hours": 0.5,
        "slack_hours": 4.0,
        "renewal": False,
        "fits_now": True,
        "within_quota": True,
    }
    quick, plain = new_job_slot(**values), JobSlot(**values)
    assert type(quick) is JobSlot and quick == plain and hash(quick) == hash(plain)
    with pytest.raises(dataclasses.FrozenInstanceError):
        quick.gpus = 3.0  # type: ignore[misc]
    view_values = {f.name: 0 for f in dataclasses.fields(AgentView) if f.init}
    view_values.update(mechanism="auction", slots=(quick,), inbox=None, passed=False)
    del view_values["extras"]
    view = new_agent_view(**view_values)
    assert type(view) is AgentView and view == AgentView(**view_values)
    assert view.extras == {} and view.extras is not new_agent_view(**view_values).extras


@pytest.mark.parametrize("mechanism", ["auction", "bargain"])
@pytest.mark.parametrize("scenario", ["tiny", "mig-mixed"])
def test_batched_encoding_equals_encoding_one_view_at_a_time(scenario, mechanism):
    env = gpu_market_v1.parallel_env(scenario=scenario, mechanism=mechanism)
    for _ in _random_rollout(env, seed=4, steps=150):
        views = [env.views[agent] for agent in env.agents]
        vectors, masks = encode_many(views)
        for i, view in enumerate(views):
            vector, mask = encode(view)
            assert vector.dtype == np.float32 and mask.dtype == np.int8
            assert vector.tobytes() == vectors[i].tobytes()
            assert mask.tobytes() == masks[i].tobytes() == action_mask(view).tobytes()


@pytest.mark.parametrize("scenario", ["tiny", "mig-mixed"])
def test_slot_codes_equal_the_slot_features_converted_by_numpy(scenario):
    env = gpu_market_v1.parallel_env(scenario=scenario, mechanism="auction")
    checked = 0
    for _ in _random_rollout(env, seed=5, steps=150):
        for view in env.views.values():
            budget = max(view.budget_per_epoch, 1e-9)
            for slot in view.slots:
                features = (
                    *_shape_features(slot.gpus, slot.gpu_kind, slot.pods),
                    *_state_features(slot, budget),
                )
                assert len(features) == len(SLOT_FEATURES)
                plain = np.array(features, dtype=np.float32).tobytes()
                assert _SlotCode(slot, budget).features == plain
                checked += 1
    assert checked > 100


@pytest.mark.parametrize("epoch_value", [0.0, 1e-9, 0.3, 7.0, 123.456, -2.0, float("nan")])
def test_slot_bid_levels_equal_the_level_by_level_check(epoch_value):
    slot = new_job_slot("job-1", 1.0, "whole", 1, epoch_value, 1.0, 0.0, 1.0, False, True, True)
    code = _SlotCode(slot, budget=10.0)
    frees = [-1.0, 0.0, 1e-9, 0.075, 0.1, 0.3, 1.0, 5.25, 7.0, 10.5, 200.0, float("inf")]
    frees += [level * epoch_value for level in (0.25, 0.5, 0.75, 1.0, 1.5)]  # exact edges
    for free in frees:
        assert code.affordable(free) == _affordable(epoch_value, free), free


def test_cached_fit_checks_agree_with_the_node_mask():
    env = gpu_market_v1.parallel_env(scenario="mig-mixed", mechanism="auction")
    checked = 0
    for _ in _random_rollout(env, seed=2, steps=120):
        state = env.market.sim.state
        for job in env.market.sim.pending():
            expected = bool(state.feasible_nodes(job.pod, job.allowed_models).any())
            assert state.can_fit_somewhere(job) is expected
            checked += 1
    assert checked > 50


@pytest.mark.parametrize("scenario", ["tiny", "mig-mixed"])
def test_kept_quota_book_agrees_with_a_fresh_one(scenario):
    env = gpu_market_v1.parallel_env(scenario=scenario, mechanism="bargain")
    reused = 0
    for _ in _random_rollout(env, seed=3, steps=200):
        bargain = env.market.mechanism
        previous = bargain._book[1] if bargain._book is not None else None
        kept = bargain.quota_book()
        reused += kept is previous
        bargain._book = None  # what the book would be if nothing were kept
        fresh = bargain.quota_book()
        assert (kept.effective, kept.usage, kept.idle) == (fresh.effective, fresh.usage, fresh.idle)
        for job in env.market.sim.pending():
            assert kept.can_borrow_for(job) == fresh.can_borrow_for(job)
            assert kept.lender_for(job) == fresh.lender_for(job)
    assert reused > 20


@pytest.mark.parametrize("mechanism", ["auction", "bargain"])
def test_views_are_built_field_by_field(mechanism):
    """The views' quick constructors are called positionally: every field holds its own value."""
    env = gpu_market_v1.parallel_env(scenario="tiny", mechanism=mechanism)
    inboxes = slots = 0
    for _ in _random_rollout(env, seed=6, steps=300):
        market = env.market
        state, now = market.sim.state, market.sim.now
        book = market.mechanism.quota_book() if mechanism == "bargain" else None
        answers = market.mechanism.pending_answers()
        for agent, view in env.views.items():
            owned = [market.sim.jobs[job_id] for job_id in state.holdings]
            quota = market.quota_milli[agent] / 1000
            expected = {
                "balance": market.ledger.balances[agent],
                "budget_per_epoch": float(market.agent_config[agent].budget_per_epoch or 0.0),
                "committed": market.committed[agent],
                "reference_price": market.reference_price,
                "last_price": market.last_price,
                "quota_gpus": quota,
                "effective_quota_gpus": book.effective[agent] / 1000 if book else quota,
                "used_gpus": (
                    book.usage[agent] / 1000
                    if book
                    else sum(job.gpus for job in owned if job.owner == agent)
                ),
                "cluster_gpus": float(state.gpu_count),
                "pending_jobs": sum(job.owner == agent for job in market.sim.pending()),
                "running_jobs": sum(job.owner == agent for job in owned),
                "leases_held": sum(lease.holder == agent for lease in market.leases.values()),
                "leases_lent": sum(lease.lender == agent for lease in market.leases.values()),
                "epoch_fraction": market.substep / market.max_substeps,
                "mechanism": mechanism,
                "passed": agent in market.passed,
            }
            assert {name: getattr(view, name) for name in expected} == expected
            free = (view.free_whole_fraction, view.free_mig_fraction, view.free_share_fraction)
            assert free == cluster_free_fractions(market)
            thread = answers.get(agent)
            if thread is not None:
                inboxes += 1
                inbox = view.inbox
                assert (inbox.message_id, inbox.as_lender, inbox.price) == (
                    thread.last_id,
                    thread.lender == agent,
                    thread.price,
                )
                assert (inbox.gpus, inbox.round) == (thread.job.gpus, thread.round)
                assert inbox.max_rounds == market.config.max_rounds
            for slot in view.slots:
                slots += 1
                job = market.jobs_by_name[slot.job]
                pending = market.sim.record(job.id).state.value == "pending"
                assert (slot.gpus, slot.gpu_kind, slot.pods) == (
                    job.gpus,
                    job.pod.gpu.kind,
                    job.pods,
                )
                assert slot.epoch_value == market.epoch_value(job)
                gpu_hours = max(job.gpus * job.duration / 3600, 1e-9)
                assert slot.value_density == job.value / gpu_hours / market.reference_price
                slack = (job.arrival + job.deadline - now) / 3600
                assert slot.slack_hours == (min(slack, 48.0) if np.isfinite(slack) else 48.0)
                assert slot.waited_hours == ((now - job.arrival) / 3600 if pending else 0.0)
                assert slot.renewal is not pending
                assert slot.fits_now == (slot.renewal or state.can_fit_somewhere(job))
                assert slot.within_quota == (slot.renewal or book is None)
    assert slots > 100 and (inboxes > 10 or mechanism == "auction")


def test_fixed_choice_draws_what_numpy_choice_draws():
    """`_Choice` relies on how numpy maps one uniform draw to an index: a numpy upgrade that
    changes it must fail here, not silently change every generated workload."""
    p = np.array([0.1, 0.0, 0.45, 0.3, 0.15])
    ours, numpys = np.random.default_rng(11), np.random.default_rng(11)
    choose = _Choice(p)
    assert [choose(ours) for _ in range(2000)] == [
        int(numpys.choice(len(p), p=p)) for _ in range(2000)
    ]
    with pytest.raises(ValueError):
        _Choice(np.array([0.5, 0.7]))(ours)  # numpy's own check: probabilities must sum to 1


@pytest.mark.parametrize("size", [0, 1, 8, 64, 65, 5000])
def test_largest_node_figure_equals_numpy_max(size):
    values = np.random.default_rng(size).integers(0, 1000, size)
    assert largest(values) == int(values.max(initial=0))
    assert type(largest(values)) is int


@pytest.mark.parametrize("scenario", ["mig-mixed", "timeslice-noisy", "tiny"])
def test_occupancy_in_plain_python_equals_numpy(scenario):
    env = gpu_market_v1.parallel_env(scenario=scenario, mechanism="auction")
    for _ in _random_rollout(env, seed=3, steps=200):
        timeline = env.market.sim.timeline
        few, many = timeline._measure_few(), timeline._measure_many()
        assert few == many and [float(x) for x in few] == [float(x) for x in many]


def test_lease_book_counts_every_write_and_survives_copies():
    book = LeaseBook()
    book["a"] = "lease-a"  # type: ignore[assignment]
    book["b"] = "lease-b"  # type: ignore[assignment]
    del book["a"]
    book.pop("b")
    assert book.changes == 4 and not book
    book["c"] = "lease-c"  # type: ignore[assignment]
    with pytest.raises(TypeError):
        book.update({"d": "lease-d"})
    for copied in (copy.copy(book), copy.deepcopy(book), pickle.loads(pickle.dumps(book))):
        assert type(copied) is LeaseBook and copied == book and copied.changes == book.changes
