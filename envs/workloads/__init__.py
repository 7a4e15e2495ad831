"""Workloads: seeded synthetic job streams (`generators`) and the openb trace (`openb`)."""

from gpuparley.envs.workloads.generators import (
    DEFAULT_CLASSES,
    GeneratorConfig,
    JobClass,
    generate_jobs,
)
from gpuparley.envs.workloads.openb import (
    TraceFormatError,
    TraceNotFoundError,
    assign_agent,
    load_openb_jobs,
    load_openb_nodes,
    map_gpu_request,
)

__all__ = [
    "DEFAULT_CLASSES",
    "GeneratorConfig",
    "JobClass",
    "TraceFormatError",
    "TraceNotFoundError",
    "assign_agent",
    "generate_jobs",
    "load_openb_jobs",
    "load_openb_nodes",
    "map_gpu_request",
]
