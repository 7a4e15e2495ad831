"""Where a command writes, checked before any work is done.

A path that cannot become a folder this user writes in (a file in its way, no permission) then
fails at once, in one line naming the option that gave it, instead of with a traceback after
the run whose results it was to hold (a tournament, a training run, a 40-minute model check).
The check makes nothing: a command refused for another reason leaves nothing behind, and the
writers make their folders as before. Every command of the CLI, whichever layer it lives in,
uses this one check; it sits in the bottom layer so they all can.
"""

from __future__ import annotations

import os
from pathlib import Path


class FolderError(ValueError):
    """An output folder that cannot be made or written in; the message names the option."""


def check_output_folder(folder: Path, option: str) -> Path:
    """`folder` if it is, or can be made, a folder this user writes in (its nearest existing
    ancestor is a writable folder); `FolderError` naming `option` otherwise."""
    existing = folder
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        raise FolderError(
            f"{option}: cannot make the folder {folder} ({existing} is a file); name another"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise FolderError(
            f"{option}: cannot write in {existing} (permission denied); name another folder"
        )
    return folder


def check_output_file(path: Path, option: str) -> Path:
    """`path` if a file can be written there: its folder passes `check_output_folder` and the
    path itself is not a folder; `FolderError` naming `option` otherwise."""
    check_output_folder(path.parent, option)
    if path.is_dir():
        raise FolderError(f"{option}: {path} is a folder; name the file to write")
    return path
