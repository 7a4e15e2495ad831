"""Shared plumbing for the benchmark scripts: timing, peak memory, saving figures as JSON."""

from __future__ import annotations

import contextlib
import json
import platform
import resource
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def best_of(repeats: int, work: Callable[[], Any]) -> tuple[float, Any]:
    """Fastest wall time of `repeats` runs (least disturbed by other load), and the last result."""
    best = float("inf")
    result = None
    for _ in range(repeats):
        start = time.perf_counter()
        result = work()
        best = min(best, time.perf_counter() - start)
    return best, result


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def save(name: str, figures: dict[str, Any]) -> Path:
    """Write figures with the machine they were measured on to benchmarks/results/NAME.json."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {"machine": {"python": platform.python_version(), "cpu": platform.processor()}}
    payload.update(figures)
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


@contextlib.contextmanager
def host_with_bundle(agent: str) -> Iterator[Any]:
    """Fresh local planes (the host and `agent`'s own) with the agent's bundle applied to the
    host as the admin, so its RBAC and the admission policies are in force; torn down after."""
    from gpuparley.deploy.apply import apply_objects
    from gpuparley.deploy.cluster import nodes, planes
    from gpuparley.deploy.kube import connect
    from gpuparley.deploy.render import AgentBundle, render_objects

    with tempfile.TemporaryDirectory(prefix="gpuparley-bench-") as tmp:
        state_dir = Path(tmp) / "state"
        state = planes.up(
            state_dir, nodes.default_fake_nodes(), [agent], scenario="default", die_with_parent=True
        )
        try:
            with connect(state.host.kubeconfig) as api:
                apply_objects(api, render_objects(AgentBundle(agent=agent)))
            yield state
        finally:
            planes.down(state_dir)
