"""The generalisation experiment's figures: paired differences, from saved results only (so
`gpuparley report DIR` rebuilds them; `generalisation_report` writes them out).

Every comparison is paired: the learned market, the truthful market and the incumbents play the
same workload to the same horizon, and the figure is the per-workload difference in welfare
(realised value), averaged with a Student-t interval. Relative differences divide by the
truthful market's (or the incumbent's) welfare on that workload (at least 1 credit, so a
workload where nothing is worth anything counts as no difference).

* Bundled scenarios: the best incumbent is the one with the highest mean welfare on that
  scenario; "at least truthful" and "above the best incumbent" compare the means.
* Generated scenarios (held-out and training-distribution seeds): each seed is its own
  scenario, so the best incumbent is the best of them on that seed (the strictest comparator);
  "learned >= truthful" counts seeds (ties, equal to a millionth, included and also shown).
* The gap: the mean relative learned-truthful difference on training-distribution seeds minus
  that on held-out seeds (Welch interval): above zero, the policy does better where it trained.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gpuparley.evaluation.results import Results
from gpuparley.evaluation.stats import difference_ci, mean_ci

Interval = tuple[float | None, float | None]
TIE = 1e-6  # relative: welfare equal to this is a tie
FLOOR = 1.0  # credits: the smallest denominator of a relative difference


@dataclass(frozen=True)
class Workload:
    """One workload's figures: welfare and jobs finished per policy."""

    scenario: str
    seed: int
    welfare: dict[str, float]
    finished: dict[str, float]
    jobs: float


@dataclass(frozen=True)
class Comparison:
    """The learned policy against truthful and the best incumbent on a set of workloads."""

    label: str
    n: int
    welfare: dict[str, Interval]  # learned, truthful, best incumbent (mean welfare)
    best: str  # the best incumbent's name (or "per seed")
    vs_truthful: Interval
    vs_truthful_pct: Interval
    vs_best: Interval
    vs_best_pct: Interval
    at_least_truthful: int
    ties: int
    above_best: int
    finished: dict[str, Interval]  # jobs finished, learned / truthful / best incumbent
    best_finishes_all: bool  # the best incumbent finished every job of every workload
    learned_finishes_all: bool

    @property
    def share_at_least_truthful(self) -> float:
        return self.at_least_truthful / self.n if self.n else 0.0

    @property
    def above_best_mean(self) -> bool:
        """The learned policy's mean welfare is above the best incumbent's (beyond a tie)."""
        learned, best = self.welfare["learned"][0], self.welfare["best"][0]
        if learned is None or best is None:
            return False
        return learned - best > TIE * max(abs(best), FLOOR)


def _relative(value: float, base: float) -> float:
    return (value - base) / max(abs(base), FLOOR)


def workloads(results: Results, group: str) -> list[Workload]:
    """The group's workloads, in run order, with every policy's welfare and jobs finished."""
    found: dict[tuple[str, int], Workload] = {}
    for run in results.runs:
        if run.get("group") != group:
            continue
        key = (run["scenario"], run["seed"])
        metrics = run["metrics"]
        if key not in found:
            found[key] = Workload(key[0], key[1], {}, {}, float(metrics.get("jobs") or 0))
        found[key].welfare[run["policy"]] = float(metrics.get("welfare") or 0.0)
        found[key].finished[run["policy"]] = float(metrics.get("jobs_finished") or 0.0)
    return list(found.values())


def compare(
    label: str, items: Sequence[Workload], config: dict[str, Any], per_seed_best: bool
) -> Comparison:
    """The learned policy against truthful and the best incumbent (module docstring)."""
    learned, truthful, incumbents = config["learned"], config["truthful"], config["incumbents"]
    if per_seed_best:
        best_of = [max(incumbents, key=lambda p, w=w: w.welfare[p]) for w in items]
        best = "per seed"
    else:
        means = {p: sum(w.welfare[p] for w in items) / len(items) for p in incumbents}
        best = max(incumbents, key=lambda p: means[p])
        best_of = [best] * len(items)
    rows = list(zip(items, best_of, strict=True))
    to_truthful = [w.welfare[learned] - w.welfare[truthful] for w in items]
    to_best = [w.welfare[learned] - w.welfare[b] for w, b in rows]
    ties = sum(
        abs(d) <= TIE * max(abs(w.welfare[truthful]), FLOOR)
        for d, w in zip(to_truthful, items, strict=True)
    )
    return Comparison(
        label=label,
        n=len(items),
        welfare={
            "learned": mean_ci([w.welfare[learned] for w in items]),
            "truthful": mean_ci([w.welfare[truthful] for w in items]),
            "best": mean_ci([w.welfare[b] for w, b in rows]),
        },
        best=best,
        vs_truthful=mean_ci(to_truthful),
        vs_truthful_pct=mean_ci(
            [100 * _relative(w.welfare[learned], w.welfare[truthful]) for w in items]
        ),
        vs_best=mean_ci(to_best),
        vs_best_pct=mean_ci([100 * _relative(w.welfare[learned], w.welfare[b]) for w, b in rows]),
        at_least_truthful=sum(
            d >= -TIE * max(abs(w.welfare[truthful]), FLOOR)
            for d, w in zip(to_truthful, items, strict=True)
        ),
        ties=ties,
        above_best=sum(
            d > TIE * max(abs(w.welfare[b]), FLOOR) for d, (w, b) in zip(to_best, rows, strict=True)
        ),
        finished={
            "learned": mean_ci([w.finished[learned] for w in items]),
            "truthful": mean_ci([w.finished[truthful] for w in items]),
            "best": mean_ci([w.finished[b] for w, b in rows]),
        },
        best_finishes_all=all(w.finished[b] >= w.jobs for w, b in rows),
        learned_finishes_all=all(w.finished[learned] >= w.jobs for w in items),
    )


def bundled_comparisons(results: Results) -> list[Comparison]:
    items = workloads(results, "bundled")
    return [
        compare(name, [w for w in items if w.scenario == name], results.config, False)
        for name in results.config["bundled"]
        if any(w.scenario == name for w in items)
    ]


def generated_comparisons(results: Results) -> dict[str, Comparison]:
    return {
        group: compare(group, items, results.config, True)
        for group in ("held-out", "training")
        if (items := workloads(results, group))
    }


def gap(results: Results) -> Interval:
    """Training-distribution minus held-out mean relative learned-truthful difference (%)."""
    config = results.config
    learned, truthful = config["learned"], config["truthful"]
    groups = [
        [100 * _relative(w.welfare[learned], w.welfare[truthful]) for w in workloads(results, g)]
        for g in ("training", "held-out")
    ]
    return difference_ci(*groups)
