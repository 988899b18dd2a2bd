"""Firing many guarded requests at once, from threads and from separate processes.

Kept apart from the test module so that spawned worker processes can import it.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from flask import Flask

from tests.support.host_app import create_host_app


@dataclass(frozen=True)
class Answered:
    """One request of a burst: who sent it, its status, and when it was sent and answered, on the
    machine's monotonic clock (one clock for every process of the machine)."""

    pid: int
    status: int
    sent: float
    answered: float


def fire_at_once(
    app: Flask,
    path: str,
    users: list[str],
    together: Callable[[], object] | None = None,
) -> list[Answered]:
    """One request per entry of ``users``, each from its own thread, released together; with
    ``together`` (another barrier's ``wait``), only once that returns too, as the threads of
    other processes do.

    Returns every request's answer, in the order they came.
    """
    answers: list[Answered] = []
    lock = threading.Lock()
    # The barrier's action runs in one thread once all have arrived, before any is released.
    barrier = threading.Barrier(len(users), action=together)

    def request(user: str) -> None:
        client = app.test_client()
        barrier.wait()
        sent = time.monotonic()
        status = client.post(
            path, headers={"X-User": user, "Accept": "application/json"}
        ).status_code
        with lock:
            answers.append(Answered(os.getpid(), status, sent, time.monotonic()))

    threads = [threading.Thread(target=request, args=(user,)) for user in users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


def statuses(answers: list[Answered]) -> Counter[int]:
    return Counter(answer.status for answer in answers)


def worker_process(
    database_url: str,
    config: Mapping[str, Any],
    path: str,
    users: list[str],
    together: Callable[[], object],
) -> list[Answered]:
    """Body of one app server process: its own app, engine and pool, the same database. Its burst
    starts when every process's threads are ready (``together``: a barrier of the processes)."""
    app = create_host_app(database_url, config)
    return fire_at_once(app, path, users, together)
