"""The environment's fast paths give exactly what the plain definitions give."""

import dataclasses

import numpy as np
import pytest

from gpuparley.envs import gpu_market_v0
from gpuparley.envs.market.encoding import (
    AgentView,
    JobSlot,
    action_mask,
    encode,
    encode_many,
    new_agent_view,
    new_job_slot,
)


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
    env = gpu_market_v0.parallel_env(scenario=scenario, mechanism=mechanism)
    observations, _ = env.reset(seed=4)
    rng = np.random.default_rng(4)
    for _ in range(150):
        if not env.agents:
            break
        views = [env.views[agent] for agent in env.agents]
        vectors, masks = encode_many(views)
        for i, view in enumerate(views):
            vector, mask = encode(view)
            assert vector.dtype == np.float32 and mask.dtype == np.int8
            assert vector.tobytes() == vectors[i].tobytes()
            assert mask.tobytes() == masks[i].tobytes() == action_mask(view).tobytes()
        actions = {}
        for agent, obs in observations.items():
            legal = np.flatnonzero(obs["action_mask"])
            actions[agent] = int(legal[rng.integers(len(legal))])
        observations, *_ = env.step(actions)


def test_cached_fit_checks_agree_with_the_node_mask():
    env = gpu_market_v0.parallel_env(scenario="mig-mixed", mechanism="auction")
    observations, _ = env.reset(seed=2)
    rng = np.random.default_rng(2)
    checked = 0
    for _ in range(120):
        if not env.agents:
            break
        state = env.market.sim.state
        for job in env.market.sim.pending():
            expected = bool(state.feasible_nodes(job.pod, job.allowed_models).any())
            assert state.can_fit_somewhere(job) is expected
            checked += 1
        actions = {}
        for agent, obs in observations.items():
            legal = np.flatnonzero(obs["action_mask"])
            actions[agent] = int(legal[rng.integers(len(legal))])
        observations, *_ = env.step(actions)
    assert checked > 50
