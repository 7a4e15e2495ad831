"""FGD as a scheduler: the paper's score plugin (`envs.fgd_score`) run by a `PluginChooser`."""

from __future__ import annotations

from gpuparley.agents.schedulers.base import GangPlacer, SchedulerContext
from gpuparley.envs.fgd_score import Fgd
from gpuparley.envs.fragmentation import TargetWorkload
from gpuparley.envs.score_plugins import PluginChooser


def fgd(context: SchedulerContext) -> GangPlacer:
    """FGD with the target workload estimated from the context's jobs."""
    plugin = Fgd(TargetWorkload.from_jobs(context.jobs))
    return GangPlacer(PluginChooser(plugin.score, plugin.select), "fgd")
