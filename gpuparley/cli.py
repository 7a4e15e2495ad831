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
    from gpuparley.commands import evaluate, export, scenarios, simulate, train, tune
    from gpuparley.deploy.cli import app as deploy_app
    from gpuparley.deploy.cluster.cli import app as cluster_app
    from gpuparley.deploy.process_cli import app_market, app_negotiator, app_workload
    from gpuparley.deploy.protocol.cli import app as protocol_app

    scenarios.register(app)
    simulate.register(app)
    train.register(app)
    export.register(app)
    evaluate.register(app)
    tune.register(app)
    app.add_typer(
        cluster_app, name="cluster", help="Real Kubernetes control planes on this machine."
    )
    app.add_typer(deploy_app, name="deploy", help="Negotiator manifests: CRDs, RBAC, Deployment.")
    app.add_typer(app_negotiator, name="negotiator", help="One agent's in-cluster negotiator.")
    app.add_typer(app_market, name="market", help="The market controller on the host cluster.")
    app.add_typer(app_workload, name="workload", help="Scenario jobs as pods for the negotiator.")
    app.add_typer(protocol_app, name="protocol", help="The market protocol, checked with spin.")


_register_commands()


def main() -> None:
    app()
