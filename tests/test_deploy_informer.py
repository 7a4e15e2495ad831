"""The list-then-watch cache (`deploy/informer.py`) against a scripted apiserver: bookmarks move
the resume version, 410 Gone lists again, a broken connection resumes from the last version, a
DELETED of a name that was reused does not drop the new object, and a write's answer taken in
early is not rolled back by the older watch event."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

from gpuparley.deploy.informer import Informer, Wakeup
from gpuparley.deploy.kube import Gone, Unavailable


def pod(name: str, version: int, uid: str = "u1") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "ns", "uid": uid, "resourceVersion": str(version)}
    }


class ScriptedKube:
    """Answers lists and watches from a script; records how it was called."""

    def __init__(self, lists: list[tuple[list[dict[str, Any]], str]], watches: list[Any]) -> None:
        self.lists = lists  # each successive list's items and resourceVersion
        self.watches = watches  # per watch call: a list of events, or an exception to raise
        self.watched_from: list[str] = []
        self.done = threading.Event()

    def list_with_version(self, *_args: Any, **_kwargs: Any) -> tuple[list[dict[str, Any]], str]:
        return self.lists.pop(0)

    def watch(self, _resource: str, _ns: Any, version: str, **_kw: Any) -> Iterator[dict[str, Any]]:
        self.watched_from.append(version)
        if not self.watches:
            self.done.set()
            threading.Event().wait(5)  # an idle watch
            return
        step = self.watches.pop(0)
        if isinstance(step, Exception):
            raise step
        yield from step


def test_bookmarks_gone_and_broken_connections() -> None:
    kube = ScriptedKube(
        lists=[([pod("a", 5)], "10"), ([pod("b", 31)], "30")],
        watches=[
            [{"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "25"}}}],
            Unavailable(0, "ProtocolError", "connection reset"),  # the apiserver restarts
            Gone(410, "Expired", "too old resource version"),
            [{"type": "MODIFIED", "object": pod("b", 40)}],
        ],
    )
    wakeup = Wakeup()
    informer = Informer(kube, "pods", notify=wakeup).start()  # type: ignore[arg-type]
    assert kube.done.wait(10)
    informer.stop()
    # listed at 10; a bookmark moved it to 25; the reset resumed from 25; 410 listed again (30)
    assert kube.watched_from == ["10", "25", "25", "30", "40"]
    assert informer.lists == 2 and informer.reconnects == 1
    assert [o["metadata"]["name"] for o in informer.objects()] == ["b"]  # "a" vanished
    assert informer.get("ns", "b")["metadata"]["resourceVersion"] == "40"
    assert wakeup.wait(0)


def test_reused_names_and_early_answers_are_kept() -> None:
    kube = ScriptedKube(
        lists=[([pod("p", 5, uid="old")], "10")],
        watches=[
            [
                {"type": "DELETED", "object": pod("p", 6, uid="old")},
                {"type": "ADDED", "object": pod("p", 7, uid="new")},
                {"type": "MODIFIED", "object": pod("p", 8, uid="new")},
            ]
        ],
    )
    informer = Informer(kube, "pods")  # type: ignore[arg-type]
    informer._list()
    informer.observe(pod("p", 9, uid="new"))  # our own write's answer, ahead of the watch
    informer._watch()
    # the old object's DELETED did not drop the new one, and version 9 was not rolled back
    assert informer.get("ns", "p")["metadata"] == pod("p", 9, uid="new")["metadata"]


def test_a_quiet_wait_takes_a_burst_of_changes_as_one() -> None:
    wakeup = Wakeup()
    assert not wakeup.wait_quiet(0.01, gap=0.5, cap=2.0)  # nothing changed: the timeout
    burst = threading.Thread(target=lambda: [wakeup() or time.sleep(0.001) for _ in range(5)])
    burst.start()
    assert wakeup.wait_quiet(5.0, gap=0.5, cap=2.0)
    burst.join()
    assert not wakeup.wait(0.0)  # every change of the burst was taken by that one wait
