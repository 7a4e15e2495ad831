"""`gpuparley train`: train the shared negotiator policy from a config file.

Bad configs and checkpoints are user errors: they print the loader's message (file, field,
allowed values, or both spec versions) and exit with status 2 instead of a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from gpuparley.commands.console import console, errors, fail, require_training_stack


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
    ) -> None:
        """Train with (Maskable)PPO, one policy shared by all learner seats; keep best/last.

        Needs the training extra: pip install 'gpuparley[train]'."""
        require_training_stack("train")
        from gpuparley.policy.encoder_spec import SpecMismatchError
        from gpuparley.train.checkpoint import CheckpointError
        from gpuparley.train.config import TrainConfigError, load_config
        from gpuparley.train.trainer import train

        try:
            loaded = load_config(config)
        except TrainConfigError as error:
            fail(str(error))
        updates: dict[str, object] = {}
        if seed is not None:
            updates["seed"] = seed
        if output_dir is not None:
            updates["output_dir"] = str(output_dir)
        loaded = loaded.model_copy(update=updates)
        try:
            with training_progress() as progress:
                result = train(loaded, resume=resume, progress=progress)
        except (SpecMismatchError, CheckpointError) as error:
            fail(str(error))
        console.print(
            f"trained {result.timesteps:,} steps in {result.seconds:,.0f} s "
            f"({result.steps_per_second:,.0f} steps/s); "
            f"evaluation score {result.metrics['score']:,.4g} ({loaded.evaluation.select})"
        )
        console.print(f"best checkpoint: {result.best}\nlast checkpoint: {result.last}")
