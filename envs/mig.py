"""Exact MIG geometry: which GPU instances fit where on a MIG-capable GPU.

A MIG-capable GPU has 8 memory slices and 7 compute slices. An instance of profile `Ng.Mgb` uses
N compute slices and a contiguous run of memory slices starting at one of the profile's allowed
start positions; instances never overlap and their compute slices add up to at most 7. The tables
are NVIDIA's (`nvidia-smi mig -lgipp`), copied in `docs/reference.md` ("MIG").

Simplification: the `+me` (media extension) profiles are left out.

The placement engine here is public and usable on its own::

    >>> possible_placements("A100-40GB", "3g.20gb", [("4g.20gb", 0)])
    [4]
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from gpuparley.envs.catalogue import CATALOGUE, gpu_model

MEMORY_SLICES = 8
COMPUTE_SLICES = 7


@dataclass(frozen=True, slots=True)
class MigProfile:
    """A GPU-instance profile: its size in slices and the starts where it may be placed."""

    name: str
    compute_slices: int
    memory_slices: int
    starts: tuple[int, ...]
    memory_gib: int

    def memory_mask(self, start: int) -> int:
        """Bit mask of the memory slices an instance at `start` occupies."""
        return ((1 << self.memory_slices) - 1) << start


def _family(*rows: tuple[str, int, int, tuple[int, ...]]) -> dict[str, MigProfile]:
    return {
        name: MigProfile(name, compute, memory, starts, int(name.split(".")[1].removesuffix("gb")))
        for name, compute, memory, starts in rows
    }


_ALL_STARTS = (0, 1, 2, 3, 4, 5, 6)
_A100_40GB = _family(
    ("1g.5gb", 1, 1, _ALL_STARTS),
    ("1g.10gb", 1, 2, (0, 2, 4, 6)),
    ("2g.10gb", 2, 2, (0, 2, 4)),
    ("3g.20gb", 3, 4, (0, 4)),
    ("4g.20gb", 4, 4, (0,)),
    ("7g.40gb", 7, 8, (0,)),
)
# A100-80GB and H100-80GB share geometry and names (memory doubled in the names).
_80GB = _family(
    ("1g.10gb", 1, 1, _ALL_STARTS),
    ("1g.20gb", 1, 2, (0, 2, 4, 6)),
    ("2g.20gb", 2, 2, (0, 2, 4)),
    ("3g.40gb", 3, 4, (0, 4)),
    ("4g.40gb", 4, 4, (0,)),
    ("7g.80gb", 7, 8, (0,)),
)

PROFILES: dict[str, dict[str, MigProfile]] = {
    "A100-40GB": _A100_40GB,
    "A100-80GB": _80GB,
    "H100-80GB": _80GB,
}
assert set(PROFILES) == {name for name, m in CATALOGUE.items() if m.mig_capable}

Instance = tuple[str, int]
"""A placed GPU instance: (profile name, start memory slice)."""


def profiles_of(gpu_model_name: str) -> dict[str, MigProfile]:
    """The MIG profiles of a model; a clear error for unknown or non-MIG models."""
    gpu_model(gpu_model_name)  # unknown name -> ValueError listing the models
    try:
        return PROFILES[gpu_model_name]
    except KeyError:
        raise ValueError(
            f"GPU model {gpu_model_name!r} is not MIG-capable; MIG-capable models: "
            f"{', '.join(PROFILES)}"
        ) from None


def lookup_profile(gpu_model_name: str, profile_name: str) -> MigProfile:
    """One profile of a model; an unknown profile lists the model's valid profiles."""
    table = profiles_of(gpu_model_name)
    try:
        return table[profile_name]
    except KeyError:
        raise ValueError(
            f"unknown MIG profile {profile_name!r} for {gpu_model_name}; valid profiles: "
            f"{', '.join(table)}"
        ) from None


def _occupancy(gpu_model_name: str, occupied: Iterable[Instance]) -> tuple[int, int]:
    """Memory mask and compute slices used by `occupied`, which must itself be a legal layout."""
    mask = 0
    compute = 0
    for name, start in occupied:
        placed = lookup_profile(gpu_model_name, name)
        if start not in placed.starts:
            raise ValueError(
                f"MIG instance {name} cannot start at slice {start} on {gpu_model_name}; "
                f"allowed starts: {list(placed.starts)}"
            )
        instance_mask = placed.memory_mask(start)
        if mask & instance_mask:
            raise ValueError(
                f"MIG instance ({name}, {start}) overlaps another instance on {gpu_model_name}"
            )
        mask |= instance_mask
        compute += placed.compute_slices
    if compute > COMPUTE_SLICES:
        raise ValueError(
            f"MIG layout on {gpu_model_name} uses {compute} compute slices; "
            f"at most {COMPUTE_SLICES} exist"
        )
    return mask, compute


def possible_placements(gpu_model: str, profile: str, occupied: list[tuple[str, int]]) -> list[int]:
    """Start slices where `profile` fits beside the already placed `(profile, start)` instances.

    Returns an empty list when it cannot fit. Raises `ValueError` naming the valid choices for an
    unknown model or profile, and for an `occupied` list that is not itself a legal layout.
    """
    wanted = lookup_profile(gpu_model, profile)
    mask, compute = _occupancy(gpu_model, occupied)
    if compute + wanted.compute_slices > COMPUTE_SLICES:
        return []
    return [start for start in wanted.starts if not mask & wanted.memory_mask(start)]


def validate_layout(gpu_model_name: str, layout: Sequence[Instance]) -> None:
    """Raise `ValueError` unless `layout` is a legal set of instances for the model."""
    _occupancy(gpu_model_name, layout)


def fill_layout(gpu_model_name: str, profile_names: Sequence[str]) -> list[Instance]:
    """Place the given profiles in order, each at its lowest free start; error if one won't fit.

    This is how a scenario names a layout by its instances (e.g. `[3g.40gb, 2g.20gb, 1g.10gb]`)
    without spelling out start slices.
    """
    layout: list[Instance] = []
    for name in profile_names:
        starts = possible_placements(gpu_model_name, name, layout)
        if not starts:
            raise ValueError(
                f"MIG layout {list(profile_names)} does not fit on {gpu_model_name}: no room for "
                f"{name} after {layout}"
            )
        layout.append((name, starts[0]))
    return layout


def uniform_layout(gpu_model_name: str, profile_name: str) -> list[Instance]:
    """As many instances of one profile as fit (the mig-parted `all-<profile>` configs)."""
    layout: list[Instance] = []
    while starts := possible_placements(gpu_model_name, profile_name, layout):
        layout.append((profile_name, starts[0]))
    return layout


def profile_for_share(
    gpu_model_name: str, gpu_milli: int, gpu_memory_gib: float | None = None
) -> str:
    """Smallest MIG profile covering a fractional GPU request, by compute and by memory.

    A trace pod asks for `gpu_milli` thousandths of one GPU; on MIG hardware it needs an instance
    with at least that compute share (N/7 >= gpu_milli/1000) and at least its GPU memory. The
    trace gives no GPU memory, so by default the pod is assumed to need the same share of the
    GPU's memory as of its compute (a documented modelling choice).
    """
    if not 0 < gpu_milli <= 1000:
        raise ValueError(f"gpu_milli must be in 1..1000, got {gpu_milli}")
    model = gpu_model(gpu_model_name)
    table = profiles_of(gpu_model_name)
    memory_needed = (
        gpu_memory_gib if gpu_memory_gib is not None else model.memory_gib * gpu_milli / 1000
    )
    slices_needed = math.ceil(COMPUTE_SLICES * gpu_milli / 1000 - 1e-9)
    candidates = [
        p
        for p in table.values()
        if p.compute_slices >= slices_needed and p.memory_gib >= memory_needed - 1e-9
    ]
    if not candidates:
        raise ValueError(
            f"no MIG profile of {gpu_model_name} covers {gpu_milli} milli-GPU and "
            f"{memory_needed:.1f} GiB"
        )
    return min(candidates, key=lambda p: (p.compute_slices, p.memory_slices)).name
