"""What `gpuparley protocol check` verifies: the model under each fault scenario, for every
property, and the broken variants it must reject.

All faults at once make the state space too large for a routine check (one job under every
fault: 131 million states and 8 GB for the safety search, 19 minutes for all three searches:
the `deep` scenario, run on request), so each scenario pairs the jobs with one family of
faults, at any step of any process; together they use every fault of the model. Each broken
variant is checked under the scenario that exposes it, and must fail with the property named.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpuparley.deploy.protocol.check import DEADLOCK, SAFETY

LEASED_OR_REFUSED = "leased_or_refused"  # every job is eventually leased or refused
# every job eventually finishes or is refused, and nothing is left (leases released, pods gone)
FINISHED_OR_REFUSED = "finished_or_refused"
PROPERTIES = (SAFETY, LEASED_OR_REFUSED, FINISHED_OR_REFUSED)
FAULTS = ("CRASHES", "LAPSES", "PARTITIONS", "CUTS", "DUPLICATES", "LOSSES", "HOSTILE")


@dataclass(frozen=True)
class Scenario:
    """A configuration of the model: how many jobs run (1: job 0 alone; 2: job 0 and the gang,
    job 1, contending for two GPUs; 3: also job 2, bigger than the cluster) and the fault
    budgets."""

    name: str
    about: str
    jobs: int
    faults: tuple[tuple[str, int], ...] = ()

    @property
    def defines(self) -> tuple[tuple[str, int], ...]:
        return (("JOBS", self.jobs), *self.faults)


SCENARIOS = (
    Scenario("contention", "3 jobs, 2 GPUs: the gang waits, one job is refused; no faults", 3),
    Scenario("restarts", "2 jobs; market replicas killed twice, at any step", 2, (("CRASHES", 2),)),
    Scenario(
        "partition",
        "2 jobs; an agent partitioned from the host, then healed",
        2,
        (("PARTITIONS", 1),),
    ),
    Scenario("cut-off", "2 jobs; an agent cut off for good", 2, (("CUTS", 1),)),
    Scenario(
        "messages",
        "2 jobs; a request lost; a bid, renewal or pod creation delivered again",
        2,
        (("DUPLICATES", 1), ("LOSSES", 1)),
    ),
    Scenario(
        "hostile",
        "2 jobs; a pod bigger than its lease passes a stale admission cache; a market restart",
        2,
        (("HOSTILE", 1), ("CRASHES", 1)),
    ),
    Scenario(
        "failover",
        "1 job; the leader's election lease lapses mid-operation, a market restart, a replayed "
        "request",
        1,
        (("LAPSES", 1), ("CRASHES", 1), ("DUPLICATES", 1)),
    ),
)
DEEP = Scenario("deep", "1 job; every fault at once", 1, tuple((f, 1) for f in FAULTS))


@dataclass(frozen=True)
class Variant:
    """A deliberately broken protocol (`flag` switches it on in the model), the scenario that
    exposes it and the property its first counterexample violates (spin's search order is
    deterministic; `gpuparley protocol check --every-violation` lists all it violates)."""

    name: str
    flag: str
    about: str
    scenario: str
    violates: str

    @property
    def prop(self) -> str:
        """Which check finds it: the safety search, or the LTL property's own search."""
        return self.violates if self.violates in PROPERTIES[1:] else SAFETY


VARIANTS = (
    Variant(
        "no-rv-precondition",
        "BUG_NO_RV_PRECONDITION",
        "writes the market's state object without its resourceVersion precondition",
        scenario="failover",
        violates="lease_ends_once",
    ),
    Variant(
        "counter-in-memory",
        "BUG_NO_PERSISTED_COUNTER",
        "keeps the lease-id counter in memory (and patches a GPULease that exists)",
        scenario="restarts",
        violates="finished_after_work",
    ),
    Variant(
        "bind-before-lease",
        "BUG_BIND_BEFORE_LEASE",
        "binds a waiting pod on the lease it read, without a guarded write first",
        scenario="failover",
        violates="pod_inside_lease",
    ),
    Variant(
        "free-before-evict",
        "BUG_FREE_BEFORE_EVICT",
        "gives an ending lease's GPUs back before its pods are gone",
        scenario="cut-off",
        violates="pod_inside_lease",
    ),
    Variant(
        "no-fit-check",
        "BUG_NO_FIT_CHECK",
        "binds a pod bigger than its lease (trusts admission)",
        scenario="hostile",
        violates="pod_inside_lease",
    ),
    Variant(
        "no-dedup",
        "BUG_NO_DEDUP",
        "takes a bid again when it is delivered twice",
        scenario="messages",
        violates="job_leased_once",
    ),
    Variant(
        "negotiator-sends-once",
        "BUG_NEGOTIATOR_SENDS_ONCE",
        "a negotiator that remembers it bid and never bids again (a lost bid is lost)",
        scenario="messages",
        violates=DEADLOCK,
    ),
    Variant(
        "collect-unapplied",
        "BUG_COLLECT_UNAPPLIED",
        "deletes a released GPULease its holder has not listed as applied",
        scenario="contention",
        violates=FINISHED_OR_REFUSED,
    ),
    Variant(
        "unfenced-lease-write",
        "BUG_UNFENCED_LEASE_WRITE",
        "creates a GPULease without checking first that the state is still the one it decided on",
        scenario="failover",
        violates="job_leased_once",
    ),
)


def scenario(name: str) -> Scenario:
    """The scenario called `name` (the deep one included); ValueError naming the choices."""
    for candidate in (*SCENARIOS, DEEP):
        if candidate.name == name:
            return candidate
    choices = ", ".join(s.name for s in (*SCENARIOS, DEEP))
    raise ValueError(f"no scenario {name!r}; choose from {choices}")
