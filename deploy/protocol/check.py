"""One spin verification of the market model.

spin writes the verifier (`pan.c`) for the model configured by -D flags, the C compiler builds
it, and it searches the whole state space: for a violated assertion or an invalid end state
(`safety`), or for an acceptance cycle of one LTL property (a run on which the property never
comes true). Its report is read back; a counterexample is replayed by spin and returned in the
model's own words (the `@ ...` line each protocol step prints).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from gpuparley.deploy.protocol.spin import find_compiler, find_spin

PROMELA = Path(__file__).resolve().parent / "promela"
MODEL = "market.pml"
SAFETY = "safety"  # the named safety assertions and invalid end states
DEADLOCK = "deadlock"  # how an invalid end state is reported
MAX_DEPTH = 500_000  # pan's search stack (the deepest run here reaches ~13,000 steps)
MEMORY_SHARE = 0.75  # of the machine's memory a verifier may use before it stops, not exhaustive


class CheckError(RuntimeError):
    """spin, the compiler or the verifier failed, or the search was not exhaustive."""


@dataclass(frozen=True)
class Verification:
    """One run: the model's configuration (`defines`: JOBS and fault budgets), optionally a
    broken variant's flag (`bug`), and the property: `safety`, or an LTL property's name.
    `optimize` is for long searches: the verifier built with -O2 (slower to compile, faster to
    run) and a hash table of 2^27 slots (1 GB: hundreds of millions of states in a smaller one
    make long chains)."""

    defines: tuple[tuple[str, int], ...]
    prop: str = SAFETY
    bug: str | None = None
    optimize: bool = False

    @property
    def flags(self) -> list[str]:
        flags = [f"-D{name}={value}" for name, value in self.defines]
        return [*flags, f"-D{self.bug}"] if self.bug else flags


@dataclass(frozen=True)
class Outcome:
    """What the verifier reported. `violated` is None when the property holds, else what the
    first counterexample violates: the name of the safety property whose assertion failed,
    `deadlock`, the LTL property's name, or the text of another failed assertion; `trail` is that
    counterexample, step by step. `violations` names everything the search found violated when
    it was asked to go on past the first error (else just `violated`)."""

    violated: str | None
    violations: frozenset[str]
    report: str  # the verifier's error line ('' when none)
    states: int  # distinct states stored
    transitions: int
    depth: int
    seconds: float  # the verifier's own search time
    memory_mb: float
    trail: tuple[str, ...]

    @property
    def holds(self) -> bool:
        return self.violated is None


def _run(command: list[str], cwd: Path, what: str) -> str:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr + done.stdout).strip().splitlines()[-8:]
        raise CheckError(f"{what} failed (exit {done.returncode}): " + " | ".join(tail))
    return done.stdout


def _number(pattern: str, text: str) -> float:
    match = re.search(pattern, text)
    if match is None:
        raise CheckError(f"the verifier's report has no {pattern!r}:\n{text[-2000:]}")
    return float(match.group(1))


def _violation(report: str, prop: str) -> str:
    """The property an error line of the verifier names."""
    if report.startswith("assertion violated "):
        assertion = report.removeprefix("assertion violated ").strip()
        return assertion if re.fullmatch(r"\w+", assertion) else f"assert {assertion}"
    if report == "invalid end state":
        return DEADLOCK
    if report == "acceptance cycle":
        return prop
    raise CheckError(f"unexpected verifier error: {report}")


def read_report(text: str, prop: str) -> tuple[str | None, str, frozenset[str]]:
    """From a verifier's report: the first violated property (None if none), its error line,
    and every property its error lines name."""
    if "max search depth too small" in text:
        raise CheckError(f"the search stack ({MAX_DEPTH}) was too small: not exhaustive")
    reports = re.findall(r"pan:\d+: (.*?) \(at depth \d+\)", text)
    if not reports:
        if "Search not completed" in text:
            raise CheckError("the verifier stopped before searching every state:\n" + text)
        return None, "", frozenset()
    found = frozenset(_violation(report, prop) for report in reports)
    return _violation(reports[0], prop), reports[0], found


def verify(
    check: Verification,
    workdir: Path,
    spin: Path | None = None,
    every_violation: bool = False,
) -> Outcome:
    """Run `check` in `workdir` (the model is copied there; pan.c, pan and any trail stay).
    With `every_violation`, a search that finds a counterexample runs again past every error
    and reports all the properties violated."""
    spin = spin or find_spin()
    compiler = find_compiler()
    shutil.copytree(PROMELA, workdir, dirs_exist_ok=True)
    _run([str(spin), "-a", *check.flags, MODEL], workdir, "spin -a")
    build = [compiler, "-O2" if check.optimize else "-O0", "-w", "-DCOLLAPSE"]
    build.append(f"-DMEMLIM={memory_limit_mb()}")
    if check.prop == SAFETY:
        build.append("-DNOCLAIM")
    _run([*build, "-o", "pan", "pan.c"], workdir, f"{compiler} pan.c")
    search = ["./pan", f"-m{MAX_DEPTH}", "-w27" if check.optimize else "-w22"]
    if check.prop != SAFETY:
        search += ["-a", "-N", check.prop]
    text = _run(search, workdir, "the verifier (pan)")
    violated, report, violations = read_report(text, check.prop)
    trail: tuple[str, ...] = ()
    if violated is not None:
        replay = _run([str(spin), "-t", *check.flags, MODEL], workdir, "spin -t")
        trail = tuple(
            line.strip().removeprefix("@ ")
            for line in replay.splitlines()
            if line.strip().startswith("@ ") or "START OF CYCLE" in line
        )
        if every_violation:
            every = _run([*search, "-c0"], workdir, "the verifier (pan -c0)")
            violations = read_report(every, check.prop)[2]
    return Outcome(violated, violations, report, *read_figures(text), trail=trail)


def memory_limit_mb() -> int:
    """The verifier's memory bound (pan's MEMLIM, in MB): a search that outgrows the machine
    stops with "Search not completed" (a CheckError) instead of being killed by the kernel."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return int(total * MEMORY_SHARE / 2**20)


def read_figures(text: str) -> tuple[int, int, int, float, float]:
    """(states stored, transitions, depth, search seconds, memory MB) from a verifier's report
    (pan writes counts above a million as 1.2345e+08)."""
    return (
        int(_number(r"([\d.e+]+) states, stored", text)),
        int(_number(r"([\d.e+]+) transitions", text)),
        int(_number(r"depth reached (\d+)", text)),
        _number(r"pan: elapsed time ([\d.e+]+) seconds", text),
        _number(r"([\d.]+)\s+total actual memory usage", text),
    )
