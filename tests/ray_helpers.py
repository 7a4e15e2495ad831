"""A real two-node Ray cluster on this machine for the Ray tests, loopback only.

`ray start --head` and one worker node (`ray start --address`), each with one CPU, bound to
127.0.0.1 (`--node-ip-address`), every port chosen free, session files in a fresh temporary
folder, usage statistics off, token authentication on with a token of its own
(`ray_environment`: set before `ray` is first imported, as Ray reads it then). Both run with
`--block` in a process group of their own, so teardown stops exactly what was started
(SIGTERM to each `ray start`, which stops its node, then SIGKILL to whatever is left of its
group), never other Ray instances on the machine; it runs even when the tests fail.

Ray also looks up "this machine's address" (the interface that would route to a public
resolver) and uses it beside 127.0.0.1 for some agents and to rewrite `127.0.0.1` addresses.
So the tests run inside a network namespace of their own that has only the loopback interface
(`in_loopback_namespace`): there, that look-up finds 127.0.0.1, and nothing can be sent
anywhere but to this namespace's 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil

LOOPBACK = "127.0.0.1"
WORKER_PORTS = 12  # per node: workers, the driver and actors each take one
START_TIMEOUT = 120.0


def free_ports(count: int) -> list[int]:
    """`count` distinct ports nobody listens on right now (the OS picks them)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((LOOPBACK, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def ray_cli() -> str:
    return str(Path(sys.executable).with_name("ray"))


def node_command(temp_dir: Path, head_port: int, head: bool) -> list[str]:
    """`ray start --block` for the head (GCS on `head_port`) or a worker node joining it."""
    ports = free_ports(7 + WORKER_PORTS)
    command = [ray_cli(), "start", "--block", "--node-ip-address", LOOPBACK, "--num-cpus", "1"]
    command += ["--disable-usage-stats", "--temp-dir", str(temp_dir)]
    command += ["--object-store-memory", str(100 * 2**20)]
    command += [
        "--node-manager-port", str(ports[0]),
        "--object-manager-port", str(ports[1]),
        "--dashboard-agent-listen-port", str(ports[2]),
        "--dashboard-agent-grpc-port", str(ports[3]),
        "--runtime-env-agent-port", str(ports[4]),
        "--metrics-export-port", str(ports[5]),
        "--worker-port-list", ",".join(map(str, ports[7:])),
    ]  # fmt: skip
    if head:
        command += ["--head", "--port", str(head_port), "--include-dashboard", "false"]
        command += ["--ray-client-server-port", str(ports[6])]
    else:
        command += ["--address", f"{LOOPBACK}:{head_port}"]
    return command


def ray_environment(folder: Path) -> dict[str, str]:
    """Variables for every process of the test cluster and its clients: usage statistics off,
    token authentication with a fresh token written into `folder`."""
    token = folder / "auth_token"
    token.write_text(secrets.token_hex(32))
    return {
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token),
    }


def in_loopback_namespace(command: list[str]) -> list[str]:
    """`command` run in a new network namespace whose only interface is loopback (needs root
    or user namespaces; `unshare` from util-linux, `ip` from iproute2)."""
    script = 'ip link set lo up && exec "$@"'
    return ["unshare", "--net", "--", "sh", "-c", script, "sh", *command]


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM to `ray start --block` (it stops its node), SIGKILL to what is left of its group."""
    with contextlib.suppress(ProcessLookupError):
        process.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=45)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _group_members(process.pid):
        time.sleep(0.5)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


def _group_members(group: int) -> list[int]:
    members = []
    for proc in psutil.process_iter(["pid"]):
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if os.getpgid(proc.info["pid"]) == group:
                members.append(proc.info["pid"])
    return members


def _wait_for_nodes(address: str, count: int, processes: list[subprocess.Popen]) -> None:
    import ray

    ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while sum(node["Alive"] for node in ray.nodes()) < count:
            if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
                raise RuntimeError(f"the Ray cluster at {address} did not reach {count} nodes")
            time.sleep(0.5)
    finally:
        ray.shutdown()


@contextlib.contextmanager
def local_ray_cluster() -> Iterator[str]:
    """A running head + one worker node; yields the head's address (`127.0.0.1:PORT`)."""
    # Short path: Ray's socket files live under it and a Unix socket path has ~107 characters.
    if os.environ.get("RAY_AUTH_MODE") != "token" or "RAY_AUTH_TOKEN_PATH" not in os.environ:
        raise RuntimeError("run the Ray checks with the variables of ray_helpers.ray_environment")
    temp_dir = Path(tempfile.mkdtemp(prefix="gpr-", dir="/tmp"))
    env = dict(os.environ)
    head_port = free_ports(1)[0]
    address = f"{LOOPBACK}:{head_port}"
    processes: list[subprocess.Popen] = []
    logs = temp_dir / "start-logs"
    logs.mkdir()
    try:
        for index, head in enumerate((True, False)):
            log = (logs / f"node-{index}.log").open("w")
            processes.append(
                subprocess.Popen(
                    node_command(temp_dir, head_port, head),
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
            if head:
                _wait_for_nodes(address, 1, processes)
        _wait_for_nodes(address, 2, processes)
        yield address
    finally:
        for process in reversed(processes):
            _stop(process)
        shutil.rmtree(temp_dir, ignore_errors=True)
