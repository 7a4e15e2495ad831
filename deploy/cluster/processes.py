"""Process supervision for the local planes: start a component, tell whether it still runs, stop it.

Why its own module: the components (etcd, kube-apiserver, kube-scheduler, KWOK) are plain
processes that must outlive ``gpuparley cluster up`` and still be stopped exactly by a later
``down`` -- possibly after a crash halfway through ``up``. So each one runs in its own process
group and is recorded (PID, start time, log) the moment it starts; ``down`` kills by
process group, after checking the PID was not reused. Nothing here knows what a control plane is.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import psutil


class ClusterError(RuntimeError):
    """A component failed to start or become ready (the message includes its log tail)."""


@dataclass
class Proc:
    """One supervised process."""

    name: str
    pid: int
    start_time: float  # the process's creation time: tells a live process from a reused PID
    log: str
    cmd: list[str]
    plane: str = ""
    health_url: str = ""  # HTTPS health endpoint with a self-signed certificate, if any


class ProcessRecord(Protocol):
    """Where a supervisor records what it started (the planes' ``state.json``)."""

    state_dir: str
    processes: list[Proc]

    def save(self) -> None: ...


def free_port() -> int:
    """A TCP port free right now on 127.0.0.1 (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_start_time(pid: int) -> float | None:
    """When ``pid`` started (seconds since the epoch), or None if it is gone (or a zombie)."""
    try:
        process = psutil.Process(pid)
        if process.status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
            return None
        return process.create_time()
    except psutil.Error:
        return None


def is_alive(proc: Proc) -> bool:
    """Whether the recorded process is still the same running process."""
    return proc_start_time(proc.pid) == proc.start_time


def rss_bytes(pid: int) -> int:
    """Resident memory of a process, 0 if gone."""
    try:
        return int(psutil.Process(pid).memory_info().rss)
    except psutil.Error:
        return 0


def pss_bytes(pid: int) -> int:
    """Proportional set size (shared pages split between the processes mapping them): what a
    process really adds when many copies of the same binary run. 0 if gone or unreadable."""
    try:
        return int(getattr(psutil.Process(pid).memory_full_info(), "pss", 0))
    except psutil.Error:
        return 0


def cpu_seconds(pid: int) -> float:
    """User+system CPU time a process has used so far (0 if gone)."""
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0
    return float(times.user + times.system)


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def log_tail(path: str | os.PathLike[str], lines: int = 40) -> str:
    """Last lines of a component log (for error messages and failed-test reports)."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


class Supervisor:
    """Starts processes in their own process group and records them (saved at once)."""

    def __init__(self, record: ProcessRecord, die_with_parent: bool = False) -> None:
        self.record = record
        self.die_with_parent = die_with_parent
        self.log_dir = Path(record.state_dir) / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)

    def start(
        self,
        name: str,
        cmd: Sequence[str],
        plane: str = "",
        health_url: str = "",
        env: dict[str, str] | None = None,
    ) -> Proc:
        log = self.log_dir / f"{name}.log"
        with open(log, "ab") as out:
            popen = subprocess.Popen(
                list(cmd),
                env={**os.environ, **env} if env else None,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: `down` kills the whole group
                preexec_fn=_die_with_parent if self.die_with_parent else None,
                cwd=self.record.state_dir,
            )
        start_time = None
        for _ in range(100):
            start_time = proc_start_time(popen.pid)
            if start_time is not None:
                break
            time.sleep(0.01)
        if start_time is None:
            raise ClusterError(f"{name} exited at once:\n{log_tail(log)}")
        proc = Proc(name, popen.pid, start_time, str(log), list(cmd), plane, health_url)
        self.record.processes.append(proc)
        self.record.save()
        return proc


def stop_processes(procs: Sequence[Proc], timeout: float = 10.0) -> list[str]:
    """SIGTERM each live process group, wait, SIGKILL stragglers; return what is still alive."""
    live = [p for p in procs if is_alive(p)]
    for p in live:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(is_alive(p) for p in live):
        time.sleep(0.1)
    for p in live:
        if is_alive(p):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(is_alive(p) for p in live):
        time.sleep(0.05)
    # Reap our own children so they do not linger as zombies in this process.
    for p in live:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(p.pid, os.WNOHANG)
    # Anything else left in those process groups (there should be nothing).
    for p in live:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGKILL)
    return [p.name for p in live if is_alive(p)]


def wait_ready(
    what: str, check: Callable[[], tuple[bool, str]], proc: Proc | None, timeout: float
) -> None:
    """Poll ``check`` until it says ready; ClusterError (with the log tail) if ``proc`` exits
    first or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        ok, last = check()
        if ok:
            return
        if proc is not None and not is_alive(proc):
            raise ClusterError(f"{what}: process exited.\n--- {proc.log} ---\n{log_tail(proc.log)}")
        time.sleep(0.2)
    tail = f"\n--- {proc.log} ---\n{log_tail(proc.log)}" if proc else ""
    raise ClusterError(f"{what}: not ready after {timeout:.0f}s (last: {last}){tail}")
