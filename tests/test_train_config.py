"""Training configs: the bundled ones load; mistakes name the file and the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gpuparley.envs.generator_schema import ScenarioRanges
from gpuparley.train.config import TrainConfigError, load_config, validate_config


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("name", ["default", "smoke", "long", "bundled"])
def test_bundled_configs_load(name: str) -> None:
    config = load_config(name)
    assert config.name == name
    assert not {"timeslice-noisy", "openb", "openb-loaded"} & set(config.scenarios)


def test_unknown_key_names_file_field_and_suggestion(tmp_path: Path) -> None:
    path = write(tmp_path, {"name": "x", "ppo": {"n_step": 10}})
    with pytest.raises(TrainConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert str(path) in message
    assert "ppo.n_step" in message and "did you mean 'n_steps'" in message


def test_bad_value_names_field(tmp_path: Path) -> None:
    path = write(tmp_path, {"name": "x", "total_timesteps": -5, "algorithm": "dqn"})
    with pytest.raises(TrainConfigError) as error:
        load_config(path)
    assert "total_timesteps" in str(error.value) and "algorithm" in str(error.value)


def test_infinity_and_seeds_numpy_cannot_take_name_their_field(tmp_path: Path) -> None:
    path = write(tmp_path, {"name": "x", "seed": -1, "ppo": {"learning_rate": float("inf")}})
    with pytest.raises(TrainConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert "seed: Input should be greater than or equal to 0" in message
    assert "ppo.learning_rate: Input should be a finite number" in message


def test_held_out_scenarios_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, {"name": "x", "scenarios": ["tiny", "openb"]})
    with pytest.raises(TrainConfigError, match="openb are held out"):
        load_config(path)


def test_unknown_opponent_lists_choices(tmp_path: Path) -> None:
    path = write(tmp_path, {"name": "x", "opponents": {"self": 1, "sneaky": 1}})
    with pytest.raises(TrainConfigError, match=r"opponents: unknown opponent 'sneaky'") as error:
        load_config(path)
    assert "scripted:truthful" in str(error.value) and "kube-default" not in str(error.value)


def test_the_rllib_backend_accepts_the_default_and_bundled_configs() -> None:
    bundled = load_config("bundled").resolved()
    assert validate_config({**bundled, "backend": "rllib"}, "bundled").backend == "rllib"
    default = validate_config({**load_config("default").resolved(), "backend": "rllib"}, "x")
    assert default.backend == "rllib" and default.generator is not None
    assert default.warm_start is not None and default.reward_welfare > 0


def test_missing_file_is_a_clear_error() -> None:
    with pytest.raises(TrainConfigError, match="does not exist"):
        load_config("no-such-config")


def test_the_default_config_trains_on_generated_scenarios_only() -> None:
    config = load_config("default")
    assert config.scenarios == [] and config.generator is not None
    assert config.evaluation.select == "welfare" and config.evaluation.generated >= 1
    resolved = config.resolved()
    assert resolved["generator"]["ranges"] == ScenarioRanges().model_dump(mode="json")
    assert validate_config(resolved, "resolved").resolved() == resolved  # a checkpoint reloads


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"generator": {"seeds": "999999-1000001"}}, "overlap the held-out generator seeds"),
        ({"generator": {"seeds": "2000050-2000060"}}, "overlap the validation generator seeds"),
        ({"generator": {"seeds": "ten"}}, "use first-last"),
        ({"generator": {"learner_seats": 3, "ranges": {"agents": [2, 5]}}}, "learner_seats (3)"),
        ({"generator": {"ranges": {"agents": [1, 5]}}}, "agents: the low end must be >= 2"),
        ({"generator": {"ranges": "nowhere"}}, "not found"),
        ({"scenarios": []}, "give `scenarios`"),
        ({"scenarios": ["tiny"], "evaluation": {"select": "welfare"}}, "need a `generator`"),
        ({"generator": {}, "evaluation": {"select": "welfare"}}, "generated >= 1"),
    ],
)
def test_generator_mistakes_name_the_field(tmp_path: Path, section: dict, message: str) -> None:
    path = write(tmp_path, {"name": "x", **section})
    with pytest.raises(TrainConfigError) as error:
        load_config(path)
    assert message in str(error.value)


def test_bundled_evaluation_scenarios_stay_held_out(tmp_path: Path) -> None:
    path = write(tmp_path, {"name": "x", "scenarios": ["openb-loaded"]})
    with pytest.raises(TrainConfigError, match="openb-loaded are held out"):
        load_config(path)
