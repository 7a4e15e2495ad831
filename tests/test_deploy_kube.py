"""`Kube.each`: independent requests in flight together, answered in order, failures after all;
`retrying`: start-up steps wait out an unreachable apiserver, and only that; `connect`: a
malformed kubeconfig is a `ConfigException`."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_host import unreachable_kubeconfig
from kubernetes.config.config_exception import ConfigException

from gpuparley.deploy.kube import (
    CONCURRENT_REQUESTS,
    Conflict,
    Kube,
    NotFound,
    Unavailable,
    connect,
    retrying,
)


@pytest.fixture
def kube(tmp_path: Path) -> Iterator[Kube]:
    """A client that is never connected: `each` only runs the callables it is given."""
    client = Kube(unreachable_kubeconfig(tmp_path))
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


def test_start_up_steps_are_retried_while_the_apiserver_is_unreachable() -> None:
    failures = [1]

    def step() -> str:
        if failures[0]:
            failures[0] -= 1
            raise Unavailable(0, "MaxRetryError", "connection refused")
        return "answered"

    assert retrying(step, seconds=60.0) == "answered"
    assert failures == [0]


def test_only_unavailability_is_retried_and_only_until_the_deadline() -> None:
    calls: list[int] = []

    def missing() -> None:
        calls.append(1)
        raise NotFound(404, "NotFound", "negotiators.gpuparley.io alpha not found")

    with pytest.raises(NotFound):
        retrying(missing, seconds=60.0)
    assert calls == [1]

    def down() -> None:
        raise Unavailable(0, "MaxRetryError", "connection refused")

    with pytest.raises(Unavailable):
        retrying(down, seconds=0.0)


@pytest.mark.parametrize("text", ["garbage: [", "[]", "hello", "clusters: 5"])
def test_a_malformed_kubeconfig_is_a_config_error_naming_it(tmp_path: Path, text: str) -> None:
    """Before: the YAML parser's error or the client's TypeError, a traceback from `deploy
    apply` and the processes (they report `ConfigException` in one line)."""
    path = tmp_path / "kubeconfig"
    path.write_text(text + "\n")
    with pytest.raises(ConfigException, match=f"{path} is not a kubeconfig"):
        connect(path)
