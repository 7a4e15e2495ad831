"""Names of every allocator the CLI and the evaluation can run, and how to build each.

A policy spec is a plain name for a central scheduler. Market negotiators (`market:<name>`) and
learned policies (`learned:<checkpoint dir>`) join this registry when those capabilities land.
"""

from __future__ import annotations

from collections.abc import Callable

from gpuparley.agents.first_fit import FirstFit
from gpuparley.envs.simulator import Allocator

SCHEDULERS: dict[str, Callable[[], Allocator]] = {
    "first-fit": FirstFit,
}


def make_allocator(spec: str) -> Allocator:
    """Build the allocator a policy spec names; an unknown spec lists the valid ones."""
    factory = SCHEDULERS.get(spec)
    if factory is None:
        raise ValueError(f"unknown scheduler {spec!r}; choose one of: {', '.join(SCHEDULERS)}")
    return factory()
