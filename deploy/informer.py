"""List-then-watch caches of apiserver objects (what client-go's reflector and store do).

An `Informer` lists a set of objects once, then follows one watch from the list's
resourceVersion, so the market and the negotiators read what they need from memory and the
apiserver only sends what changed; a process at rest costs one watch request per
`kube.WATCH_SECONDS` per set, not a poll every few milliseconds.

* **bookmarks**: watches ask for them, so the resourceVersion a watch resumes from stays recent
  even when nothing in the set changes;
* **410 Gone** (the version left the apiserver's window, e.g. after an etcd compaction): list
  again and replace the cache; objects that vanished meanwhile are dropped;
* **a broken connection** (`Unavailable`: the apiserver restarted, a network blip): wait a
  moment (backoff up to 2 s) and watch again from the last version seen; the cache stays as it
  was, so readers keep working on the last known state until the watch is back.

Every change calls `notify` (the owner's wake-up: an `Event` its loop waits on), so the loop
runs when something happened instead of on a timer.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from gpuparley.deploy.kube import ApiError, Gone, Kube, Unavailable

log = logging.getLogger("gpuparley.informer")
Key = tuple[str, str]  # (namespace, name)


def key_of(obj: dict[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


class Informer:
    """A cache of the `resource` objects in `namespace` (None: all) matching the selectors."""

    def __init__(
        self,
        kube: Kube,
        resource: str,
        namespace: str | None = None,
        *,
        selector: str | None = None,
        field_selector: str | None = None,
        notify: Callable[[], None] = lambda: None,
        on_object: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.kube = kube
        self.resource = resource
        self.namespace = namespace
        self.selector = selector
        self.field_selector = field_selector
        self.notify = notify
        self.on_object = on_object  # sees every version listed or watched (a history, if kept)
        self.items: dict[Key, dict[str, Any]] = {}
        self.version = ""  # the resourceVersion the next watch starts from ("" = list first)
        self.synced = threading.Event()
        self.lists = 0  # full lists: the first, and one per 410
        self.reconnects = 0  # watches reopened after a broken connection
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ readers
    def objects(self) -> list[dict[str, Any]]:
        """Every cached object, by (namespace, name)."""
        with self._lock:
            return [self.items[k] for k in sorted(self.items)]

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            return self.items.get((namespace, name))

    def wait_synced(self, timeout: float) -> bool:
        return self.synced.wait(timeout)

    # ------------------------------------------------------------------ writers' hint
    def observe(self, obj: dict[str, Any] | None) -> None:
        """Take an object this process just wrote (the apiserver's answer) into the cache now,
        unless the watch already brought something newer; the watch event follows anyway."""
        if not obj or not obj.get("metadata"):
            return
        with self._lock:
            old = self.items.get(key_of(obj))
            if old is None or _uid(old) != _uid(obj) or _newer(obj, old):
                self.items[key_of(obj)] = obj

    # ------------------------------------------------------------------ the loop
    def start(self) -> Informer:
        name = f"informer-{self.resource}-{self.namespace or 'all'}"
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        backoff = 0.05
        while not self._stop.is_set():
            try:
                if not self.version:
                    self._list()
                self._watch()
                backoff = 0.05
            except Gone:
                log.info("watch expired; listing again", extra={"resource": self.resource})
                self.version = ""
            except ApiError as exc:
                if not isinstance(exc, Unavailable):
                    log.warning(
                        "watch refused", extra={"resource": self.resource, "error": str(exc)}
                    )
                self.reconnects += 1
                self._stop.wait(backoff)
                backoff = min(2.0, backoff * 2)

    def _list(self) -> None:
        params = {"field_selector": self.field_selector} if self.field_selector else {}
        items, version = self.kube.list_with_version(
            self.resource, self.namespace, self.selector, **params
        )
        with self._lock:
            self.items = {key_of(obj): obj for obj in items}
            self.version = version
        for obj in items if self.on_object else ():
            self.on_object(obj)
        self.lists += 1
        self.synced.set()
        self.notify()

    def _watch(self) -> None:
        for event in self.kube.watch(
            self.resource,
            self.namespace,
            self.version,
            selector=self.selector,
            field_selector=self.field_selector,
        ):
            if self._stop.is_set():
                return
            kind, obj = event.get("type"), event.get("object") or {}
            version = (obj.get("metadata") or {}).get("resourceVersion")
            with self._lock:
                cached = self.items.get(key_of(obj))
                if kind in ("ADDED", "MODIFIED"):
                    if cached is None or not _same_and_newer(cached, obj):
                        self.items[key_of(obj)] = obj
                elif kind == "DELETED" and (cached is None or _uid(cached) == _uid(obj)):
                    # (a DELETED of an object whose name was reused since -- a pod deleted and
                    # created again, taken into the cache by `observe` -- leaves the new one)
                    self.items.pop(key_of(obj), None)
                if version:
                    self.version = str(version)
            if kind in ("ADDED", "MODIFIED") and self.on_object is not None:
                self.on_object(obj)
            if kind != "BOOKMARK":
                self.notify()


def _uid(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("uid") or "")


def _same_and_newer(cached: dict[str, Any], event: dict[str, Any]) -> bool:
    """Whether the cache already holds a later version of the event's object (one `observe`
    took from a write's answer before the watch delivered the older event)."""
    return _uid(cached) == _uid(event) and _newer(cached, event)


def _newer(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether `a` is a later version of the same object than `b` (resourceVersions of one
    apiserver are etcd revisions: integers, though clients should treat them as opaque)."""
    try:
        return int(a["metadata"]["resourceVersion"]) > int(b["metadata"]["resourceVersion"])
    except (KeyError, TypeError, ValueError):
        return True


class Wakeup:
    """What a loop waits on: set by any of its informers, or by a deadline."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def __call__(self) -> None:
        self._event.set()

    def wait(self, timeout: float) -> bool:
        """Block until something changed (True) or `timeout` (False); clears the flag."""
        woke = self._event.wait(max(0.0, timeout))
        self._event.clear()
        return woke

    def wait_quiet(self, timeout: float, gap: float, cap: float) -> bool:
        """Like `wait`, then -- woken -- on until nothing changed for `gap` seconds (at most
        `cap` more): one look at a burst of changes instead of one per change."""
        if not self.wait(timeout):
            return False
        settle_by = time.monotonic() + cap
        while time.monotonic() < settle_by and self.wait(min(gap, settle_by - time.monotonic())):
            pass
        return True


def wait_until(
    wakeup: Wakeup, predicate: Callable[[], bool], timeout: float, started: float | None = None
) -> bool:
    """Re-check `predicate` at each wake-up until it holds (True) or `timeout` passes."""
    deadline = (started if started is not None else time.monotonic()) + timeout
    while not predicate():
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        wakeup.wait(min(left, 1.0))
    return True
