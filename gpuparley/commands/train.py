"""`gpuparley train`: train the shared negotiator policy from a config file.

Bad configs and checkpoints are user errors: they print the loader's message (file, field,
allowed values, or both spec versions) and exit with status 2 instead of a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from gpuparley.commands.console import (
    console,
    errors,
    fail,
    require_ray,
    require_training_stack,
)
from gpuparley.envs.folders import FolderError, check_output_folder

if TYPE_CHECKING:  # the training stack is imported only once it is known to be installed
    from gpuparley.train.config import TrainConfig
    from gpuparley.train.trainer import TrainResult


def training_progress() -> Progress:
    """The shared progress bar layout plus steps done and steps/s (training's own rate)."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,.0f}/{task.total:,.0f} steps"),
        TextColumn("{task.fields[rate]} steps/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=errors,
        transient=True,
    )


def run(
    config: TrainConfig, resume: Path | None, address: str | None, progress: Progress
) -> TrainResult:
    """Train on the config's backend."""
    if config.backend == "rllib":
        from gpuparley.train.rllib_backend import train_rllib

        return train_rllib(config, address, progress)
    from gpuparley.train.trainer import train

    return train(config, resume=resume, progress=progress)


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train_command(
        config: Annotated[
            str, typer.Option(help="Training config: a name in configs/train/ or a YAML path.")
        ],
        seed: Annotated[
            int | None, typer.Option(help="Override the config's seed (same seed, same run).")
        ] = None,
        resume: Annotated[
            Path | None, typer.Option(help="Continue from this checkpoint directory.")
        ] = None,
        output_dir: Annotated[
            Path | None, typer.Option(help="Override the config's output directory (runs/).")
        ] = None,
        backend: Annotated[
            str | None,
            typer.Option(
                help="sb3 (stable-baselines3) or rllib (RLlib on Ray); default: the "
                "config's `backend`."
            ),
        ] = None,
        address: Annotated[
            str | None,
            typer.Option(
                help="rllib: the Ray cluster to train on (host:port or auto); "
                "default: a local Ray started for the run."
            ),
        ] = None,
    ) -> None:
        """Train with (Maskable)PPO, one policy shared by all learner seats; keep best/last.

        Needs the training extra: pip install 'gpuparley\\[train]' (and 'gpuparley\\[ray]' for
        --backend rllib)."""
        require_training_stack("train")
        from gpuparley.policy.encoder_spec import SpecMismatchError
        from gpuparley.train.checkpoint import CheckpointError
        from gpuparley.train.config import TrainConfigError, load_config, validate_config
        from gpuparley.train.ray_cluster import RayAddressError

        try:
            loaded = load_config(config)
            updates: dict[str, object] = {}
            if seed is not None:
                updates["seed"] = seed
            if output_dir is not None:
                updates["output_dir"] = str(output_dir)
            if backend is not None:
                updates["backend"] = backend
            loaded = validate_config({**loaded.resolved(), **updates}, f"{config} (options)")
        except TrainConfigError as error:
            fail(str(error))
        if loaded.backend == "rllib":
            require_ray("train --backend rllib")
            if resume is not None:
                fail("--resume continues sb3 runs only; start an rllib run afresh")
        elif address is not None:
            fail("--address is for --backend rllib (sb3 trains in this process)")
        try:
            check_output_folder(
                Path(loaded.output_dir), "--output-dir (or the config's output_dir)"
            )
        except FolderError as error:
            fail(str(error))
        try:
            with training_progress() as progress:
                result = run(loaded, resume, address, progress)
        except (SpecMismatchError, CheckpointError, RayAddressError) as error:
            fail(str(error))
        console.print(
            f"trained {result.timesteps:,} steps in {result.seconds:,.0f} s "
            f"({result.steps_per_second:,.0f} steps/s); "
            f"evaluation score {result.metrics['score']:,.4g} ({loaded.evaluation.select})"
        )
        console.print(f"best checkpoint: {result.best}\nlast checkpoint: {result.last}")
