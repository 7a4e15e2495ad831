"""Terminal output shared by every command: one console, one way to fail cleanly."""

from __future__ import annotations

import importlib.util
from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console()
errors = Console(stderr=True)

USAGE_ERROR = 2
TRAINING_STACK = ("torch", "stable_baselines3", "sb3_contrib")
TRAIN_EXTRA_HINT = "pip install 'gpuparley[train]'"


def fail(message: str, code: int = USAGE_ERROR) -> NoReturn:
    """Print a one-paragraph error (no traceback) and exit with `code`."""
    # soft_wrap: no hard line breaks inside paths and commands the user may copy; escaped, so
    # brackets in the message (`gpuparley[train]`, a list of choices) are printed, not markup.
    errors.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def progress_bar() -> Progress:
    """The progress bar every long-running command shows (done, elapsed, time left)."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=errors,
        transient=True,
    )


def require_training_stack(command: str) -> None:
    """Exit 2 with one line naming the install command when the training stack is missing.

    The plain install (`pip install gpuparley`, and the negotiator image) leaves torch and
    stable-baselines3 out on purpose; only training and export need them, so those two commands
    check first instead of failing deep inside an import with a traceback.
    """
    missing = [name for name in TRAINING_STACK if importlib.util.find_spec(name) is None]
    if missing:
        fail(
            f"`gpuparley {command}` needs the training stack ({', '.join(missing)} not installed): "
            f"{TRAIN_EXTRA_HINT}"
        )


def require_ray(command: str) -> None:
    """Exit 2 with one line naming the install command when Ray (the `ray` extra) is missing."""
    from gpuparley.train.ray_cluster import RAY_EXTRA_HINT, ray_installed

    if not ray_installed():
        fail(
            f"`gpuparley {command}` on Ray needs the ray extra (ray not installed): "
            f"{RAY_EXTRA_HINT}"
        )
