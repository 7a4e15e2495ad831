"""The market protocol's Promela model (deploy/protocol/), checked with spin.

The model holds every property -- the safety assertions and no invalid end state, and both
liveness properties -- under every fault scenario; every deliberately broken variant is
rejected with the property it names, and its counterexample reads as protocol steps. spin
comes from `make spin` (`gpuparley protocol spin`); without it (or a C compiler) these tests
fail rather than skip, as the cluster tests do without their binaries.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from gpuparley.deploy.protocol import check
from gpuparley.deploy.protocol.check import SAFETY, CheckError, Verification, verify
from gpuparley.deploy.protocol.scenarios import (
    PROPERTIES,
    SCENARIOS,
    VARIANTS,
    Scenario,
    Variant,
    scenario,
)
from gpuparley.deploy.protocol.spin import (
    INSTALL_COMMAND,
    SpinError,
    find_spin,
    install_spin,
    spin_version,
)

pytestmark = [pytest.mark.spin, pytest.mark.slow]


@pytest.fixture(scope="module")
def spin() -> Path:
    try:
        return find_spin()
    except SpinError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.mark.parametrize("prop", PROPERTIES)
@pytest.mark.parametrize("case", SCENARIOS, ids=lambda case: case.name)
def test_model_holds(case: Scenario, prop: str, spin: Path, tmp_path: Path) -> None:
    outcome = verify(Verification(case.defines, prop), tmp_path, spin)
    assert outcome.holds, f"{case.name}: {outcome.violated}\n" + "\n".join(outcome.trail)
    assert outcome.violations == frozenset()
    # An exhaustive search of a real state space (a liveness search stops following a run once
    # its property holds, so it stores fewer states than the safety search)
    assert outcome.states > (10_000 if prop == SAFETY else 1_000)


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda variant: variant.name)
def test_broken_variant_is_rejected(variant: Variant, spin: Path, tmp_path: Path) -> None:
    case = scenario(variant.scenario)
    outcome = verify(Verification(case.defines, variant.prop, variant.flag), tmp_path, spin)
    assert outcome.violated == variant.violates, outcome.trail
    # The counterexample is the protocol's own steps, from the first message on
    assert any(step.startswith("negotiator 0: bid") for step in outcome.trail)
    assert all(": " in step or "CYCLE" in step for step in outcome.trail)


def test_each_variant_fails_only_with_its_flag(spin: Path, tmp_path: Path) -> None:
    """The scenario that exposes a variant is one the correct model passes (so the flag, not the
    scenario, makes the difference)."""
    assert {variant.scenario for variant in VARIANTS} <= {case.name for case in SCENARIOS}
    assert len({variant.flag for variant in VARIANTS}) == len(VARIANTS)
    model = (check.PROMELA / "market" / "controller.pml").read_text()
    model += (check.PROMELA / "market" / "negotiator.pml").read_text()
    for variant in VARIANTS:
        assert variant.flag in model, f"{variant.flag} switches nothing in the model"


def test_a_truncated_search_is_an_error(
    spin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A search whose stack is too small for the model is reported, never taken as a pass."""
    monkeypatch.setattr(check, "MAX_DEPTH", 200)
    with pytest.raises(CheckError, match="too small"):
        verify(Verification(scenario("cut-off").defines), tmp_path, spin)


def test_a_search_that_outgrows_its_memory_bound_is_an_error(
    spin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A search that would need more memory than the verifier may use stops and is reported
    (the deep scenario needs 15 GB: a smaller machine must say so), never taken as a pass."""
    assert 100 < check.memory_limit_mb() < 2**30  # MB: a share of the machine's
    monkeypatch.setattr(check, "memory_limit_mb", lambda: 48)  # the hash table alone is 32 MB
    with pytest.raises(CheckError, match="MEMLIM"):
        verify(Verification(scenario("cut-off").defines), tmp_path, spin)


REPORT = """pan:1: assertion violated gpu_leased_once (at depth 412)
pan:2: invalid end state (at depth 3001)
pan:3: assertion violated (w<4) (at depth 77)
State-vector 216 byte, depth reached 6671, errors: 3
1.4567891e+08 states, stored
2.2123049e+08 states, matched
3.669096e+08 transitions (= stored+matched)
 7967.490\ttotal actual memory usage
pan: elapsed time 632 seconds
"""


def test_the_verifiers_report_is_read_whole() -> None:
    """Every error the verifier lists is named (the first one is the counterexample's), and
    counts in pan's exponent notation are read as numbers."""
    first, line, found = check.read_report(REPORT, SAFETY)
    assert (first, line) == ("gpu_leased_once", "assertion violated gpu_leased_once")
    assert found == {"gpu_leased_once", "deadlock", "assert (w<4)"}
    assert check.read_figures(REPORT) == (145_678_910, 366_909_600, 6671, 632.0, 7967.49)
    assert check.read_report("pan:1: acceptance cycle (at depth 9)", "leased_or_refused")[0] == (
        "leased_or_refused"
    )


def test_missing_spin_names_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no spin on PATH, and none in this cache
    with pytest.raises(SpinError, match=INSTALL_COMMAND):
        find_spin(cache=tmp_path)


@pytest.mark.network
def test_install_fetches_debians_spin_once(tmp_path: Path) -> None:
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        pytest.skip("no apt-get/dpkg-deb here: spin comes from PATH")
    path = install_spin(cache=tmp_path)
    assert path == tmp_path / "bin" / "spin"
    assert spin_version(path).startswith("Spin Version 6")
    stamp = json.loads(path.with_name("spin.stamp").read_text())
    assert stamp["package"].startswith("spin_") and len(stamp["sha256"]) == 64
    before = path.stat().st_mtime_ns
    assert install_spin(cache=tmp_path) == path  # cached: not fetched again
    assert path.stat().st_mtime_ns == before
