"""Database work that must not be lost when the database is away for a moment.

Some writes happen after a request's answer is decided: giving a failed request's charge back,
storing an idempotent response, releasing a key. When the database cannot take one at that moment
(often the very fault that failed the request), it waits here, in this process, and a background
thread retries it with a growing delay until the database takes it. Each operation must be safe to
run again: a retry of one whose first attempt did commit (the connection dropped before the answer)
changes nothing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from flask import Flask

from ..store.transactions import UNAVAILABLE_ERRORS

log = logging.getLogger(__name__)

FIRST_RETRY_SECONDS = 0.5
LAST_RETRY_SECONDS = 10.0


class RetryQueue:
    """Operations waiting for the database, retried in the background inside ``app``'s context."""

    def __init__(self, app: Flask, name: str) -> None:
        self._app = app
        self._name = name
        self._waiting: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self._retrier: threading.Thread | None = None

    def run_or_queue(self, operation: Callable[[], None], failure: str) -> bool:
        """Run ``operation`` now; when the database is unavailable, log ``failure`` and queue it.
        Whether it ran now."""
        try:
            operation()
        except UNAVAILABLE_ERRORS as error:
            log.error(
                "%s: the database is unavailable (%s); retrying in the background",
                failure,
                type(error).__name__,
            )
            self.queue(operation)
            return False
        return True

    def queue(self, operation: Callable[[], None]) -> None:
        """Keep ``operation`` for the background retrier, starting it if none runs."""
        with self._lock:
            self._waiting.append(operation)
            if self._retrier is None or not self._retrier.is_alive():
                self._retrier = threading.Thread(
                    target=self._retry_until_done, name=self._name, daemon=True
                )
                self._retrier.start()

    @property
    def pending(self) -> int:
        """How many operations wait for the database."""
        with self._lock:
            return len(self._waiting)

    def retry_pending(self) -> int:
        """Try every waiting operation once now; how many are still waiting."""
        with self._lock:
            batch, self._waiting = self._waiting, []
        failed: list[Callable[[], None]] = []
        for operation in batch:
            try:
                with self._app.app_context():  # the engine is the app's
                    operation()
            except UNAVAILABLE_ERRORS:
                failed.append(operation)
        with self._lock:
            self._waiting[:0] = failed
            return len(self._waiting)

    def _retry_until_done(self) -> None:
        delay = FIRST_RETRY_SECONDS
        stop = threading.Event()
        while True:
            stop.wait(delay)
            try:
                left = self.retry_pending()
            except Exception:  # a bug must not kill the retrier and strand the others
                log.exception("%s: a retry failed", self._name)
                left = self.pending
            if left == 0:
                with self._lock:
                    if not self._waiting:
                        self._retrier = None
                        return
            delay = min(delay * 2, LAST_RETRY_SECONDS)
