"""The FGD paper's baseline placement policies as schedulers (the scores: `envs.score_plugins`).

Each policy is one score plugin of the authors' simulator run alone by a `PluginChooser`; the
module docstring of `envs.score_plugins` gives every formula and the tie and GPU-choice rules.
"""

from __future__ import annotations

from gpuparley.agents.schedulers.base import GangPlacer, SchedulerContext
from gpuparley.envs.score_plugins import (
    PluginChooser,
    RandomChooser,
    best_fit_score,
    best_gpu,
    dot_product_score,
    gpu_clustering_score,
    gpu_packing_score,
)


def best_fit(context: SchedulerContext) -> GangPlacer:
    """The paper's BestFit."""
    del context
    return GangPlacer(PluginChooser(best_fit_score, best_gpu, normalised=True), "best-fit")


def dot_product(context: SchedulerContext) -> GangPlacer:
    """The paper's DotProd."""
    del context
    return GangPlacer(PluginChooser(dot_product_score, best_gpu), "dot-product")


def gpu_packing(context: SchedulerContext) -> GangPlacer:
    """The paper's GpuPacking."""
    del context
    return GangPlacer(PluginChooser(gpu_packing_score, best_gpu), "gpu-packing")


def gpu_clustering(context: SchedulerContext) -> GangPlacer:
    """The paper's GpuClustering."""
    del context
    return GangPlacer(PluginChooser(gpu_clustering_score, best_gpu), "gpu-clustering")


def random_placement(context: SchedulerContext) -> GangPlacer:
    """The paper's Random, seeded with the context's seed."""
    return GangPlacer(RandomChooser(context.seed), "random")
