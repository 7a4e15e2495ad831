"""`report.md` of the generalisation experiment: the Proof targets, then the tables behind them
(bundled scenarios; held-out and training-distribution generator seeds; the gap), in the
`mean ± 95% CI half-width` cells of every other report. The figures are
`generalisation_stats`'; this module only lays them out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gpuparley.evaluation.generalisation_stats import (
    Comparison,
    Interval,
    bundled_comparisons,
    gap,
    generated_comparisons,
)
from gpuparley.evaluation.results import Results

HELD_OUT_TARGET = 0.70  # share of held-out seeds where learned welfare >= truthful's
ABOVE_BEST_TARGET = 3  # bundled scenarios where learned welfare is above the best incumbent's
MISSING = "–"


def cell(interval: Interval, fmt: str = "{:,.0f}") -> str:
    """`mean ± half-width` (the mean alone from one value), `–` when missing."""
    mean, half = interval
    if mean is None:
        return MISSING
    if half is None:
        return fmt.format(mean)
    return f"{fmt.format(mean)} ± {fmt.replace('+', '').format(half)}"


def percent(interval: Interval) -> str:
    return cell(interval, "{:+.1f}") + " %" if interval[0] is not None else MISSING


def _name(spec: str) -> str:
    return f"`{spec}`"


def targets(bundled: Sequence[Comparison], generated: dict[str, Comparison]) -> list[list[str]]:
    """Rows (target, figure, met) of the Proof."""
    rows = []
    if bundled:
        at_least = [
            c.label for c in bundled if _mean(c.welfare["learned"]) >= _mean(c.welfare["truthful"])
        ]
        above = [c.label for c in bundled if c.above_best_mean]
        must_finish = [c for c in bundled if c.best_finishes_all]
        finish = [c.label for c in must_finish if c.learned_finishes_all]
        rows += [
            [
                "bundled: learned welfare >= truthful's, on each scenario (means)",
                f"{len(at_least)} of {len(bundled)} ({', '.join(at_least) or 'none'})",
                _met(len(at_least) == len(bundled)),
            ],
            [
                f"bundled: learned welfare above the best incumbent's on >= {ABOVE_BEST_TARGET}",
                f"{len(above)} of {len(bundled)} ({', '.join(above) or 'none'})",
                _met(len(above) >= ABOVE_BEST_TARGET),
            ],
            [
                "bundled: every job finished where the best incumbent finishes every job",
                f"{len(finish)} of {len(must_finish)} ({', '.join(c.label for c in must_finish)})",
                _met(len(finish) == len(must_finish)),
            ],
        ]
    held_out = generated.get("held-out")
    if held_out is not None:
        rows.append(
            [
                f"held-out seeds: learned welfare >= truthful's on >= {HELD_OUT_TARGET:.0%} "
                "(paired)",
                f"{held_out.at_least_truthful} of {held_out.n} "
                f"({held_out.share_at_least_truthful:.0%}; {held_out.ties} ties); mean paired "
                f"difference {cell(held_out.vs_truthful, '{:+,.1f}')} "
                f"({percent(held_out.vs_truthful_pct)})",
                _met(held_out.share_at_least_truthful >= HELD_OUT_TARGET),
            ]
        )
    return rows


def _mean(interval: Interval) -> float:
    return float("-inf") if interval[0] is None else interval[0]


def _met(ok: bool) -> str:
    return "met" if ok else "**not met**"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def bundled_rows(comparisons: Sequence[Comparison]) -> list[list[str]]:
    return [
        [
            f"`{c.label}`",
            cell(c.welfare["learned"]),
            cell(c.welfare["truthful"]),
            f"{c.best}: {cell(c.welfare['best'])}",
            f"{cell(c.vs_truthful, '{:+,.0f}')} ({percent(c.vs_truthful_pct)})",
            f"{cell(c.vs_best, '{:+,.0f}')} ({percent(c.vs_best_pct)})",
            " / ".join(cell(c.finished[k], "{:,.1f}") for k in ("learned", "truthful", "best")),
        ]
        for c in comparisons
    ]


def generated_rows(comparisons: dict[str, Comparison]) -> list[list[str]]:
    names = {"held-out": "held-out", "training": "training distribution"}
    return [
        [
            f"{names[group]} ({c.n})",
            f"{c.at_least_truthful} ({c.share_at_least_truthful:.0%}; {c.ties} ties)",
            cell(c.vs_truthful, "{:+,.1f}"),
            percent(c.vs_truthful_pct),
            f"{c.above_best} ({c.above_best / c.n:.0%})",
            percent(c.vs_best_pct),
            " / ".join(cell(c.finished[k], "{:,.1f}") for k in ("learned", "truthful", "best")),
        ]
        for group, c in comparisons.items()
    ]


def _header(config: dict[str, Any]) -> list[str]:
    origin = config.get("trained_on") or {}
    trained = (
        f"training config `{origin.get('config')}` ({origin.get('file')}): generator seeds "
        f"{origin.get('generator_seeds') or 'none'}, bundled scenarios "
        f"{', '.join(origin.get('scenarios') or []) or 'none'}"
        if origin
        else "unknown (the learned source is a bare .onnx file)"
    )
    seen = sorted(set(origin.get("scenarios") or []) & set(config["bundled"]))
    held = config["held_out_seeds"]
    training = config["training_seeds"]
    lines = [
        f"# gpuparley evaluation: generalisation of {_name(config['learned'])}",
        "",
        f"- compared with {_name(config['truthful'])} (the same mechanism) and the incumbents "
        + ", ".join(_name(p) for p in config["incumbents"]),
        f"- what it trained on: {trained}",
        f"- bundled scenarios: {', '.join(config['bundled'])}; seeds "
        f"{', '.join(map(str, config['seeds']))} (each seed's workload shared by every policy)",
        f"- held-out generator seeds: {_span(held)} (n = {len(held)}); training-distribution "
        f"seeds: {_span(training)} (n = {len(training)}); generated scenarios play their own "
        "workload seed",
        f"- horizon: every policy of a workload runs until every job has finished or a common "
        f"cap ({config['horizon']['rule']}); unfinished jobs realise no value",
        "- cells: mean ± 95% CI half-width (Student t over workloads); differences are paired "
        "(learned minus the other, same workload); % relative to the other's welfare",
    ]
    if seen:
        lines.append(f"- **the checkpoint trained on bundled scenarios {', '.join(seen)}**")
    return [*lines, ""]


def _span(seeds: Sequence[int]) -> str:
    if not seeds:
        return "none"
    contiguous = list(seeds) == list(range(seeds[0], seeds[0] + len(seeds)))
    return f"{seeds[0]}-{seeds[-1]}" if contiguous else ", ".join(map(str, seeds))


def render(results: Results) -> str:
    """The whole report.md text."""
    bundled = bundled_comparisons(results)
    generated = generated_comparisons(results)
    lines = _header(results.config)
    lines += ["## Proof targets", ""]
    lines += _table(("target", "figure", ""), targets(bundled, generated))
    if bundled:
        lines += ["", "## Bundled scenarios (none seen in training)", ""]
        lines += _table(
            (
                "scenario",
                "learned welfare",
                "truthful welfare",
                "best incumbent: welfare",
                "learned − truthful",
                "learned − best incumbent",
                "jobs finished (learned / truthful / best incumbent)",
            ),
            bundled_rows(bundled),
        )
    if generated:
        lines += ["", "## Generated scenarios", ""]
        lines += _table(
            (
                "seeds (n)",
                "learned >= truthful",
                "learned − truthful",
                "relative",
                "learned > best incumbent of the seed",
                "learned − best incumbent",
                "jobs finished (learned / truthful / best incumbent)",
            ),
            generated_rows(generated),
        )
        if len(generated) == 2:
            lines += [
                "",
                f"Gap (training distribution minus held-out, mean relative learned − truthful "
                f"difference; Welch interval): {percent(gap(results))} points.",
            ]
    lines += [
        "",
        "The best incumbent is the one with the highest mean welfare on a bundled scenario, "
        "and the best on each generated seed. A tie is welfare equal to a millionth.",
    ]
    return "\n".join(lines).rstrip() + "\n"


def summary_rows(results: Results) -> list[list[str]]:
    """The terminal summary (means; report.md has the intervals): per bundled scenario and
    generated group, learned vs truthful (%), the share of workloads where learned >= truthful,
    vs the best incumbent (%), and jobs finished (learned / best incumbent)."""
    rows = []
    for c in [*bundled_comparisons(results), *generated_comparisons(results).values()]:
        learned, best = c.finished["learned"][0], c.finished["best"][0]
        rows.append(
            [
                c.label,
                str(c.n),
                _signed(c.vs_truthful_pct[0]),
                f"{c.share_at_least_truthful:.0%}",
                _signed(c.vs_best_pct[0]),
                f"{learned or 0:,.0f} / {best or 0:,.0f}",
            ]
        )
    return rows


def _signed(value: float | None) -> str:
    return MISSING if value is None else f"{value:+.1f} %"
