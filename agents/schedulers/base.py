"""What every incumbent scheduler shares: its construction context and tenant bookkeeping.

`SchedulerContext` is what the registry hands a scheduler factory: the tenants (with their
weights and quota shares), the cluster, the workload (FGD estimates its target distribution
from it) and the seed for any randomness. `GangPlacer` is the plain arrival-order, gang-atomic
loop that first-fit and the FGD paper's placement policies share; they differ only in the node
chooser.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gpuparley.agents.scoring import demand_gpus, held_gpus
from gpuparley.envs.jobs import Job
from gpuparley.envs.planner import NodeChooser, plan_job
from gpuparley.envs.topology import ClusterSpec

if TYPE_CHECKING:
    from gpuparley.envs.scenario import AgentConfig
    from gpuparley.envs.simulator import Simulator


@dataclass(frozen=True)
class Tenant:
    """A tenant as the schedulers see it: a namespace / queue with a weight and a quota."""

    name: str
    weight: float = 1.0
    quota_share: float = 0.0


@dataclass(frozen=True)
class SchedulerContext:
    """Everything a scheduler may be built from (see `agents.registry.make_allocator`)."""

    tenants: tuple[Tenant, ...] = ()
    cluster: ClusterSpec | None = None
    jobs: Sequence[Job] = field(default=(), compare=False)
    seed: int = 0

    @property
    def cluster_gpus(self) -> int:
        return sum(n.gpu_count for n in self.cluster.nodes) if self.cluster else 0

    def quota(self, tenant: Tenant) -> float:
        """The tenant's quota in GPUs: its quota share of every GPU in the cluster."""
        return tenant.quota_share * self.cluster_gpus

    @classmethod
    def from_agents(
        cls,
        agents: Iterable[AgentConfig],
        cluster: ClusterSpec | None = None,
        jobs: Sequence[Job] = (),
        seed: int = 0,
    ) -> SchedulerContext:
        tenants = tuple(Tenant(a.name, a.weight, a.quota_share or 0.0) for a in agents)
        return cls(tenants, cluster, jobs, seed)


def tenant_names(context: SchedulerContext, sim: Simulator) -> list[str]:
    """Known tenants, plus any owner seen in the workload but missing from the context."""
    names = [t.name for t in context.tenants]
    seen = set(names)
    for job in sim.jobs.values():
        if job.owner not in seen:
            seen.add(job.owner)
            names.append(job.owner)
    return names


def usage_by_owner(sim: Simulator) -> dict[str, float]:
    """GPU-equivalents held per tenant (running jobs and partly placed ones)."""
    usage: dict[str, float] = defaultdict(float)
    for job_id in sim.state.holdings:
        job = sim.jobs[job_id]
        usage[job.owner] += held_gpus(sim.state, job)
    return usage


def demand_by_owner(sim: Simulator) -> dict[str, float]:
    """GPU-equivalents each tenant holds plus what its waiting jobs still ask for."""
    demand = usage_by_owner(sim)
    for job in sim.pending():
        placed = len(sim.state.holdings.get(job.id, ()))
        demand[job.owner] += demand_gpus(sim.state, job, placed)
    return demand


def shape_of(job: Job) -> tuple:
    """Jobs of one shape fit or fail together on an unchanged cluster."""
    return (job.pod, job.pods, job.allowed_models)


def preemptible_running(sim: Simulator, min_runtime: float = 0.0) -> list[Job]:
    """Running jobs that have run at least `min_runtime` seconds since they (re)started."""
    return [
        job
        for job in sim.running()
        if (start := sim.records[job.id].start) is not None and sim.now - start >= min_runtime
    ]


class GangPlacer:
    """Arrival-order, gang-atomic placement with a pluggable node chooser.

    A job that does not fit is skipped for now (no reservation), so small jobs may overtake a
    large one. Within a pass, once a demand shape has failed, later jobs of the same shape are
    skipped without search: nothing has been freed in between, so they would fail too.
    """

    name = "gang-placer"
    timer_seconds: float | None = None

    def __init__(self, choose: NodeChooser, name: str | None = None) -> None:
        self.choose = choose
        if name is not None:
            self.name = name

    def schedule(self, sim: Simulator) -> None:
        failed: set[tuple] = set()
        for job in sim.pending():
            shape = shape_of(job)
            if shape in failed:
                continue
            plan = plan_job(sim.state, job, self.choose)
            if plan is None:
                failed.add(shape)
            else:
                sim.bind(job, plan)
