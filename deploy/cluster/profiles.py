"""How much of Kubernetes an agent's control plane runs: `slim` (the default) or `full`.

Why: every negotiating agent gets its own kube-apiserver, and a stock one costs ~260 MiB RSS and
about 1% of a core while idle -- 32 agents would need 8 GiB before doing anything. An agent's
plane only ever holds the agent's own workload: pods (created, bound, their status
mirrored by its negotiator), in namespaces, reached with certificates or tokens. So the slim
profile serves only the API groups that needs and leaves out the machinery of the rest:

* **API groups**: `api/all=false`, then core `v1`, `coordination.k8s.io` (leases),
  `rbac.authorization.k8s.io`, `apiextensions.k8s.io` and `apiregistration.k8s.io` (the server's
  own aggregation and CRD layers run regardless), `networking.k8s.io` and `discovery.k8s.io`
  (the Service IP allocator and the `kubernetes` Service), `authentication.k8s.io` and
  `authorization.k8s.io` (token and access reviews). Left out: apps, batch, autoscaling,
  policy, storage, scheduling, node, certificates, events.k8s.io, flowcontrol,
  admissionregistration, resource, and every beta/alpha group -- an agent plane runs no
  controllers that would act on them (there is no controller-manager on it);
* **admission**: only `NamespaceLifecycle`; the default plugins act on objects of groups that
  are off (webhooks and admission policies, RuntimeClass, Priority, storage classes, certificates,
  pod security, quotas and limit ranges, ...), and each keeps informers of its own;
* **no watch cache** (`--watch-cache=false`): lists and watches are served from etcd. An agent
  plane has one client (its negotiator) listing one namespace of a few dozen pods; the cache
  would hold a copy of every resource type for nobody;
* **lower in-flight limits** (40 read-only, 20 mutating) and **API priority and fairness off**:
  one client does not need 400 concurrent requests or fairness queues (whose configuration
  objects and controllers also cost memory);
* **no apiserver identity leases** (`APIServerIdentity` and the proxy that depends on it off): a
  plane has exactly one apiserver, which otherwise rewrites its identity Lease every 10 s;
* **Go runtime**: `GOGC=30` (collect at +30% heap instead of +100%) with a soft `GOMEMLIMIT` of
  160 MiB, above the working set: a limit *below* it makes the collector run continuously (an
  experiment at lower limits burned 74-110% of a core per apiserver), so the benchmark measures
  idle CPU next to memory. Measured on 2 agent planes (RSS / PSS / idle CPU): GOGC 100 175 MiB /
  115 MiB / 0.4%, 50: 160 / 104 / 0.3%, 30: 147 / 90 / 0.3%, 20: 142 / 85 / 0.5-0.7% -- below
  30 the collector's CPU grows faster than the memory it saves. `GOMAXPROCS=1`: one client needs
  one processor, and many planes on few cores spin less (8 planes: idle CPU 0.36-0.40% -> 0.29-0.32%
  mean; with the identity leases off as well, 0.25%).

`full` is the stock apiserver (what the host plane always runs: it serves the market's CRDs,
admission policies, quotas, the scheduler and KWOK). `gpuparley cluster up --profile full`
selects it for agent planes too. `benchmarks/control_plane_cost.py` reports both.
"""

from __future__ import annotations

from typing import Literal

Profile = Literal["slim", "full"]
PROFILES: tuple[Profile, ...] = ("slim", "full")
DEFAULT_PROFILE: Profile = "slim"

SLIM_API_GROUPS = (
    "v1",
    "coordination.k8s.io/v1",
    "rbac.authorization.k8s.io/v1",
    "apiextensions.k8s.io/v1",
    "apiregistration.k8s.io/v1",
    "networking.k8s.io/v1",
    "discovery.k8s.io/v1",
    "authentication.k8s.io/v1",
    "authorization.k8s.io/v1",
)
# kube-apiserver v1.36's default-on admission plugins, less NamespaceLifecycle (`-h` lists them).
SLIM_DISABLED_ADMISSION = (
    "LimitRanger",
    "ServiceAccount",
    "TaintNodesByCondition",
    "PodSecurity",
    "Priority",
    "DefaultTolerationSeconds",
    "DefaultStorageClass",
    "StorageObjectInUseProtection",
    "PodGroupProtection",
    "PersistentVolumeClaimResize",
    "RuntimeClass",
    "CertificateApproval",
    "CertificateSigning",
    "ClusterTrustBundleAttest",
    "CertificateSubjectRestriction",
    "DefaultIngressClass",
    "PodTopologyLabels",
    "PodGroupWorkloadExists",
    "NodeDeclaredFeatureValidator",
    "JobValidation",
    "PodResizeValidator",
    "MutatingAdmissionPolicy",
    "MutatingAdmissionWebhook",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionWebhook",
    "ResourceQuota",
)
# Without a controller-manager nothing would create the default ServiceAccount or lift the
# not-ready taint TaintNodesByCondition puts on new nodes: these two are off in every profile.
ALWAYS_DISABLED_ADMISSION = ("ServiceAccount", "TaintNodesByCondition")
SLIM_GO_ENV = {"GOGC": "30", "GOMEMLIMIT": "160MiB", "GOMAXPROCS": "1"}


def apiserver_flags(profile: Profile) -> list[str]:
    """The kube-apiserver flags a profile adds to a plane's common ones."""
    if profile == "full":
        return [f"--disable-admission-plugins={','.join(ALWAYS_DISABLED_ADMISSION)}"]
    if profile != "slim":
        raise ValueError(f"unknown control-plane profile {profile!r} (use one of {PROFILES})")
    return [
        "--runtime-config=api/all=false," + ",".join(f"{g}=true" for g in SLIM_API_GROUPS),
        "--enable-admission-plugins=NamespaceLifecycle",
        f"--disable-admission-plugins={','.join(SLIM_DISABLED_ADMISSION)}",
        "--watch-cache=false",
        "--max-requests-inflight=40",
        "--max-mutating-requests-inflight=20",
        "--enable-priority-and-fairness=false",
        "--feature-gates=APIServerIdentity=false,UnknownVersionInteroperabilityProxy=false",
    ]


def apiserver_env(profile: Profile) -> dict[str, str]:
    """Environment for the apiserver process (Go runtime tuning for the slim profile)."""
    return dict(SLIM_GO_ENV) if profile == "slim" else {}
