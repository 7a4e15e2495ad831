"""Hand-made markets for the economics and property tests."""

from pathlib import Path

import yaml

from gpuparley.envs.jobs import GPURequest, Job, PodDemand
from gpuparley.envs.market.core import Market
from gpuparley.envs.scenario import load_scenario


def scenario_file(tmp: Path, gpus: int, agents: list[dict], **market) -> Path:
    """A one-node exclusive A100-80GB cluster with the given agents (generator jobs unused)."""
    data = {
        "name": "hand-made",
        "agents": agents,
        "cluster": {
            "nodes": [
                {
                    "name": "a100",
                    "count": 1,
                    "cpu_milli": 64000,
                    "memory_mib": 512000,
                    "gpu_model": "A100-80GB",
                    "gpus": gpus,
                    "mode": "exclusive",
                }
            ]
        },
        "workload": {"generator": {"jobs": 1, "classes": {"training": {"sizes": {"1x1": 1}}}}},
        "market": {"epoch_seconds": 300, "lease_term_epochs": 4, **market},
    }
    path = tmp / "hand-made.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def gpu_job(job_id: int, owner: str, gpus: int, value: float, duration: float = 3600.0) -> Job:
    return Job(
        job_id,
        owner,
        PodDemand(GPURequest("whole", count=gpus), 1000, 1000),
        duration,
        0.0,
        value=value,
        name=f"job-{job_id}",
    )


def market_with_jobs(path: Path, jobs: list[Job], mechanism: str) -> Market:
    scenario = load_scenario(path)
    scenario.build_jobs = lambda seed=None: list(jobs)  # the hand-made workload
    return Market(scenario, seed=0, mechanism=mechanism)
