"""A real SMTP server on loopback (aiosmtpd) for the email tests: it records every message it
accepts, can hold the n-th one (the client waits in the middle of DATA, as on a slow server), and
can go away and come back on the same port.

Kept apart from the test modules so that the worker processes' tests and the in-process ones share
it; it runs in the test process, in aiosmtpd's own thread.
"""

from __future__ import annotations

import threading
from email import message_from_bytes
from email.message import Message
from typing import Any

from aiosmtpd.controller import Controller

from tests.support.loopback import HOST, free_port

HOLD_TIMEOUT = 60.0
"""The longest a held message waits for ``release``: a test that forgot to release it fails."""


class _Handler:
    def __init__(self, server: SmtpServer) -> None:
        self._server = server

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        return self._server._accept(envelope.rcpt_tos, envelope.content)


class SmtpServer:
    """``start`` it, point MAIL_SERVER/MAIL_PORT at ``host``/``port``; ``messages`` is what it
    accepted, in order."""

    def __init__(self, hold_at: int | None = None) -> None:
        self.host = HOST
        self.port = free_port()
        self.hold_at = hold_at
        """The number of the message (1 for the first) whose DATA is held until ``release``."""
        self.holding = threading.Event()
        """Set once the held message arrived: its client is waiting for the answer."""
        self._released = threading.Event()
        self._lock = threading.Lock()
        self._messages: list[tuple[list[str], Message]] = []
        self._controller: Controller | None = None

    def start(self) -> None:
        self._controller = Controller(_Handler(self), hostname=self.host, port=self.port)
        self._controller.start()

    def stop(self) -> None:
        """Go away: the port refuses connections until ``start`` again."""
        self._released.set()
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def release(self) -> None:
        self._released.set()

    @property
    def messages(self) -> list[tuple[list[str], Message]]:
        with self._lock:
            return list(self._messages)

    @property
    def recipients(self) -> list[str]:
        return [to for recipients, _message in self.messages for to in recipients]

    def _accept(self, recipients: list[str], content: bytes) -> str:
        with self._lock:
            self._messages.append((list(recipients), message_from_bytes(content)))
            number = len(self._messages)
        if number == self.hold_at:
            # Recorded first: the server has the message, the client does not know it yet.
            self.holding.set()
            self._released.wait(HOLD_TIMEOUT)
        return "250 OK"
