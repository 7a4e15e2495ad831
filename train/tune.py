"""Seed and hyperparameter sweeps over a training config with Ray Tune (`gpuparley tune`).

A sweep is the Cartesian product of `--grid KEY=V1,V2` choices (dotted config keys, values
parsed as YAML) times seeds; each (variant, seed) is one Tune trial that runs an ordinary
training run of the config with those changes, on its backend (`sb3`, or `rllib` with its env
runners in the trial's own process), writing its checkpoints under
`<out>/runs/<variant>/<config>/seed-<seed>/`. Every trial is validated before Tune starts, so a
typo in a key or value fails at once. A trial reports the final evaluation of its best
checkpoint (`train.evaluate`: utility against the evaluation opponents, per game and overall)
and its wall time; `evaluation.tune_report` turns the records into the usual results files and
a report of mean ± 95% CI over seeds per variant.

Trials take one CPU each (`cpus_per_trial`) wherever Ray places them; on a multi-node cluster
each trial writes its checkpoints on the node that ran it, unless `out` is a shared folder.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from ray import tune
from ray.tune import Callback

from gpuparley.train.checkpoint import load_metrics
from gpuparley.train.config import TrainConfig, validate_config
from gpuparley.train.ray_cluster import ray_session

BASELINE = "baseline"
BEST_KEY = "best_checkpoint"
GAME_PREFIX = "utility "
METRIC_KEYS = (
    "mean_budget_utility",
    "mean_utility",
    "best_timesteps",
    "wall_seconds",
    "steps_per_second",
)
TrialDone = Callable[[int, str], None]


def parse_grid(pairs: Sequence[str]) -> dict[str, list[Any]]:
    """`KEY=V1,V2` pairs as {dotted key: values} (values parsed as YAML); ValueError if bad."""
    grid: dict[str, list[Any]] = {}
    for pair in pairs:
        key, equals, values = pair.partition("=")
        choices = [yaml.safe_load(v) for v in values.split(",") if v.strip()]
        if not equals or not key.strip() or not choices:
            raise ValueError(
                f"bad --grid {pair!r}: use KEY=V1,V2, e.g. ppo.learning_rate=1e-4,3e-4"
            )
        grid[key.strip()] = choices
    return grid


def variants(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's choices (one empty variant without a grid)."""
    keys = list(grid)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*grid.values())]


def label(variant: Mapping[str, Any]) -> str:
    """A variant's name in tables and folders: `ppo.learning_rate=0.0001,ppo.n_epochs=5`."""
    return ",".join(f"{key}={value}" for key, value in variant.items()) or BASELINE


def trial_config(
    base: TrainConfig, variant: Mapping[str, Any], seed: int, out: Path
) -> TrainConfig:
    """`base` with the variant's dotted keys set, this seed and the trial's output folder
    (TrainConfigError names a bad key or value)."""
    raw = base.resolved()
    for key, value in variant.items():
        *parents, leaf = key.split(".")
        node = raw
        for part in parents:  # a missing or scalar parent becomes a dict the schema refuses
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[leaf] = value
    raw.update(seed=seed, output_dir=str(out / "runs" / label(variant)))
    if raw.get("backend") == "rllib":
        raw["rllib"] = {**raw["rllib"], "env_runners": 0}  # the trial's CPU steps the envs
    return validate_config(raw, f"{base.name} with {label(variant)}, seed {seed}")


def run_trial(params: dict[str, Any]) -> None:
    """One trial (Tune's function trainable): train, then report the best checkpoint."""
    config = TrainConfig.model_validate(params["config"])
    if config.backend == "rllib":
        from gpuparley.train.rllib_backend import RLlibTrainer

        result = RLlibTrainer(config).learn()
    else:
        from gpuparley.train.trainer import train

        result = train(config)
    best = load_metrics(result.best)
    metrics = {
        "mean_utility": best["mean_utility"],
        "mean_budget_utility": best["mean_budget_utility"],
        **{f"{GAME_PREFIX}{game}": value for game, value in best["per_game"].items()},
        "best_timesteps": best["timesteps"],
        "wall_seconds": result.seconds,
        "steps_per_second": result.steps_per_second,
    }
    tune.report({**metrics, BEST_KEY: str(result.best.resolve())})


class _Finished(Callback):
    """Counts finished trials for a progress display (in the driver; Tune's saved experiment
    state keeps no display)."""

    def __init__(self, on_done: TrialDone | None) -> None:
        self.on_done = on_done
        self.done = 0

    def __getstate__(self) -> dict[str, Any]:
        return {"on_done": None, "done": self.done}

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.done += 1
        if self.on_done is not None:
            self.on_done(self.done, str(trial.config["trial"]["label"]))


def run_sweep(
    base: TrainConfig,
    grid: Mapping[str, Sequence[Any]],
    seeds: Sequence[int],
    out: Path,
    address: str | None = None,
    cpus_per_trial: float = 1.0,
    on_done: TrialDone | None = None,
) -> list[dict[str, Any]]:
    """Every variant x seed as a Tune trial; one record per trial (variant label, seed,
    metrics, best checkpoint), in variant-then-seed order."""
    out = out.resolve()
    trials = [
        (label(variant), seed, trial_config(base, variant, seed, out))
        for variant in variants(grid)
        for seed in seeds
    ]
    space = {
        "trial": tune.grid_search(
            [
                {"label": name, "seed": seed, "config": config.resolved()}
                for name, seed, config in trials
            ]
        )
    }

    def trainable(params: dict[str, Any]) -> None:
        run_trial(params["trial"])

    with ray_session(address):
        tuner = tune.Tuner(
            tune.with_resources(trainable, {"cpu": cpus_per_trial}),
            param_space=space,
            run_config=tune.RunConfig(
                name=f"tune-{base.name}",
                storage_path=str(out / "tune"),
                verbose=0,
                callbacks=[_Finished(on_done)],
            ),
        )
        grid_results = tuner.fit()
    by_trial = {(r.config["trial"]["label"], r.config["trial"]["seed"]): r for r in grid_results}
    records = []
    for name, seed, _ in trials:
        result = by_trial[(name, seed)]
        if result.error is not None:
            raise RuntimeError(f"trial {name} seed {seed} failed: {result.error}")
        metrics = {key: result.metrics[key] for key in result.metrics if key in METRIC_KEYS}
        metrics.update({k: v for k, v in result.metrics.items() if k.startswith(GAME_PREFIX)})
        records.append(
            {"variant": name, "seed": seed, "metrics": metrics, "best": result.metrics[BEST_KEY]}
        )
    return records
