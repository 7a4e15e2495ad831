"""What the market and negotiator processes expose to operators: Prometheus metrics, health and
readiness endpoints, and structured (JSON-lines) logs.

One small HTTP server per process serves `/metrics` (Prometheus text format), `/healthz` (the main
loop made progress recently: a wedged loop is restarted by the kubelet's liveness probe) and
`/readyz` (connected to every apiserver it needs and holding leadership, so a standby replica is
not sent traffic).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any `extra=` fields."""

    _STANDARD: ClassVar[frozenset[str]] = frozenset(vars(logging.makeLogRecord({})))

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in self._STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def setup_logging(level: str = "info") -> None:
    """JSON lines on stderr for the whole process."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


class Telemetry:
    """The metrics of one process (its own registry, so several can live in one test process)."""

    def __init__(self, component: str) -> None:
        self.registry = CollectorRegistry()
        self.component = component
        registry = self.registry
        self.messages = Counter(
            "gpuparley_messages_total",
            "Negotiation messages sent or received, by kind and direction",
            ["kind", "direction"],
            registry=registry,
        )
        self.rejections = Counter(
            "gpuparley_messages_rejected_total",
            "Messages rejected (never acted on), by reason",
            ["reason"],
            registry=registry,
        )
        self.agreements = Counter(
            "gpuparley_agreements_total", "Leases won or renewed", registry=registry
        )
        self.leases = Gauge("gpuparley_leases_active", "Active leases", registry=registry)
        self.decision_seconds = Histogram(
            "gpuparley_decision_seconds",
            "Time from reading a market view to answering it",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=registry,
        )
        self.pods_synced = Counter(
            "gpuparley_pods_synced_total",
            "Host pods created, deleted or completed under leases, by action",
            ["action"],
            registry=registry,
        )
        self.epoch = Gauge("gpuparley_epoch", "Market epoch last seen", registry=registry)
        self.apiserver_requests = Gauge(
            "gpuparley_apiserver_requests",
            "Requests this process made, by plane",
            ["plane"],
            registry=registry,
        )
        self.leader = Gauge("gpuparley_leader", "1 while this replica leads", registry=registry)
        # Prices an operator watches: the market's last clearing price and its reference price
        # (mean catalogue price per GPU-hour), and each negotiator's last bid (credits/epoch).
        self.price = Gauge(
            "gpuparley_price",
            "Last price seen, by kind (clearing, reference, bid)",
            ["kind"],
            registry=registry,
        )
        self._beat = time.monotonic()
        self.ready = False
        self.stale_after = 30.0

    def heartbeat(self) -> None:
        """The main loop is alive (called once per loop iteration)."""
        self._beat = time.monotonic()

    @property
    def healthy(self) -> bool:
        return time.monotonic() - self._beat < self.stale_after

    def serve(self, port: int, host: str = "127.0.0.1") -> ThreadingHTTPServer:
        """Start the endpoint server on a daemon thread (port 0: any free port; see
        `server.server_address`)."""
        telemetry = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/metrics":
                    self._send(200, generate_latest(telemetry.registry), CONTENT_TYPE_LATEST)
                elif self.path == "/healthz":
                    ok = telemetry.healthy
                    self._send(200 if ok else 503, b"ok\n" if ok else b"stalled\n")
                elif self.path == "/readyz":
                    ok = telemetry.ready and telemetry.healthy
                    self._send(200 if ok else 503, b"ok\n" if ok else b"not ready\n")
                else:
                    self._send(404, b"not found\n")

            def _send(self, code: int, body: bytes, kind: str = "text/plain") -> None:
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return None  # scrapes are not log events

        server = ThreadingHTTPServer((host, port), Handler)
        threading.Thread(target=server.serve_forever, daemon=True, name="telemetry").start()
        return server
