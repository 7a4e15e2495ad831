"""Pictures of who holds what: node / GPU / MIG-slice occupancy by owner, as text or RGB.

Each GPU is drawn as 8 cells: for a MIG GPU the 8 memory slices (each cell owned by the
instance covering it), for a time-sliced GPU its 1000 milli-GPU in eighths filled by each
holder's share, for an exclusive GPU all 8 cells in its holder's colour.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from gpuparley.envs.mig import lookup_profile

if TYPE_CHECKING:
    from gpuparley.envs.market.core import Market

CELLS = 8
FREE, NO_INSTANCE = -1, -2
MAX_GPUS_DRAWN = 256
_PALETTE = np.array(
    [
        (31, 119, 180),
        (255, 127, 14),
        (44, 160, 44),
        (214, 39, 40),
        (148, 103, 189),
        (140, 86, 75),
        (227, 119, 194),
        (127, 127, 127),
        (188, 189, 34),
        (23, 190, 207),
    ],
    dtype=np.uint8,
)


def gpu_cells(market: Market, g: int) -> list[int]:
    """Owner index (position in `market.agents`) of each of the GPU's 8 cells."""
    state = market.sim.state
    owner_index = {name: i for i, name in enumerate(market.agents)}

    def owner_of(job_id: int) -> int:
        return owner_index.get(market.sim.jobs[job_id].owner, FREE)

    cells: list[int]
    if state.gpu_is_mig[g]:
        cells = [NO_INSTANCE] * CELLS
        model = state.gpu_model_name[g]
        for (profile, start), holder in zip(state.mig_layout[g], state.mig_holder[g], strict=True):
            size = lookup_profile(model, profile).memory_slices
            for cell in range(start, start + size):
                cells[cell] = owner_of(holder) if holder >= 0 else FREE
        return cells
    cells = []
    holders = state.gpu_holders[g]
    if state.node_is_timeslice[state.gpu_node[g]]:
        for job_id in holders:
            request = market.sim.jobs[job_id].pod.gpu
            milli = request.milli if request.kind == "share" else 1000
            cells += [owner_of(job_id)] * max(1, round(milli * CELLS / 1000))
    elif holders:
        cells = [owner_of(holders[0])] * CELLS
    return (cells + [FREE] * CELLS)[:CELLS]


def _symbol(cell: int) -> str:
    if cell == FREE:
        return "."
    if cell == NO_INSTANCE:
        return " "
    return chr(ord("A") + cell % 26)


def render_ansi(market: Market, max_nodes: int = 40) -> str:
    state = market.sim.state
    legend = ", ".join(f"{_symbol(i)}={name}" for i, name in enumerate(market.agents))
    lines = [
        f"t={market.sim.now:,.0f}s epoch {market.epoch} | allocation "
        f"{state.allocated_milli / max(state.gpu_count * 1000, 1):.1%} | {legend}"
    ]
    for node in range(min(state.node_count, max_nodes)):
        spec = state.spec.nodes[node]
        gpus = " ".join(
            "[" + "".join(_symbol(c) for c in gpu_cells(market, g)) + "]"
            for g in state.gpus_of(node)
        )
        lines.append(f"{spec.name:>16} {spec.gpu_model or 'cpu'}/{spec.mode.value:<9} {gpus}")
    if state.node_count > max_nodes:
        lines.append(f"... {state.node_count - max_nodes} more nodes")
    return "\n".join(lines)


def render_rgb(market: Market, cell_px: int = 6) -> np.ndarray:
    state = market.sim.state
    count = max(1, min(state.gpu_count, MAX_GPUS_DRAWN))
    image = np.full((count * cell_px, CELLS * cell_px, 3), 235, dtype=np.uint8)
    for g in range(min(state.gpu_count, MAX_GPUS_DRAWN)):
        for c, owner in enumerate(gpu_cells(market, g)):
            colour = (90, 90, 90) if owner == NO_INSTANCE else (235, 235, 235)
            if owner >= 0:
                colour = _PALETTE[owner % len(_PALETTE)]
            image[g * cell_px : (g + 1) * cell_px - 1, c * cell_px : (c + 1) * cell_px - 1] = colour
    return image
