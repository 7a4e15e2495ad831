"""`gpuparley tune`: seed and hyperparameter sweeps of a training config on Ray Tune.

Bad configs, grids and seeds are user errors (one line, exit 2); the sweep's results and report
(mean ± 95% CI over seeds per variant) are written like an evaluation's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gpuparley.commands.console import (
    console,
    fail,
    progress_bar,
    require_ray,
    require_training_stack,
)
from gpuparley.envs.folders import check_output_folder


def register(app: typer.Typer) -> None:
    @app.command("tune")
    def tune_command(
        config: Annotated[
            str, typer.Option(help="Training config: a name in configs/train/ or a YAML path.")
        ],
        seeds: Annotated[str, typer.Option(help="Training seeds: 0-4 or 0,2,7.")] = "0-4",
        grid: Annotated[
            list[str] | None,
            typer.Option(
                help="A hyperparameter's choices KEY=V1,V2 (dotted config key; repeatable: "
                "every combination is a variant)."
            ),
        ] = None,
        backend: Annotated[
            str | None, typer.Option(help="sb3 or rllib (default: the config's).")
        ] = None,
        out: Annotated[
            Path, typer.Option(help="Folder for trial runs, results.json/csv and report.md.")
        ] = Path("out/tune"),
        address: Annotated[
            str | None,
            typer.Option(help="Ray cluster (host:port or auto); default: a local Ray."),
        ] = None,
    ) -> None:
        """Train every variant x seed as a Ray Tune trial; report mean ± CI over seeds.

        Needs pip install 'gpuparley\\[train,ray]'."""
        require_training_stack("tune")
        require_ray("tune")
        from gpuparley.evaluation.results import write_results
        from gpuparley.evaluation.tournament import parse_seeds
        from gpuparley.evaluation.tune_report import sweep_results, write_tune_report
        from gpuparley.train.config import TrainConfigError, load_config
        from gpuparley.train.ray_cluster import RayAddressError
        from gpuparley.train.tune import parse_grid, run_sweep, trial_config, variants

        try:
            check_output_folder(out, "--out")
            base = load_config(config)
            if backend is not None:
                base = trial_config(base, {"backend": backend}, base.seed, out)
            choices = parse_grid(grid or [])
            seed_list = parse_seeds(seeds)
            for variant in variants(choices):  # every trial's config, before anything runs
                trial_config(base, variant, seed_list[0], out)
        except (TrainConfigError, ValueError) as error:
            fail(str(error))
        total = len(variants(choices)) * len(seed_list)
        with progress_bar() as bar:
            task = bar.add_task(f"tune {base.name}: {total} trials", total=total)

            def on_done(done: int, label: str) -> None:
                bar.update(task, completed=done, description=f"tune {base.name}: {label} done")

            try:
                records = run_sweep(base, choices, seed_list, out, address, on_done=on_done)
            except RayAddressError as error:
                fail(str(error))
        results = sweep_results(records, base.name, choices)
        for path in [*write_results(results, out), write_tune_report(results, out)]:
            console.print(f"wrote {path}")
