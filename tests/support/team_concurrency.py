"""Bursts of guarded requests of a team's members, from threads of several app server processes.

Each request names its account in an ``X-Account`` header, which the host's ``account_loader``
returns, as a host that lets its users pick the team they act for would. Kept apart from the test
module so that spawned worker processes can import it; a process builds its app once and keeps it
for every burst it is sent (as an app server does), so trials cost requests, not imports.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from flask import Flask, request

from tests.support.host_app import as_user, billing_of, create_host_app


@dataclass(frozen=True)
class MemberRequest:
    """One request of a burst: who sends it, for which account, to which guarded path."""

    user: str
    account: str
    path: str = "/analyze"


@dataclass(frozen=True)
class MemberAnswer:
    """One request's answer: its status and JSON body, by whom, and when (the machine's monotonic
    clock, one for every process)."""

    pid: int
    user: str
    path: str
    status: int
    body: dict[str, Any] | None
    sent: float
    answered: float


def team_host_app(database_url: str, config: Mapping[str, Any]) -> Flask:
    """The host app, whose ``account_loader`` takes the account from the ``X-Account`` header."""
    app = create_host_app(database_url, config)

    @billing_of(app).account_loader
    def account_from_header(user_id: str) -> str | None:
        return request.headers.get("X-Account")

    return app


def fire_members_at_once(
    app: Flask,
    requests: list[MemberRequest],
    together: Callable[[], object] | None = None,
) -> list[MemberAnswer]:
    """Each request from its own thread, released together (and only once ``together``, the
    barrier of the other processes, returns too). Every answer, in the order they came."""
    answers: list[MemberAnswer] = []
    lock = threading.Lock()
    barrier = threading.Barrier(len(requests), action=together)

    def send(one: MemberRequest) -> None:
        client = app.test_client()
        headers = as_user(one.user, **{"X-Account": one.account})
        barrier.wait()
        sent = time.monotonic()
        response = client.post(one.path, headers=headers)
        answer = MemberAnswer(
            os.getpid(),
            one.user,
            one.path,
            response.status_code,
            response.get_json(silent=True),
            sent,
            time.monotonic(),
        )
        with lock:
            answers.append(answer)

    threads = [threading.Thread(target=send, args=(one,)) for one in requests]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


_apps: dict[str, Flask] = {}


def member_worker(
    database_url: str,
    config: Mapping[str, Any],
    requests: list[MemberRequest],
    together: Callable[[], object],
) -> list[MemberAnswer]:
    """Body of one app server process for one burst: its app (built on its first burst), its
    engine and pool, the shared database."""
    app = _apps.get(database_url)
    if app is None:
        app = _apps[database_url] = team_host_app(database_url, config)
    return fire_members_at_once(app, requests, together)
