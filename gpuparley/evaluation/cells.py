"""Evaluation cells: one (scenario, policy, seed) run each, and the engines that run a list.

A cell is a call `fn(*args)` whose record depends on its arguments alone (every run builds its
own workload, allocator and simulator from the seed), so cells can run in any order, in any
process, on any machine, and give the same records. A `CellMap` runs a list of cells and
returns their records in the order of the list, whatever order they finished in (`RayCells`,
`evaluation.ray_sweep`: one Ray task per cell); `on_progress` gets (cells done, label) as
cells finish. Without a `CellMap`, tournaments and experiments run their cells in-process.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

CellProgress = Callable[[float, str], None]


class CellMap(Protocol):
    def __call__(
        self,
        fn: Callable[..., dict[str, Any]],
        cells: Sequence[tuple[Any, ...]],
        labels: Sequence[str],
        on_progress: CellProgress | None = None,
    ) -> list[dict[str, Any]]: ...
