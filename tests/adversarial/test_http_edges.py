"""Edges over real HTTP to gunicorn: an ``Idempotency-Key`` repeated across workers, the refusal
page's security headers, and input the JSON API refuses (unknown query parameters, form bodies).

"Lost" in the figures: charges beyond the one a repeated key may cost, or changes a refusal made.
"""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from tests.adversarial.harness import Traffic, usage_records
from tests.adversarial.host import DEFAULT_SECRET_KEY, token_for
from tests.adversarial.report import Figures
from tests.adversarial.scenarios import Deployment, cookie_login

REPEATS = 40


def bearer(user: str, **extra: str) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {token_for(DEFAULT_SECRET_KEY, user)}",
        "Accept": "application/json",
        **extra,
    }


def test_one_key_repeated_across_workers_runs_once_and_charges_once(
    host_app: Deployment, traffic: Traffic, figures: Figures
) -> None:
    user = f"keyed-{time.monotonic_ns()}"
    headers = bearer(user, **{"Idempotency-Key": "export-2025-11"})

    def send(_: int) -> tuple[int, str, bytes]:
        answer = traffic.session().post(host_app.url("/analyze/report-7"), headers=headers)
        return answer.status_code, answer.headers.get("Idempotent-Replayed", ""), answer.content

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(send, range(REPEATS)))
    # Whatever raced the first one got 409 (still running): now every repeat is a replay.
    after = [send(n) for n in range(5)]
    record = usage_records(host_app.engine, "analysis", [user])[user]

    figures.lost = record.counter_used - 1
    statuses = Counter(status for status, _, _ in answers)
    assert set(statuses) <= {200, 409}, statuses
    assert statuses[200] >= 1
    assert {status for status, _, _ in after} == {200}
    assert {replayed for _, replayed, _ in after} == {"true"}
    assert len({body for status, _, body in answers + after if status == 200}) == 1
    assert (record.counter_used, record.events, record.daily_total) == (1, 1, 1)


def test_a_key_reused_for_another_resource_is_422_and_charges_nothing(
    host_app: Deployment, traffic: Traffic, figures: Figures
) -> None:
    user = f"reuser-{time.monotonic_ns()}"
    session = traffic.session()
    first = session.post(
        host_app.url("/analyze/a"), headers=bearer(user, **{"Idempotency-Key": "k"})
    )
    other = session.post(
        host_app.url("/analyze/b"), headers=bearer(user, **{"Idempotency-Key": "k"})
    )
    record = usage_records(host_app.engine, "analysis", [user])[user]

    figures.lost = record.counter_used - 1
    assert first.status_code == 200
    assert other.status_code == 422
    assert other.json()["error"] == "IDEMPOTENCY_KEY_REUSED"
    assert record.counter_used == 1


def test_the_refusal_page_carries_the_security_headers(
    host_app: Deployment, traffic: Traffic
) -> None:
    user = f"browser-{time.monotonic_ns()}"
    browser, _ = cookie_login(traffic, host_app, user)  # a browser: scripts get JSON refusals
    page = browser.get(host_app.url("/api/data"), headers={"Accept": "text/html"})

    assert page.status_code == 403
    assert page.headers["Content-Type"].startswith("text/html")
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    assert page.headers["Referrer-Policy"]


def test_the_api_refuses_unknown_query_parameters_and_form_bodies(
    host_app: Deployment, traffic: Traffic, figures: Figures
) -> None:
    user = f"edges-{time.monotonic_ns()}"
    session = traffic.session()
    before = session.get(host_app.url("/api/profile/me"), headers=bearer(user)).json()

    unknown = session.get(host_app.url("/api/subscription/current?page=2"), headers=bearer(user))
    form = session.patch(
        host_app.url("/api/profile/me"), data={"company": "Acme"}, headers=bearer(user)
    )
    after = session.get(host_app.url("/api/profile/me"), headers=bearer(user)).json()

    figures.lost = int(before["data"]["company"] != after["data"]["company"])
    assert unknown.status_code == 422
    assert "page" in unknown.json()["details"]["fields"]
    assert unknown.headers["X-Content-Type-Options"] == "nosniff"
    assert form.status_code == 415
    assert form.json()["error"] == "UNSUPPORTED_MEDIA_TYPE"
    assert after["data"]["company"] == before["data"]["company"]
