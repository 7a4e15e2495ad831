"""What a job asks the market for, in the message form both sides of a negotiation use.

The simulated market and the in-cluster negotiators (which read a job's demand from its real
pods) build demands with the one rule here, so the two compare equal; prices are quoted per
GPU-hour (`HOUR`).
"""

from __future__ import annotations

import functools

from gpuparley.envs.jobs import Job, PodDemand
from gpuparley.envs.market.messages import Demand

HOUR = 3600.0


def job_name(job: Job) -> str:
    return job.name or f"job-{job.id}"


@functools.lru_cache(maxsize=65_536)
def demand_of(job: Job) -> Demand:
    """The message form of a job's demand (what a bid or offer is for)."""
    return demand_for(job_name(job), job.pods, job.pod, job.allowed_models)


def demand_for(
    name: str, pods: int, pod: PodDemand, allowed_models: tuple[str, ...] = ()
) -> Demand:
    """The demand of `pods` pods like `pod`: the one rule the market and the in-cluster
    negotiators (which read it from real pods) share, so their demands compare equal."""
    request = pod.gpu
    return Demand(
        job=name,
        pods=pods,
        gpu_kind=request.kind,
        gpu_count=request.count,
        mig_profile=request.profile,
        gpu_milli=request.milli,
        cpu_milli=pod.cpu_milli,
        memory_mib=pod.memory_mib,
        allowed_models=allowed_models,
    )
