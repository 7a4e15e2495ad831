"""Policy latency per decision (torch, onnxruntime, numpy) and training throughput.

Figures (printed and saved to benchmarks/results/policy_latency.json):

* per-decision latency p50/p99 of the shipped default policy (`checkpoints/default`) on one real
  observation + mask from `tiny`, for the torch policy, onnxruntime and the numpy fallback, all
  single-threaded (target: p99 under 1 ms on one core); a decision is logits + masked argmax;
* training throughput in env steps/s (learner decisions, PPO updates included) of a short run of
  `configs/train/default.yaml`, evaluation off;
* the recorded wall time of the full default training run (`checkpoints/default/training.json`,
  written when the default was trained).

Run: `.venv/bin/python benchmarks/policy_latency.py [--decisions N] [--train-steps N]`.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable

import numpy as np
import torch

from gpuparley.envs.market.parallel_env import GPUMarketEnv
from gpuparley.envs.resources import checkpoints_dir
from gpuparley.policy.runtime import load_onnx_policy, masked_argmax
from gpuparley.train.checkpoint import TorchLogits, load_model
from gpuparley.train.config import load_config
from gpuparley.train.trainer import train

from _common import best_of, peak_rss_mib, save

DEFAULT = checkpoints_dir() / "default"


def latencies(decide: Callable[[], int], decisions: int) -> dict[str, float]:
    """p50/p99/mean of single decisions, in microseconds (after a warm-up)."""
    for _ in range(200):
        decide()
    samples = np.empty(decisions)
    for index in range(decisions):
        start = time.perf_counter_ns()
        decide()
        samples[index] = time.perf_counter_ns() - start
    samples /= 1000
    return {
        "p50_us": float(np.percentile(samples, 50)),
        "p99_us": float(np.percentile(samples, 99)),
        "mean_us": float(samples.mean()),
    }


def policy_latency(decisions: int) -> dict[str, dict[str, float]]:
    torch.set_num_threads(1)
    env = GPUMarketEnv("tiny", mechanism="auction")
    observations, _ = env.reset(seed=0)
    first = observations[env.possible_agents[0]]
    obs = first["observation"].reshape(1, -1)
    mask = first["action_mask"]
    torch_logits = TorchLogits(load_model(DEFAULT).policy)
    onnx_policy = load_onnx_policy(DEFAULT / "policy.onnx", backend="onnxruntime", threads=1)
    numpy_policy = load_onnx_policy(DEFAULT / "policy.onnx", backend="numpy")
    backends = {
        "torch": lambda: int(masked_argmax(torch_logits.logits(obs)[0], mask)),
        "onnxruntime": lambda: onnx_policy.act(obs, mask),
        "numpy": lambda: numpy_policy.act(obs, mask),
    }
    chosen = {name: decide() for name, decide in backends.items()}
    assert len(set(chosen.values())) == 1, f"backends disagree: {chosen}"
    return {name: latencies(decide, decisions) for name, decide in backends.items()}


def training_throughput(steps: int) -> dict[str, float]:
    """Env steps/s of the default config for `steps` steps (best of two runs, no evaluation)."""
    base = load_config("default")
    with tempfile.TemporaryDirectory() as folder:
        config = base.model_copy(
            update={
                "total_timesteps": steps,
                "output_dir": folder,
                "evaluation": base.evaluation.model_copy(update={"every": 10**12}),
            }
        )
        seconds, result = best_of(2, lambda: train(config))
    steps_done = result.timesteps
    return {"steps": steps_done, "seconds": seconds, "steps_per_s": steps_done / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=20_000)
    parser.add_argument("--train-steps", type=int, default=30_000)
    args = parser.parse_args()
    figures: dict[str, object] = {"latency": policy_latency(args.decisions)}
    figures["training"] = training_throughput(args.train_steps)
    record = DEFAULT / "training.json"
    figures["default_training"] = json.loads(record.read_text()) if record.is_file() else None
    figures["peak_rss_mib"] = peak_rss_mib()

    for name, row in figures["latency"].items():
        print(
            f"{name:>12}: p50 {row['p50_us']:7.1f} us   p99 {row['p99_us']:7.1f} us   "
            f"(target p99 < 1000 us)"
        )
    training = figures["training"]
    print(f"training throughput: {training['steps_per_s']:,.0f} env steps/s (default config)")
    if figures["default_training"]:
        run = figures["default_training"]
        print(
            f"default training: {run['timesteps']:,} steps in {run['wall_seconds']:,.0f} s wall "
            f"({run['steps_per_second']:,.0f} steps/s)"
        )
    print(f"saved {save('policy_latency', figures)}")


if __name__ == "__main__":
    main()
