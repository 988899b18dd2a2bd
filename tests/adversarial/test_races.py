"""Races on one user over real HTTP and the CLI: paid-month webhooks, manual grants, charges and a
cancel, all at once, against two gthread workers and separate CLI processes on one PostgreSQL.

Every paid month must count (extensions compose: N months paid are N months), every charge that
was answered with success must be recorded once, and the user must end with one current
subscription.

"Lost" in the figures: paid months missing from (or added to) the period's end, plus the gap
between the charges the clients saw succeed and the charges recorded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from sqlalchemy import select

from flask_profile_billing.domain.periods import add_months
from flask_profile_billing.payments import PAYMENT_SUCCEEDED, SIGNATURE_HEADER, sign
from flask_profile_billing.payments.providers import TestPaymentProvider
from flask_profile_billing.store.models import subscriptions
from tests.adversarial.harness import Traffic, usage_records
from tests.adversarial.host import (
    DATABASE_URL_ENV,
    DEFAULT_SECRET_KEY,
    PROVIDER_NAME,
    WEBHOOK_SECRET_ENV,
    token_for,
)
from tests.adversarial.report import Figures
from tests.adversarial.scenarios import WEBHOOK_SECRET, Deployment

ROOT = Path(__file__).resolve().parents[2]
PAID_MONTHS = 5  # the default cap of pending payments per user
GRANTS = 3
CHARGES = 40
TIMEOUT = 60.0


def bearer(user: str) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {token_for(DEFAULT_SECRET_KEY, user)}",
        "Accept": "application/json",
    }


def grant(host: Deployment, user: str) -> subprocess.CompletedProcess[str]:
    """``flask billing grant USER starter`` in a process of its own, as an operator runs it."""
    env = {
        **os.environ,
        DATABASE_URL_ENV: host.engine.url.render_as_string(hide_password=False),
        WEBHOOK_SECRET_ENV: WEBHOOK_SECRET,
        # This checkout's package before any installed copy, as the harness's servers run it.
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
    }
    command = [sys.executable, "-m", "flask", "--app", "tests.adversarial.host:create_app"]
    return subprocess.run(
        [*command, "billing", "grant", user, "starter"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def current_subscriptions(host: Deployment, user: str) -> list[Any]:
    with host.engine.connect() as connection:
        return list(
            connection.execute(
                select(subscriptions).where(
                    subscriptions.c.account_id == "user:" + user, subscriptions.c.ended_at.is_(None)
                )
            )
        )


def test_paid_months_grants_charges_and_a_cancel_at_once_all_count(
    host_app: Deployment, traffic: Traffic, figures: Figures
) -> None:
    user = f"racer-{time.monotonic_ns()}"
    assert grant(host_app, user).returncode == 0  # on Starter: every later payment extends it
    [starter] = current_subscriptions(host_app, user)
    session = traffic.session()
    payments = []
    for _ in range(PAID_MONTHS):
        started = session.post(
            host_app.url("/api/subscription/upgrade"),
            json={"plan_type": "starter", "duration_months": 1},
            headers=bearer(user),
        )
        assert started.status_code == 202, started.text
        payments.append(started.json()["data"]["payment"])

    outcomes: Counter[str] = Counter()
    lock = threading.Lock()
    barrier = threading.Barrier(PAID_MONTHS + GRANTS + CHARGES + 1)

    def note(outcome: str) -> None:
        with lock:
            outcomes[outcome] += 1

    def pay(payment: dict[str, Any]) -> None:
        raw = json.dumps(
            TestPaymentProvider(PROVIDER_NAME).event(
                PAYMENT_SUCCEEDED, payment["id"], payment["amount"], payment["currency"]
            )
        ).encode()
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(WEBHOOK_SECRET, raw, int(time.time())),
        }
        barrier.wait(TIMEOUT)
        answer = traffic.session().post(
            host_app.url(f"/api/billing/webhooks/{PROVIDER_NAME}"), data=raw, headers=headers
        )
        note(f"webhook {answer.status_code} {answer.json()['data']['outcome']}")

    def operator_grant() -> None:
        barrier.wait(TIMEOUT)
        note(f"grant exit {grant(host_app, user).returncode}")

    def charge() -> None:
        barrier.wait(TIMEOUT)
        answer = traffic.session().post(host_app.url("/analyze/race"), headers=bearer(user))
        note(f"charge {answer.status_code}")

    def cancel() -> None:
        barrier.wait(TIMEOUT)
        answer = traffic.session().post(
            host_app.url("/api/subscription/cancel"), headers=bearer(user)
        )
        note(f"cancel {answer.status_code}")

    threads = [threading.Thread(target=pay, args=(payment,)) for payment in payments]
    threads += [threading.Thread(target=operator_grant) for _ in range(GRANTS)]
    threads += [threading.Thread(target=charge) for _ in range(CHARGES)]
    threads.append(threading.Thread(target=cancel))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT * 2)
    assert not any(thread.is_alive() for thread in threads)

    [current] = current_subscriptions(host_app, user)
    record = usage_records(host_app.engine, "analysis", [user])[user]
    expected_end = add_months(starter.period_anchor, 1 + PAID_MONTHS + GRANTS)
    months_missing = 0 if current.expires_at == expected_end else 1

    figures.count += GRANTS + 1
    figures.lost = months_missing + abs(outcomes["charge 200"] - record.counter_used)
    assert outcomes == Counter(
        {
            "webhook 200 processed": PAID_MONTHS,
            "grant exit 0": GRANTS,
            "charge 200": CHARGES,
            "cancel 200": 1,
        }
    ), outcomes
    assert current.id == starter.id  # every change extended the same paid subscription
    assert current.expires_at == expected_end
    assert (record.counter_used, record.events, record.daily_total) == (CHARGES,) * 3
