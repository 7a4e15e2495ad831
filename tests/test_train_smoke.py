"""End to end: a smoke training run, its checkpoints, the learned negotiator, seeds, resume, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from gpuparley.agents.negotiators.simple import Truthful
from gpuparley.commands import train as train_command
from gpuparley.envs.market.encoding import ACTION_COUNT, OBSERVATION_SIZE, SPEC_VERSION, spec_hash
from gpuparley.envs.market.episode import play_episode
from gpuparley.envs.market.negotiator import Negotiator
from gpuparley.envs.market.parallel_env import GPUMarketEnv
from gpuparley.envs.scenario_generator import VALIDATION_SEEDS
from gpuparley.policy.encoder_spec import SpecMismatchError
from gpuparley.policy.learned import LearnedNegotiator
from gpuparley.policy.runtime import NumpyMlp
from gpuparley.train.checkpoint import (
    TorchLogits,
    load_checkpoint_config,
    load_metrics,
    load_model,
)
from gpuparley.train.config import EvaluationConfig, GeneratorConfig
from gpuparley.train.imitation import collect, imitate
from gpuparley.train.opponents import SnapshotPool
from gpuparley.train.trainer import build_env, build_model, train
from gpuparley.train.weights import policy_layers

from train_helpers import flat, smoke_config, smoke_run, tampered_copy


def test_smoke_run_writes_best_and_last_checkpoints() -> None:
    run = smoke_run()
    for name in ("best", "last"):
        directory = run / name
        assert {p.name for p in directory.iterdir()} >= {
            "model.zip",
            "config.yaml",
            "spec.json",
            "metrics.json",
        }
        spec = json.loads((directory / "spec.json").read_text())
        assert spec["version"] == SPEC_VERSION and spec["hash"] == spec_hash()
        metrics = load_metrics(directory)
        assert {"mean_utility", "per_game", "score", "timesteps"} <= set(metrics)
        assert load_checkpoint_config(directory).name == "smoke"
    assert load_metrics(run / "last")["timesteps"] >= 256
    assert any((run / "tb").rglob("events.out.tfevents.*"))
    record = json.loads((run / "training.json").read_text())
    assert record["timesteps"] >= 256 and record["steps_per_second"] > 0


def test_learned_negotiator_plays_legal_moves_in_the_market() -> None:
    learned = LearnedNegotiator.from_checkpoint(smoke_run() / "best")
    assert isinstance(learned, Negotiator)
    env = GPUMarketEnv("tiny", mechanism="bargain", max_epochs=5)
    seen = []

    class Watching(LearnedNegotiator):
        def act(self, observation, mask, view) -> int:
            action = super().act(observation, mask, view)
            assert mask[action], "the learned negotiator chose a masked action"
            seen.append(action)
            return action

    watcher = Watching(learned.model)
    players = {"alice": watcher, "bob": Truthful(), "carol": learned}
    utility = play_episode(env, players, seed=1).utility
    assert set(utility) == {"alice", "bob", "carol"} and seen
    # deterministic: the same observation always gets the same action
    obs, _ = env.reset(seed=2)
    first = [learned.act(o["observation"], o["action_mask"], env.views[a]) for a, o in obs.items()]
    again = [learned.act(o["observation"], o["action_mask"], env.views[a]) for a, o in obs.items()]
    assert first == again


def test_torch_and_numpy_learned_negotiators_agree() -> None:
    directory = smoke_run() / "best"
    numpy_player = LearnedNegotiator.from_checkpoint(directory)
    torch_player = LearnedNegotiator(TorchLogits(load_model(directory).policy))
    rng = np.random.default_rng(0)
    for _ in range(200):
        obs = rng.uniform(-2, 2, OBSERVATION_SIZE).astype(np.float32)
        mask = (rng.random(ACTION_COUNT) < 0.4).astype(np.int8)
        mask[0] = 1
        assert numpy_player.act(obs, mask, None) == torch_player.act(obs, mask, None)


def test_spec_mismatch_is_refused(tmp_path: Path) -> None:
    bad = tampered_copy(smoke_run() / "best", tmp_path / "old", "gpu_market_v0/0", "deadbeef")
    with pytest.raises(SpecMismatchError) as error:
        load_model(bad)
    message = str(error.value)
    assert "gpu_market_v0/0" in message and "deadbeef" in message
    assert SPEC_VERSION in message and spec_hash() in message


def test_same_seed_same_run_other_seed_other_run(tmp_path: Path) -> None:
    def weights(seed: int, folder: str) -> list[np.ndarray]:
        config = smoke_config(tmp_path / folder, seed=seed, total_timesteps=128)
        result = train(config)
        return [layer.weight for layer in policy_layers(load_model(result.last).policy)]

    first, again, other = weights(5, "a"), weights(5, "b"), weights(6, "c")
    for left, right in zip(first, again, strict=True):
        np.testing.assert_array_equal(left, right)
    assert any(not np.array_equal(left, right) for left, right in zip(first, other, strict=True))


def test_resume_continues_from_a_checkpoint(tmp_path: Path) -> None:
    config = smoke_config(tmp_path, total_timesteps=384)
    result = train(config, resume=smoke_run() / "last")
    assert result.timesteps >= 384
    assert load_model(result.last).num_timesteps == result.timesteps


def cli() -> typer.Typer:
    app = typer.Typer()
    train_command.register(app)
    app.command("noop")(lambda: None)  # keeps `train` a named subcommand
    return app


def test_cli_trains_and_reports_bad_configs(tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["train", "--config", "smoke", "--seed", "3", "--output-dir", str(tmp_path)]
    result = runner.invoke(cli(), args)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "smoke" / "seed-3" / "best" / "model.zip").is_file()
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nppo: {n_steps: 0}\n")
    result = runner.invoke(cli(), ["train", "--config", str(bad)])
    assert result.exit_code == 2
    assert "ppo.n_steps" in flat(result.output) and str(bad) in flat(result.output)


def test_cli_refuses_resuming_a_checkpoint_of_another_spec(tmp_path: Path) -> None:
    bad = tampered_copy(smoke_run() / "last", tmp_path / "old", "gpu_market_v0/0", "0ld")
    args = ["train", "--config", "smoke", "--resume", str(bad), "--output-dir", str(tmp_path)]
    result = CliRunner().invoke(cli(), args)
    assert result.exit_code == 2
    assert "gpu_market_v0/0" in flat(result.output) and SPEC_VERSION in flat(result.output)


def test_training_on_generated_scenarios_selects_by_welfare(tmp_path: Path) -> None:
    generator = GeneratorConfig(
        ranges={"agents": [2, 4], "jobs": [10, 20], "max_gpus": 8, "arrival_hours": [2, 4]},
        seeds="0-49",
        games=2,
        learner_seats=2,
    )
    evaluation = EvaluationConfig(every=128, max_epochs=None, generated=1, select="welfare")
    config = smoke_config(
        tmp_path, scenarios=[], generator=generator, evaluation=evaluation, total_timesteps=256
    )
    result = train(config)
    metrics = load_metrics(result.best)
    gaps = list(metrics["welfare"]["per_scenario"].values())
    cap = config.evaluation.gain_cap  # gains above it count as it; losses in full
    assert metrics["score"] == pytest.approx(sum(min(gap, cap) for gap in gaps) / len(gaps))
    assert list(metrics["welfare"]["per_scenario"]) == [
        f"generated-{VALIDATION_SEEDS[0]}/{mechanism}" for mechanism in config.mechanisms
    ]
    stored = load_checkpoint_config(result.best)
    assert stored.generator is not None and stored.generator.scenario_ranges().agents == (2, 4)


def test_a_warm_start_imitates_its_teacher(tmp_path: Path) -> None:
    """After imitating truthful, the untrained-by-PPO policy bids as truthful does."""
    demonstrations_env = smoke_config(tmp_path, mechanisms=["auction"])
    env = build_env(demonstrations_env, SnapshotPool(1))
    model = build_model(demonstrations_env, env, None)
    truthful = Truthful()
    demonstrations = collect(env, truthful, 3000)
    assert len(demonstrations.actions) >= 3000
    before = NumpyMlp(policy_layers(model.policy))
    accuracy = imitate(model, demonstrations, epochs=8)
    assert accuracy > 0.95
    learned = LearnedNegotiator(NumpyMlp(policy_layers(model.policy)))
    untrained = LearnedNegotiator(before)
    game = GPUMarketEnv("tiny", mechanism="auction")
    played = play_episode(game, learned, 3).summary["welfare"]
    assert played == pytest.approx(play_episode(game, truthful, 3).summary["welfare"], rel=1e-9)
    assert play_episode(game, untrained, 3).summary["welfare"] != pytest.approx(played, rel=1e-9)
