"""`gpuparley export`: write a checkpoint's policy as ONNX for the torch-free runtime."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gpuparley.commands.console import console, fail, require_training_stack
from gpuparley.envs.folders import FolderError, check_output_file


def register(app: typer.Typer) -> None:
    @app.command("export")
    def export_command(
        checkpoint: Annotated[Path, typer.Argument(help="Checkpoint directory (has model.zip).")],
        out: Annotated[Path, typer.Option(help="Where to write the ONNX file.")] = Path(
            "policy.onnx"
        ),
    ) -> None:
        """Export the policy's action logits to ONNX, spec version and hash in its metadata.

        Needs the training extra: pip install 'gpuparley\\[train]'."""
        require_training_stack("export")
        from gpuparley.policy.encoder_spec import SpecMismatchError
        from gpuparley.train.checkpoint import CheckpointError, export_checkpoint

        if not checkpoint.is_dir():
            fail(f"checkpoint {checkpoint} is not a directory")
        try:
            check_output_file(out, "--out")
            path = export_checkpoint(checkpoint, out)
        except (SpecMismatchError, CheckpointError, FolderError) as error:
            fail(str(error))
        console.print(f"wrote {path} ({path.stat().st_size:,} bytes)")
