"""PettingZoo's own conformance tests, for every bundled scenario and both mechanisms."""

import warnings

import pytest
from gymnasium.utils.env_checker import check_env
from pettingzoo.test import api_test, parallel_api_test, parallel_seed_test, seed_test

from gpuparley.agents.negotiators.simple import Truthful
from gpuparley.envs import gpu_market_v1
from gpuparley.envs.market.single_agent import SingleAgentMarketEnv
from gpuparley.envs.scenario import list_scenarios

SCENARIOS = [name for name, _ in list_scenarios()]
MECHANISMS = ["auction", "bargain"]


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # PettingZoo's naming/space style hints
        yield


def test_every_bundled_scenario_is_covered():
    assert {"tiny", "mig-mixed", "timeslice-noisy", "gang-heavy", "openb"} <= set(SCENARIOS)


@pytest.mark.parametrize("mechanism", MECHANISMS)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_pettingzoo_api_and_seed_tests(scenario, mechanism):
    cycles = 30 if scenario == "openb" else 100
    parallel_api_test(
        gpu_market_v1.parallel_env(scenario=scenario, mechanism=mechanism), num_cycles=cycles
    )
    api_test(gpu_market_v1.env(scenario=scenario, mechanism=mechanism), num_cycles=cycles)
    parallel_seed_test(
        lambda: gpu_market_v1.parallel_env(scenario=scenario, mechanism=mechanism), num_cycles=20
    )
    seed_test(lambda: gpu_market_v1.env(scenario=scenario, mechanism=mechanism), num_cycles=20)


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_single_agent_view_passes_gymnasiums_checker(mechanism):
    env = SingleAgentMarketEnv(Truthful(), scenario="tiny", mechanism=mechanism, render_mode="ansi")
    check_env(env, skip_render_check=False)


@pytest.mark.parametrize("mode", ["ansi", "rgb_array"])
def test_render_modes_show_occupancy(mode):
    env = gpu_market_v1.parallel_env(scenario="mig-mixed", render_mode=mode)
    observations, _ = env.reset(seed=1)
    policy = Truthful()
    for _ in range(40):
        actions = {
            a: policy.act(o["observation"], o["action_mask"], env.views[a])
            for a, o in observations.items()
        }
        observations, *_ = env.step(actions)
    picture = env.render()
    if mode == "ansi":
        assert "epoch" in picture and "[" in picture
        cells = [line.split(None, 2)[2] for line in picture.splitlines()[1:]]  # the GPUs
        assert any(c.isupper() for row in cells for c in row)  # someone holds something
    else:
        assert picture.ndim == 3 and picture.shape[2] == 3 and picture.dtype.name == "uint8"
        assert len({tuple(px) for px in picture.reshape(-1, 3)}) > 2  # owners drawn in colour


def test_bad_arguments_fail_clearly():
    with pytest.raises(ValueError, match="mechanism must be"):
        gpu_market_v1.parallel_env(scenario="tiny", mechanism="lottery")
    with pytest.raises(ValueError, match="render_mode"):
        gpu_market_v1.parallel_env(scenario="tiny", render_mode="human")
    with pytest.raises(ValueError, match="available"):
        gpu_market_v1.parallel_env(scenario="no-such-scenario")
