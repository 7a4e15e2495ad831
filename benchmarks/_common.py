"""Shared plumbing for the benchmark scripts: timing, peak memory, saving figures as JSON."""

from __future__ import annotations

import json
import platform
import resource
import time
from collections.abc import Callable
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
