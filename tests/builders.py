"""Small hand-built clusters and jobs shared by the tests."""

from collections.abc import Sequence

from gpuparley.agents.schedulers.base import SchedulerContext, Tenant
from gpuparley.envs import mig
from gpuparley.envs.jobs import GPURequest, Job, PodDemand
from gpuparley.envs.topology import ClusterSpec, NodeSpec, SharingMode


def mixed_cluster() -> ClusterSpec:
    """Two exclusive 4-GPU nodes, a MIG node with mixed layouts, a time-sliced node."""
    return ClusterSpec(
        (
            NodeSpec("ex-0", 32_000, 256_000, "A100-80GB", 4),
            NodeSpec("ex-1", 32_000, 256_000, "H100-80GB", 4),
            NodeSpec(
                "mig-0",
                32_000,
                256_000,
                "A100-80GB",
                2,
                SharingMode.MIG,
                mig_layout=tuple(mig.fill_layout("A100-80GB", ["3g.40gb", "2g.20gb", "1g.10gb"])),
            ),
            NodeSpec("ts-0", 16_000, 128_000, "T4", 2, SharingMode.TIMESLICE, replicas=4),
        )
    )


def exclusive_cluster(nodes: int = 1, gpus: int = 4, model: str = "A100-80GB") -> ClusterSpec:
    """`nodes` identical exclusive nodes with `gpus` whole GPUs each (roomy CPU and memory)."""
    return ClusterSpec(
        tuple(NodeSpec(f"ex-{i}", 64_000, 512_000, model, gpus) for i in range(nodes))
    )


def timeslice_cluster(gpus: int = 2, replicas: int = 4) -> ClusterSpec:
    """One time-sliced A100-40GB node."""
    return ClusterSpec(
        (NodeSpec("ts-0", 64_000, 512_000, "A100-40GB", gpus, SharingMode.TIMESLICE, replicas),)
    )


def gpu_job(
    job_id: int,
    owner: str,
    *,
    gpus: int = 1,
    pods: int = 1,
    milli: int = 0,
    duration: float = 1000.0,
    arrival: float = 0.0,
    priority: int = 0,
) -> Job:
    """A job of `pods` pods, each with `gpus` whole GPUs (or a `milli` share when given)."""
    request = GPURequest("share", milli=milli) if milli else GPURequest("whole", count=gpus)
    return Job(
        job_id,
        owner,
        PodDemand(request, 1000, 4096),
        duration,
        arrival,
        pods=pods,
        priority=priority,
    )


def context(
    cluster: ClusterSpec, shares: dict[str, float], jobs: Sequence[Job] = (), seed: int = 0
) -> SchedulerContext:
    """A scheduler context with equal-weight tenants holding these quota shares."""
    tenants = tuple(Tenant(name, 1.0, share) for name, share in shares.items())
    return SchedulerContext(tenants, cluster, jobs, seed)
