"""A team's members racing for the last units of its pool and of their own caps: the pool and
every member's counter stay exact, and every refusal names the limit that refused with the numbers
that refused it (a personal account's refusal too).

Bursts of guarded requests from threads of several app server processes (each with its own app,
engine and pool, as under gunicorn) on one SQLite file or one PostgreSQL database; the host's
``account_loader`` chooses the team, its user_loader reads the host's users table. A view that
fails after its charge gives both the pool and the member's counter back.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import Engine, func, select, text, update

from flask_profile_billing import ProfileBilling, QuotaExceeded
from flask_profile_billing.domain.accounts import Role
from flask_profile_billing.state import get_state
from flask_profile_billing.store.models import member_counters, usage_counters, usage_events
from tests.support.host_app import Clock, billing_of, sign_up
from tests.support.team_concurrency import (
    MemberAnswer,
    MemberRequest,
    fire_members_at_once,
    member_worker,
    team_host_app,
)

POOL = 40
"""The team plan's analyses a month."""
SPENT_BEFORE = 16
"""What the owner spends before each burst: the burst races for the pool's last 24 units."""
CAPS: dict[int, int | None] = {0: 2, 1: 2, 2: 2, 3: 2, 4: 6, 5: 6, 6: None, 7: None}
"""Member index -> cap: four caps that bind long before the pool, two that may, two members
without a cap. What the caps let through (2 * 4 + 6 * 2 + 8 * 2 = 36) is more than the 24 the
pool has left, so the pool binds too."""
PER_MEMBER = 8
PROCESSES = 4
TRIALS = 20

CATALOG = {
    "metrics": {"analysis": {"kind": "periodic"}},
    "plans": [
        {"code": "free", "name": "Free", "default": True, "limits": {"analysis": 2}},
        {
            "code": "team",
            "name": "Team",
            "price_monthly": 30,
            "limits": {"analysis": POOL},
            "seats": 10,
        },
    ],
}


def member(trial: int, index: int) -> str:
    return f"t{trial}-member-{index}"


def make_team(billing: ProfileBilling, trial: int, caps: dict[int, int | None]) -> str:
    """A team on the Team plan whose owner spent ``SPENT_BEFORE``, with capped members."""
    owner = f"t{trial}-owner"
    account = billing.accounts.create_team(owner, f"Team {trial}")
    billing.change_plan(owner, "team", account_id=account.id)
    for index, cap in caps.items():
        # The members are users of the host before they join (their first requests do not race
        # to sign them up).
        sign_up(member(trial, index))
        billing.accounts.add_member(owner, account.id, member(trial, index), Role.MEMBER)
        if cap is not None:
            billing.accounts.set_cap(owner, account.id, member(trial, index), "analysis", cap)
    if SPENT_BEFORE:
        billing.consume(owner, "analysis", SPENT_BEFORE, account_id=account.id)
    return account.id


def stored(account_id: str) -> tuple[int, dict[str, int], Counter[str]]:
    """The pool, each user's counter and each user's usage events, as stored."""
    engine = get_state().runtime.engine
    with engine.connect() as connection:
        pool = connection.execute(
            select(func.coalesce(func.sum(usage_counters.c.used), 0)).where(
                usage_counters.c.account_id == account_id
            )
        ).scalar_one()
        counters = {
            str(user): int(used)
            for user, used in connection.execute(
                select(member_counters.c.user_id, member_counters.c.used).where(
                    member_counters.c.account_id == account_id
                )
            )
        }
        events = Counter(
            str(actor)
            for actor in connection.execute(
                select(usage_events.c.actor_user_id).where(usage_events.c.account_id == account_id)
            ).scalars()
        )
    return int(pool), counters, events


def check_trial(trial: int, account_id: str, answers: list[MemberAnswer]) -> None:
    """Everything a team relies on after a burst, against what is stored."""
    owner = f"t{trial}-owner"
    assert len(answers) == len(CAPS) * PER_MEMBER
    assert {answer.status for answer in answers} <= {200, 429}, Counter(a.status for a in answers)
    pool, counters, events = stored(account_id)
    allowed = Counter(answer.user for answer in answers if answer.status == 200)
    left = POOL - SPENT_BEFORE

    # The pool binds (the caps let more through than it has left): it is spent to the unit.
    assert sum(allowed.values()) == left, (trial, allowed)
    assert pool == POOL
    assert sum(counters.values()) == pool
    assert counters.get(owner, 0) == SPENT_BEFORE
    assert events == Counter({owner: 1, **allowed})
    for index, cap in CAPS.items():
        user = member(trial, index)
        assert counters.get(user, 0) == allowed[user], (trial, user)
        if cap is not None:
            assert allowed[user] <= cap, (trial, user)

    for answer in answers:
        if answer.status != 429:
            continue
        assert answer.body is not None
        details = answer.body["details"]
        cap = CAPS[int(answer.user.rsplit("-", 1)[1])]
        final = counters.get(answer.user, 0)
        # The member's and the pool's numbers as they stood when refused: never above what is
        # stored now, and the one named is the limit that was reached.
        assert details["pool"]["limit"] == POOL
        assert SPENT_BEFORE <= details["pool"]["used"] <= pool
        assert details["member"]["cap"] == cap
        assert details["member"]["used"] <= final
        if details["scope"] == "member":
            assert cap is not None
            assert details["member"] == {"cap": cap, "used": cap, "remaining": 0}, details
            assert final == cap
            assert (details["limit"], details["used"]) == (cap, cap)
        else:
            assert details["scope"] == "pool", details
            assert details["pool"] == {"limit": POOL, "used": POOL, "remaining": 0}, details
            assert cap is None or details["member"]["used"] < cap, details
            assert (details["limit"], details["used"]) == (POOL, POOL)


@pytest.fixture
def config(clock: Clock) -> dict[str, Any]:
    return {"BILLING_PLANS": CATALOG, "BILLING_CLOCK": clock}


@pytest.fixture
def team_app(database_url: str, config: dict[str, Any]) -> Iterator[Flask]:
    """The test's own app (it creates the tables and the teams), with the same account_loader
    as the workers'."""
    app = team_host_app(database_url, config)
    with app.app_context():
        yield app


def test_members_racing_for_the_last_units_from_several_processes_stay_exact(
    team_app: Flask, database_url: str, config: dict[str, Any]
) -> None:
    billing = billing_of(team_app)
    spawn = multiprocessing.get_context("spawn")
    per_process = len(CAPS) * PER_MEMBER // PROCESSES
    overlapping = 0

    with spawn.Manager() as manager, ProcessPoolExecutor(PROCESSES, mp_context=spawn) as pool:
        for trial in range(TRIALS):
            account_id = make_team(billing, trial, CAPS)
            requests = [
                MemberRequest(member(trial, index), account_id)
                for _ in range(PER_MEMBER)
                for index in CAPS
            ]
            together = manager.Barrier(PROCESSES, timeout=120)
            futures = [
                pool.submit(
                    member_worker,
                    database_url,
                    config,
                    requests[start::PROCESSES],
                    together.wait,
                )
                for start in range(PROCESSES)
            ]
            results = [future.result(timeout=180) for future in futures]
            assert [len(result) for result in results] == [per_process] * PROCESSES

            check_trial(trial, account_id, [answer for result in results for answer in result])
            # The race happened: each process was still sending while every other one waited for
            # answers.
            windows = [(min(a.sent for a in r), max(a.answered for a in r)) for r in results]
            overlapping += max(start for start, _ in windows) < min(end for _, end in windows)

    assert overlapping == TRIALS


def test_failed_views_of_racing_members_give_back_the_pool_and_their_counters(
    team_app: Flask,
) -> None:
    team_app.config["PROPAGATE_EXCEPTIONS"] = False  # a crashing view answers 500
    billing = billing_of(team_app)
    caps: dict[int, int | None] = {0: 3, 1: 3, 2: None, 3: None}
    account_id = make_team(billing, 0, caps)
    # Each member charges and fails (an error status, a raised exception) as often as it succeeds.
    paths = ["/analyze", "/analyze/refused", "/analyze/crash"]
    requests = [
        MemberRequest(member(0, index), account_id, path)
        for index in caps
        for path in paths
        for _ in range(3)
    ]

    answers = fire_members_at_once(team_app, requests)

    allowed = Counter(answer.user for answer in answers if answer.status == 200)
    failed = [answer for answer in answers if answer.status in (422, 500)]
    assert failed, Counter(answer.status for answer in answers)
    assert {answer.path for answer in failed} == {"/analyze/refused", "/analyze/crash"}
    pool, counters, events = stored(account_id)
    owner = "t0-owner"
    assert pool == SPENT_BEFORE + sum(allowed.values())
    assert {user: used for user, used in counters.items() if used} == {
        owner: SPENT_BEFORE,
        **allowed,
    }
    assert events == Counter({owner: 1, **allowed})

    # Every unit a failed view took is back: each capped member spends up to its cap exactly,
    # and the pool to its limit exactly.
    for index, cap in caps.items():
        user = member(0, index)
        if cap is not None:
            for _ in range(cap - allowed[user]):
                billing.consume(user, "analysis", account_id=account_id)
    free = member(0, 2)
    billing.consume(free, "analysis", POOL - stored(account_id)[0], account_id=account_id)
    pool, counters, _ = stored(account_id)
    assert pool == POOL
    assert [counters[member(0, index)] for index in (0, 1)] == [3, 3]


def test_a_refusal_by_the_pool_names_the_pool_that_refused_not_an_older_one(
    team_app: Flask,
) -> None:
    billing = billing_of(team_app)
    account_id = make_team(billing, 0, {0: None})
    billing.consume(member(0, 0), "analysis", POOL - SPENT_BEFORE - 1, account_id=account_id)
    engine = get_state().runtime.engine
    refusals: list[QuotaExceeded] = []

    def charge_the_last_unit() -> None:
        with team_app.app_context(), pytest.raises(QuotaExceeded) as refused:
            billing.consume(member(0, 0), "analysis", account_id=account_id)
        refusals.append(refused.value)

    # Another charge holds the pool's last unit, not yet committed, while this one starts: this
    # one waits for it, then finds the pool full.
    with engine.connect() as other:
        with other.begin():
            other.execute(
                update(usage_counters)
                .where(usage_counters.c.account_id == account_id)
                .values(used=usage_counters.c.used + 1)
            )
            charging = threading.Thread(target=charge_the_last_unit)
            charging.start()
            wait_until_waiting_for_a_lock(engine)
        charging.join(timeout=60)

    assert len(refusals) == 1
    details = refusals[0].details()
    assert details["scope"] == "pool"
    assert details["pool"] == {"limit": POOL, "used": POOL, "remaining": 0}
    assert (details["limit"], details["used"], details["remaining"]) == (POOL, POOL, 0)
    assert details["member"]["used"] == POOL - SPENT_BEFORE - 1


def test_a_refusal_of_a_personal_account_names_the_counter_that_refused_not_an_older_one(
    team_app: Flask,
) -> None:
    # The same race on a personal account's single counter (the Free plan allows 2).
    billing = billing_of(team_app)
    billing.consume("solo-1", "analysis")
    engine = get_state().runtime.engine
    refusals: list[QuotaExceeded] = []

    def charge_the_last_unit() -> None:
        with team_app.app_context(), pytest.raises(QuotaExceeded) as refused:
            billing.consume("solo-1", "analysis")
        refusals.append(refused.value)

    with engine.connect() as other:
        with other.begin():
            other.execute(
                update(usage_counters)
                .where(usage_counters.c.account_id == "user:solo-1")
                .values(used=usage_counters.c.used + 1)
            )
            charging = threading.Thread(target=charge_the_last_unit)
            charging.start()
            wait_until_waiting_for_a_lock(engine)
        charging.join(timeout=60)

    assert len(refusals) == 1
    details = refusals[0].details()
    assert (details["limit"], details["used"], details["remaining"]) == (2, 2, 0)


def wait_until_waiting_for_a_lock(engine: Engine) -> None:
    """On PostgreSQL, until some session waits for a row lock. On SQLite a writer waits for the
    whole database, which a held write transaction excludes: the charge starts after it either
    way, so there is nothing to wait for."""
    if engine.dialect.name != "postgresql":
        return
    waiting = text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
    deadline = time.monotonic() + 60
    with engine.connect() as watcher:
        while not watcher.execute(waiting).scalar_one():
            assert time.monotonic() < deadline, "the charge never waited for the pool's lock"
            watcher.rollback()
            time.sleep(0.01)
