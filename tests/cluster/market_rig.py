"""The whole in-cluster market on the local planes: bundles applied, workloads submitted, the
market controller and one negotiator per agent running as separate processes.

Every process is a real `gpuparley` command with its own credentials: the market as user
`gpuparley:market`, each negotiator as user `agent-<a>` on the host plus its own plane's admin;
nothing runs in the caller's process.

Why it lives here: it is a test rig, not part of the installed package (nothing under `gpuparley`
imports it). The end-to-end tests use it (`market_runs.py`), and so does
`benchmarks/negotiation_e2e.py`, which runs from a source checkout and puts this folder on
`sys.path` to import it as `market_rig`. So this module imports only `gpuparley` and the standard
library -- no relative imports, no pytest.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpuparley.deploy.apply import apply_objects
from gpuparley.deploy.cluster.planes import LocalPlanes
from gpuparley.deploy.kube import Kube, connect
from gpuparley.deploy.quotas import QUOTA_NAME
from gpuparley.deploy.rbac import MARKET_USER
from gpuparley.deploy.render import AgentBundle, render_objects
from gpuparley.deploy.workload import submit_jobs
from gpuparley.envs.scenario import load_scenario


def wait_quotas_counted(admin: Kube, namespaces: list[str], timeout: float = 60.0) -> None:
    """Until kube-controller-manager has counted the quota (`QUOTA_NAME`) of each namespace,
    the apiserver refuses every create there (quotas fail closed): wait for it."""
    deadline = time.monotonic() + timeout
    for namespace in namespaces:
        while True:
            quota = admin.get("resourcequotas", namespace, QUOTA_NAME) or {}
            if set((quota.get("status") or {}).get("hard") or {}) == set(
                (quota.get("spec") or {}).get("hard") or {"?": 0}
            ):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"quota in {namespace} not counted: {quota}")
            time.sleep(0.1)


def gpuparley_command(*args: str) -> list[str]:
    """The CLI, run by this interpreter (the same environment as the caller)."""
    return [sys.executable, "-c", "from gpuparley.cli import main; main()", *args]


@dataclass
class MarketRig:
    """Processes of one in-cluster market run on a running `LocalPlanes`."""

    state: LocalPlanes
    scenario: str
    seed: int
    policy: str
    log_dir: Path
    substep_timeout: float = 15.0
    market_args: tuple[str, ...] = ()  # given to every market process started
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    # Agents whose negotiator is the attacker's (`hostile_negotiator.py`), and its record.
    hostile: frozenset[str] = frozenset()

    @property
    def agents(self) -> list[str]:
        return [a.name for a in load_scenario(self.scenario).agents]

    @property
    def trace_path(self) -> Path:
        return self.log_dir / "lease-trace.jsonl"

    @property
    def attack_log(self) -> Path:
        return self.log_dir / "attacks.jsonl"

    def prepare(self) -> None:
        """Apply every agent's bundle, then submit every agent's jobs."""
        self.prepare_bundles()
        self.submit_workloads()

    def prepare_bundles(self) -> None:
        """Apply every agent's bundle (CRDs, RBAC, admission policies, Negotiator) to the host,
        as admin, with the scenario's budget."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        loaded = load_scenario(self.scenario)
        with connect(self.state.host.kubeconfig) as api:
            for agent in loaded.agents:
                bundle = AgentBundle(
                    agent=agent.name,
                    policy=self.policy,
                    mechanism=loaded.market.mechanism,
                    budget_per_epoch=float(agent.budget_per_epoch or 0.0),
                )
                apply_objects(api, render_objects(bundle))
        self.wait_quotas_counted()

    def wait_quotas_counted(self, timeout: float = 60.0) -> None:
        """Wait until every agent's quotas (its home's and its inbox's) are counted."""
        admin = Kube(self.state.host.kubeconfig)
        homes = [f"agent-{agent}{suffix}" for agent in self.agents for suffix in ("", "-inbox")]
        try:
            wait_quotas_counted(admin, homes, timeout)
        finally:
            admin.close()

    def submit_workloads(self) -> None:
        """Each agent's jobs as pods in its own plane, for its negotiator to bind."""
        scenario = load_scenario(self.scenario)
        jobs = scenario.build_jobs(self.seed)
        for agent in scenario.agents:
            plane = Kube(self.state.agent(agent.name).kubeconfig)
            try:
                submit_jobs(plane, "default", jobs, agent.name)
            finally:
                plane.close()

    def _start(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = (self.log_dir / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            gpuparley_command(*args), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.procs[name] = proc
        return proc

    def start_negotiator(
        self, agent: str, *extra: str, name: str | None = None
    ) -> subprocess.Popen[bytes]:
        host = self.state.host
        if agent in self.hostile:
            return self._start_hostile(agent, name)
        return self._start(
            f"negotiator-{name or agent}",
            [
                "negotiator", "run",
                "--agent", agent,
                "--policy", self.policy,
                "--host-kubeconfig", host.agent_kubeconfigs[f"agent-{agent}"],
                "--agent-kubeconfig", self.state.agent(agent).kubeconfig,
                "--metrics-port", "0",
                *extra,
            ],
        )  # fmt: skip

    def _start_hostile(self, agent: str, name: str | None) -> subprocess.Popen[bytes]:
        script = Path(__file__).with_name("hostile_negotiator.py")
        args = [
            "--agent", agent,
            "--policy", self.policy,
            "--host-kubeconfig", self.state.host.agent_kubeconfigs[f"agent-{agent}"],
            "--agent-kubeconfig", self.state.agent(agent).kubeconfig,
            "--attack-log", str(self.attack_log),
        ]  # fmt: skip
        log = (self.log_dir / f"negotiator-{name or agent}.log").open("ab")
        proc = subprocess.Popen(
            [sys.executable, str(script), *args],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        self.procs[f"negotiator-{name or agent}"] = proc
        return proc

    def attacks(self) -> list[dict[str, Any]]:
        """What the hostile negotiators tried, and the apiserver's answers."""
        if not self.attack_log.exists():
            return []
        return [json.loads(line) for line in self.attack_log.read_text().splitlines() if line]

    def start_market(self, *extra: str, name: str = "market") -> subprocess.Popen[bytes]:
        return self._start(
            name,
            [
                "market", "run",
                "--scenario", self.scenario,
                "--seed", str(self.seed),
                "--kubeconfig", self.state.host.agent_kubeconfigs[MARKET_USER],
                "--substep-timeout", str(self.substep_timeout),
                "--trace", str(self.trace_path),
                "--metrics-port", "0",
                *self.market_args,
                *extra,
            ],
        )  # fmt: skip

    def start_negotiators(self, replicas: dict[str, int] | None = None) -> dict[str, list[str]]:
        """One negotiator per agent; agents in `replicas` get that many, electing a leader.
        Returns each agent's process names."""
        started: dict[str, list[str]] = {}
        for agent in self.agents:
            count = (replicas or {}).get(agent, 1)
            if count == 1:
                self.start_negotiator(agent)
                started[agent] = [f"negotiator-{agent}"]
                continue
            for i in range(count):
                name = f"{agent}-{i}"
                self.start_negotiator(agent, "--leader-elect", "--identity", name, name=name)
            started[agent] = [f"negotiator-{agent}-{i}" for i in range(count)]
        return started

    def start_all(
        self,
        replicas: dict[str, int] | None = None,
        timeout: float = 120.0,
        market_replicas: int = 1,
    ) -> list[str]:
        """Negotiators first, then the market once every agent has a ready negotiator; the
        market processes' names (several replicas elect a leader: `market-0`, `market-1`, ...).

        A negotiator's cold start (imports, policy load) can outlast a sub-step timeout; a
        market started before it would count every agent's first sub-step as a timeout. One
        ready replica per agent is enough: standbys are not ready by design (no leadership).
        """
        for names in self.start_negotiators(replicas).values():
            self.wait_any_ready(names, timeout)
        if market_replicas == 1:
            self.start_market()
            return ["market"]
        names = [f"market-{i}" for i in range(market_replicas)]
        for name in names:
            self.start_market("--leader-elect", "--identity", name, name=name)
        return names

    def kill(self, name: str) -> None:
        """SIGKILL a process (a crash: no clean shutdown)."""
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def wait_market(self, timeout: float, names: list[str] | None = None) -> dict[str, Any]:
        """Wait for a market process (of `names`, default `market`) to finish; its final
        status (raises if one fails, or on timeout). A killed replica is not waited for."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name in names or ["market"]:
                proc = self.procs.get(name)
                if proc is None or proc.poll() is None:
                    continue
                if proc.returncode != 0:
                    raise RuntimeError(f"{name} exited {proc.returncode}:\n{self.log_tail(name)}")
                lines = (self.log_dir / f"{name}.log").read_text().splitlines()
                return json.loads(
                    next(line for line in reversed(lines) if line.startswith('{"epoch"'))
                )
            time.sleep(0.2)
        tails = "\n".join(f"{n}:\n{self.log_tail(n)}" for n in names or ["market"])
        raise TimeoutError(f"the market did not finish in {timeout:.0f}s; logs:\n{tails}")

    def wait_ready(self, name: str, timeout: float = 60.0) -> float:
        """Block until process `name` answers 200 on /readyz; the perf_counter time it did."""
        return self.wait_any_ready([name], timeout)

    def wait_any_ready(self, names: list[str], timeout: float = 60.0) -> float:
        """Block until one of the processes `names` answers 200 on /readyz; the perf_counter
        time it did (a process that exits is an error)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name in names:
                if self._ready(name):
                    return time.perf_counter()
                if self.procs[name].poll() is not None:
                    raise RuntimeError(f"{name} exited:\n{self.log_tail(name)}")
            time.sleep(0.02)
        tails = "\n".join(f"{name}:\n{self.log_tail(name)}" for name in names)
        raise TimeoutError(f"none of {', '.join(names)} ready after {timeout:.0f}s:\n{tails}")

    def _ready(self, name: str) -> bool:
        """Whether process `name` has announced its metrics port and answers 200 on /readyz."""
        log = self.log_dir / f"{name}.log"
        first = log.read_text().split("\n", 1)[0] if log.exists() else ""
        if not first.startswith('{"metrics_port"'):
            return False
        url = f"http://127.0.0.1:{json.loads(first)['metrics_port']}/readyz"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.log_dir / f"{name}.log"
        return "\n".join(path.read_text().splitlines()[-lines:]) if path.exists() else ""

    def trace(self) -> list[dict[str, Any]]:
        if not self.trace_path.exists():
            return []
        return [json.loads(line) for line in self.trace_path.read_text().splitlines() if line]

    def stop(self) -> None:
        """SIGTERM everything still running (then SIGKILL what ignores it)."""
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        self.procs.clear()
