"""An app server in a process of its own, driven request by request over a pipe.

The cross-process cache test needs two long-lived processes, each with its own app, engine and
cache client, taking turns: a read in A, a write in B, a read in A again. Kept apart from the test
module so that spawned processes can import it.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import time
from collections.abc import Callable, Mapping
from multiprocessing.connection import Connection
from typing import Any

import pytest

from tests.support.host_app import create_host_app

TIMEOUT = 60.0


def user_info(user: Any) -> dict[str, Any]:
    """``BILLING_USER_INFO`` of the workers (a lambda would not survive pickling for spawn)."""
    return {"email": f"{user.id}@example.com", "role": "user"}


def serve(database_url: str, config: Mapping[str, Any], requests: Connection) -> None:
    """Answer ``(method, path, user, body)`` with ``(status, json)`` until told ``None``."""
    app = create_host_app(database_url, config)
    client = app.test_client()
    requests.send("ready")
    while (request := requests.recv()) is not None:
        method, path, user, body = request
        headers = {"X-User": user, "Accept": "application/json"}
        response = client.open(path, method=method, headers=headers, json=body)
        requests.send((response.status_code, response.get_json(silent=True)))


class AppProcess:
    """One spawned app server; ``call`` sends it a request and waits for the answer."""

    def __init__(self, database_url: str, config: Mapping[str, Any]) -> None:
        context = multiprocessing.get_context("spawn")
        self._pipe, child = context.Pipe()
        self.process = context.Process(
            target=serve, args=(database_url, dict(config), child), daemon=True
        )
        self.process.start()
        child.close()
        if self._receive() != "ready":
            raise RuntimeError("the app process did not start")

    def call(
        self, method: str, path: str, user: str, body: Any = None
    ) -> tuple[int, dict[str, Any]]:
        self._pipe.send((method, path, user, body))
        answer: tuple[int, dict[str, Any]] = self._receive()
        return answer

    def stop(self) -> None:
        if self.process.is_alive():
            # The process may have died already: then there is nobody to tell.
            with contextlib.suppress(OSError):
                self._pipe.send(None)
            self.process.join(TIMEOUT)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(TIMEOUT)
        self._pipe.close()

    def _receive(self) -> Any:
        if not self._pipe.poll(TIMEOUT):
            raise TimeoutError(f"no answer from the app process in {TIMEOUT} s")
        return self._pipe.recv()


def wait_for(condition: Callable[[], bool], what: str, *, timeout: float) -> None:
    """Poll ``condition`` until it holds; fail the test naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)
