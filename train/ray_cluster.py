"""Connect to a Ray cluster, or start a private local one, for as long as a `with` block lasts.

Everything gpuparley runs on Ray (evaluation sweeps, RLlib training, Tune sweeps) goes through
`ray_session`: with an `address` (`127.0.0.1:6379`, `ray://...`, or `auto` for the cluster this
machine belongs to) it attaches and only disconnects at the end; without one it starts a Ray
instance on this machine alone (loopback address, no dashboard, a small object store) and stops
it at the end, even when the block raises. Ray's usage statistics are switched off unless
`RAY_USAGE_STATS_ENABLED` says otherwise: a research run should not phone home.

Ray is an optional extra (`pip install 'gpuparley[ray]'`); this module imports it only when a
session starts, so the plain install never needs it.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager

RAY_EXTRA_HINT = "pip install 'gpuparley[ray]'"
LOCAL_OBJECT_STORE_BYTES = 512 * 2**20
LOOPBACK = "127.0.0.1"
REACH_SECONDS = 5.0


class RayAddressError(ValueError):
    """Nothing answers at the Ray address given; the message names it and what to do."""


def ray_installed() -> bool:
    return importlib.util.find_spec("ray") is not None


def check_reachable(address: str, seconds: float = REACH_SECONDS) -> None:
    """A `host:port` address must take a TCP connection within `seconds`. Ray itself waits a
    minute or more at an address nothing answers at (a typo, a head not started) and then fails
    in a page of logs; `auto` and `ray://` addresses are left to Ray."""
    host, colon, port = address.rpartition(":")
    if not colon or not host or not port.isdigit() or "://" in address:
        return
    try:
        with socket.create_connection((host, int(port)), timeout=seconds):
            pass
    except OSError as exc:
        raise RayAddressError(
            f"--address {address}: nothing answers there ({exc.strerror or exc}); start the"
            f" head with `ray start --head --port {port}` or give its address"
        ) from None


@contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None) -> Iterator[None]:
    """Ray connected for the block: attached to `address`, or a local instance with `num_cpus`
    CPUs (default: every core) that is stopped afterwards."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    if ray.is_initialized():  # a caller already holds a session: share it
        yield
        return
    common = {"logging_level": logging.ERROR, "log_to_driver": False}
    if address is not None:
        check_reachable(address)
        ray.init(address=address, **common)
    else:
        ray.init(
            num_cpus=num_cpus,
            include_dashboard=False,
            object_store_memory=LOCAL_OBJECT_STORE_BYTES,
            _node_ip_address=LOOPBACK,
            **common,
        )
    try:
        yield
    finally:
        ray.shutdown()
