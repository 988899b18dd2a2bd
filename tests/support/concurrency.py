"""Firing many guarded requests at once, from threads and from separate processes.

Kept apart from the test module so that spawned worker processes can import it.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

from flask import Flask

from tests.support.host_app import create_host_app


def fire_at_once(
    app: Flask, path: str, users: list[str], start_at: float | None = None
) -> Counter[int]:
    """One request per entry of ``users``, each from its own thread, released together.

    Returns how many requests ended with each status code.
    """
    statuses: Counter[int] = Counter()
    lock = threading.Lock()
    barrier = threading.Barrier(len(users))

    def request(user: str) -> None:
        client = app.test_client()
        barrier.wait()
        if start_at is not None:
            time.sleep(max(start_at - time.time(), 0))
        status = client.post(
            path, headers={"X-User": user, "Accept": "application/json"}
        ).status_code
        with lock:
            statuses[status] += 1

    threads = [threading.Thread(target=request, args=(user,)) for user in users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


def worker_process(
    database_url: str, config: Mapping[str, Any], path: str, users: list[str], start_at: float
) -> dict[int, int]:
    """Body of one app server process: its own app, engine and pool, the same database."""
    app = create_host_app(database_url, config)
    return dict(fire_at_once(app, path, users, start_at))
