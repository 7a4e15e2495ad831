"""`Kube.each`: independent requests in flight together, answered in order, failures after all."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpuparley.deploy.kube import CONCURRENT_REQUESTS, Conflict, Kube, NotFound

KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:9"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
"""


@pytest.fixture
def kube(tmp_path: Path) -> Iterator[Kube]:
    """A client that is never connected: `each` only runs the callables it is given."""
    path = tmp_path / "kubeconfig"
    path.write_text(KUBECONFIG)
    client = Kube(path)
    yield client
    client.close()


def test_each_has_the_requests_in_flight_together_and_answers_in_the_items_order(
    kube: Kube,
) -> None:
    # Every request waits at a barrier that opens only when all of them have arrived: run one
    # after the other, the first would wait alone until the timeout broke the barrier.
    count = CONCURRENT_REQUESTS
    barrier = threading.Barrier(count, timeout=60)

    def request(item: int) -> int:
        barrier.wait()
        return item * item

    assert kube.each(request, range(count)) == [i * i for i in range(count)]


def test_each_finishes_every_request_before_raising_the_first_failure_in_order(
    kube: Kube,
) -> None:
    done: list[int] = []
    released = threading.Event()

    def request(item: int) -> int:
        if item == 1:
            released.wait(60)  # the later failure is raised first in time
            raise NotFound(404, "NotFound", "one")
        if item == 3:
            released.set()
            raise Conflict(409, "Conflict", "three")
        done.append(item)
        return item

    with pytest.raises(NotFound):
        kube.each(request, range(6))
    assert sorted(done) == [0, 2, 4, 5]


def test_each_with_one_item_runs_it_on_the_callers_thread(kube: Kube) -> None:
    caller = threading.current_thread()
    assert kube.each(lambda _item: threading.current_thread() is caller, ["only"]) == [True]
    assert kube.each(lambda item: item, []) == []
