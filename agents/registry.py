"""The central schedulers by name, and how to build each for a scenario.

A scheduler's name is its policy spec (`policy.specs` adds the negotiators). Each factory takes a
`SchedulerContext` (tenants with weights and quota shares, the cluster, the workload and the
seed), so a scheduler gets what it needs without the callers knowing which one needs what. A
scheduler that must also act between events (Themis' leases, KAI's periodic cycle) says so with
its `timer_seconds` attribute, which `evaluation.runner.simulate` passes to the Simulator.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from gpuparley.agents.first_fit import FirstFit
from gpuparley.agents.schedulers.base import GangPlacer, SchedulerContext
from gpuparley.agents.schedulers.fgd import fgd
from gpuparley.agents.schedulers.kai import Kai
from gpuparley.agents.schedulers.kube_default import KubeDefault
from gpuparley.agents.schedulers.kueue import Kueue
from gpuparley.agents.schedulers.paper_baselines import (
    best_fit,
    dot_product,
    gpu_clustering,
    gpu_packing,
    random_placement,
)
from gpuparley.agents.schedulers.themis import Themis
from gpuparley.agents.schedulers.volcano import Volcano
from gpuparley.agents.scoring import least_free_gpu, scored_chooser
from gpuparley.envs.free_capacity import tightest_candidate
from gpuparley.envs.jobs import Job
from gpuparley.envs.simulator import Allocator

if TYPE_CHECKING:
    from gpuparley.envs.scenario import Scenario

SCHEDULERS: dict[str, Callable[[SchedulerContext], Allocator]] = {
    "first-fit": lambda _context: FirstFit(),
    "kube-default": KubeDefault,
    "volcano": Volcano,
    "kai": Kai,
    "kueue": Kueue,
    "fgd": fgd,
    "best-fit": best_fit,
    "gpu-packing": gpu_packing,
    "gpu-clustering": gpu_clustering,
    "dot-product": dot_product,
    "random": random_placement,
    "best-fit-gpu": lambda _context: GangPlacer(
        scored_chooser(least_free_gpu, tightest_candidate), "best-fit-gpu"
    ),
    "themis": Themis,
}

INCUMBENTS = ("kube-default", "volcano", "kai", "kueue", "fgd", "themis")
"""The centralised schedulers the market is compared against (first-fit is only a floor)."""

PAPER_POLICIES = ("fgd", "best-fit", "gpu-packing", "gpu-clustering", "dot-product", "random")
"""The FGD paper's placement policies, as its simulator defines them (`schedulers.fgd`,
`schedulers.paper_baselines`). `best-fit-gpu` is this project's stronger best-fit (least free
milli-GPU left, exact, ties to the lowest index), not the paper's."""


def check_scheduler(spec: str) -> None:
    """Raise ValueError naming the valid choices when `spec` is not a known scheduler."""
    if spec not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {spec!r}; choose one of: {', '.join(SCHEDULERS)}")


def make_allocator(
    spec: str,
    scenario: Scenario | None = None,
    seed: int = 0,
    jobs: Sequence[Job] | None = None,
) -> Allocator:
    """Build the allocator a policy spec names for a scenario; an unknown spec lists the valid.

    `jobs` is the workload the run will replay (FGD estimates its target distribution from it);
    when omitted it is drawn from the scenario with `seed`.
    """
    check_scheduler(spec)
    if scenario is None:
        context = SchedulerContext(seed=seed, jobs=jobs or ())
    else:
        workload = jobs if jobs is not None else scenario.build_jobs(seed)
        context = SchedulerContext.from_agents(
            scenario.agents, scenario.build_cluster(), workload, seed
        )
    return SCHEDULERS[spec](context)


def timer_of(allocator: Allocator) -> float | None:
    """Seconds between the allocator's own scheduling cycles, or None if it needs no timer."""
    return getattr(allocator, "timer_seconds", None)
