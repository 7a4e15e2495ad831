"""`gpu_market_v1`: the PettingZoo GPU-market environment.

    from gpuparley.envs import gpu_market_v1
    env = gpu_market_v1.parallel_env(scenario="tiny", mechanism="auction", seed=0)

`parallel_env` is the native ParallelEnv; `raw_env` its AEC conversion; `env` the AEC
environment with PettingZoo's standard safety wrappers.
"""

from __future__ import annotations

from typing import Any

from pettingzoo.utils import wrappers
from pettingzoo.utils.conversions import parallel_to_aec

from gpuparley.envs.market.parallel_env import GPUMarketEnv


def parallel_env(**kwargs: Any) -> GPUMarketEnv:
    return GPUMarketEnv(**kwargs)


def raw_env(**kwargs: Any):
    return parallel_to_aec(GPUMarketEnv(**kwargs))


def env(**kwargs: Any):
    return wrappers.OrderEnforcingWrapper(raw_env(**kwargs))
