"""The one `gpuparley` command line. Each command group lives in `gpuparley.commands`."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="gpuparley",
    help="GPU sharing on Kubernetes by negotiation: simulate, evaluate, train and deploy.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _register_commands() -> None:
    from gpuparley.commands import scenarios, simulate

    scenarios.register(app)
    simulate.register(app)


_register_commands()


def main() -> None:
    app()
