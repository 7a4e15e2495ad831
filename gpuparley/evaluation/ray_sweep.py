"""Evaluation sweeps on Ray: every (scenario, policy, seed) cell is one Ray task.

`RayCells` is a `CellMap` (`evaluation.cells`): it submits one task per cell (one CPU each),
shows progress as tasks finish, and returns the records in the cells' order, so a tournament or
the FGD inflation experiment run through it gives the same `Results` as the serial run, bit for
bit, whatever the number of workers (the records' `wall_s`, a measured time, aside). Arguments
shared by many cells (the scenario, with its trace) are put into Ray's object store once.

A cell runs wherever Ray places it, so a learned policy's ONNX path is made absolute before it
is sent; on a multi-node cluster that path (and the gpuparley version) must be the same on every
node. Needs the `ray` extra; only imported by the commands that were asked for `--ray`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import ray

from gpuparley.evaluation.cells import CellProgress
from gpuparley.policy.specs import PolicySpec
from gpuparley.train.ray_cluster import ray_session


def _portable(arg: Any) -> Any:
    """`arg` as another process on another node can use it (absolute policy paths)."""
    if isinstance(arg, PolicySpec) and arg.source is not None:
        return dataclasses.replace(arg, source=arg.source.resolve())
    return arg


def _scalar(arg: Any) -> bool:
    return arg is None or isinstance(arg, bool | int | float | str)


class RayCells:
    """Run cells as Ray tasks on the connected cluster (`train.ray_cluster.ray_session`)."""

    def __call__(
        self,
        fn: Callable[..., dict[str, Any]],
        cells: Sequence[tuple[Any, ...]],
        labels: Sequence[str],
        on_progress: CellProgress | None = None,
    ) -> list[dict[str, Any]]:
        task = ray.remote(num_cpus=1, max_retries=0)(fn)
        stored: dict[int, Any] = {}

        def stored_once(arg: Any) -> Any:
            if _scalar(arg):
                return arg
            if id(arg) not in stored:
                stored[id(arg)] = ray.put(_portable(arg))
            return stored[id(arg)]

        refs = [task.remote(*(stored_once(arg) for arg in args)) for args in cells]
        index = {ref: position for position, ref in enumerate(refs)}
        pending, done = list(refs), 0
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for ref in ready:
                ray.get(ref)  # raise a failed cell's error now, not after the whole sweep
                done += 1
                if on_progress is not None:
                    label = labels[index[ref]]
                    on_progress(float(done), f"{label} done ({done}/{len(cells)} runs)")
        return ray.get(refs)


@contextmanager
def ray_cells(address: str | None = None, num_cpus: int | None = None) -> Iterator[RayCells]:
    """`RayCells` on the cluster at `address`, or on a local Ray with `num_cpus` CPUs started
    for the block and stopped after it."""
    with ray_session(address, num_cpus):
        yield RayCells()
