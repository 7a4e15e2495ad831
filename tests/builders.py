"""Small hand-built clusters and jobs shared by the tests."""

from gpuparley.envs import mig
from gpuparley.envs.topology import ClusterSpec, NodeSpec, SharingMode


def mixed_cluster() -> ClusterSpec:
    """Two exclusive 4-GPU nodes, a MIG node with mixed layouts, a time-sliced node."""
    return ClusterSpec(
        (
            NodeSpec("ex-0", 32_000, 256_000, "A100-80GB", 4),
            NodeSpec("ex-1", 32_000, 256_000, "H100-80GB", 4),
            NodeSpec(
                "mig-0",
                32_000,
                256_000,
                "A100-80GB",
                2,
                SharingMode.MIG,
                mig_layout=tuple(mig.fill_layout("A100-80GB", ["3g.40gb", "2g.20gb", "1g.10gb"])),
            ),
            NodeSpec("ts-0", 16_000, 128_000, "T4", 2, SharingMode.TIMESLICE, replicas=4),
        )
    )
