"""Bad input: Hypothesis generates every JSON body, query string and header the API reads, and
sends them over real HTTP to gunicorn. No answer may be a 5xx, and a refused request (4xx) must
leave the database as it was.

tests/test_openapi.py already fuzzes what the OpenAPI document describes, in process and with CSRF
off. This adds what it cannot reach: bodies that are not what the document says (not JSON, not an
object, invalid UTF-8, NaN), unknown and repeated fields and query parameters, the headers that are
no part of the document (Idempotency-Key, Accept, Content-Type, the CSRF token on cookie writes,
Authorization), the host's guarded route, and webhook deliveries that are correctly signed, so
that the body behind the signature check gets fuzzed too.

"Cases" in the figures are Hypothesis examples; "lost" counts refused requests that changed the
database anyway.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, Table

from flask_profile_billing.payments import EVENT_TYPES, SIGNATURE_HEADER, sign
from flask_profile_billing.services.profiles import EDITABLE_FIELDS
from flask_profile_billing.store.models import (
    activity,
    payments,
    profiles,
    subscriptions,
    usage_counters,
    usage_daily,
    usage_events,
    webhook_deliveries,
)
from tests.adversarial.harness import Traffic, row_counts, scaled, usage_records, user_rows
from tests.adversarial.host import DEFAULT_SECRET_KEY, PROVIDER_NAME, token_for
from tests.adversarial.report import Figures
from tests.adversarial.scenarios import WEBHOOK_SECRET, Deployment

EXAMPLES = scaled(40)
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,  # nothing saved between runs: the servers and users are new each time
    # Each example is an HTTP round trip and a few queries, slow by Hypothesis's standards; the
    # figures fixture deliberately spans every example of a test.
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
    ],
)
USER_TABLES: tuple[Table, ...] = (profiles, subscriptions, usage_counters, usage_events, activity)
USAGE_TABLES: tuple[Table, ...] = (usage_counters, usage_events, usage_daily)
PAYMENT_TABLES: tuple[Table, ...] = (subscriptions, payments)
JSON_WRITES = (
    ("PATCH", "/api/profile/me"),
    ("POST", "/api/profile/events"),
    ("POST", "/api/subscription/upgrade"),
    ("POST", "/api/subscription/cancel"),
)
READS = (
    "/api/profile/me",
    "/api/profile/activity",
    "/api/profile/csrf-token",
    "/api/subscription/plans",
    "/api/subscription/current",
    "/api/subscription/usage",
    "/api/subscription/limits/check",
    "/api/billing/quotas/preview",
    "/api/billing/openapi.json",
    "/api/data",
)
MAX_FREE_CHARGES = 20
METRIC = "analysis"

# -- strategies -----------------------------------------------------------------------------------

NASTY_TEXT = st.sampled_from(
    [
        "",
        " ",
        "\x00",
        "\u2028",
        "\ud800",  # a lone surrogate: valid as a JSON escape, not storable as UTF-8
        "\U0001f4a5",
        "a" * 5000,
        "../../etc/passwd",
        "Europe/../../etc/passwd",
        "localtime",
        "' OR '1'='1' --",
        "%s%n%x",
        "<script>alert(1)</script>",
        "javascript:alert(1)",
        "+7 912 345-67-89",
        "+0000000000000000000000",
        "NaN",
        "1e309",
        "-1",
        "9" * 40,
        "profile:view",
        "professional",
        "enterprise",
    ]
)
TEXT = st.text(max_size=40) | NASTY_TEXT
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()  # NaN and infinities too: json.dumps writes them, Python's parser reads them
    | TEXT
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=12,
)
PLAUSIBLE = {
    "first_name": TEXT,
    "company": TEXT,
    "country": st.sampled_from(["RU", "de", "XX", "ZZZ", "r1", "", "Ru "]) | TEXT,
    "timezone": st.sampled_from(["Europe/Moscow", "utc", "Mars/Olympus", "+03:00", ""]) | TEXT,
    "avatar_url": st.sampled_from(["https://cdn.example.test/a.png", "http://[::1", "https://"])
    | TEXT,
    "phone": st.sampled_from(["+7 912 345-67-89", "+1 202 555 0100", "8 800", "+"]) | TEXT,
}
READ_ONLY_FIELDS = ["id", "user_id", "email", "role", "plan", "quota", "quotas", "created_at"]
PROFILE_PATCHES = st.dictionaries(
    st.sampled_from([*EDITABLE_FIELDS, *READ_ONLY_FIELDS]) | TEXT,
    JSON_VALUES,
    max_size=6,
) | st.fixed_dictionaries({}, optional={name: s | JSON_VALUES for name, s in PLAUSIBLE.items()})
EVENTS = st.fixed_dictionaries(
    {},
    optional={
        "event": st.sampled_from(["profile:view", "profile:update", "profile:cta_buy_quota"])
        | JSON_VALUES,
        "properties": JSON_VALUES,
        "extra": JSON_VALUES,
    },
)
UPGRADES = st.fixed_dictionaries(
    {},
    optional={
        "plan_type": st.sampled_from(["free", "starter", "professional", "enterprise"])
        | JSON_VALUES,
        "duration_months": st.sampled_from([0, 1, 12, 13, "1", 1.0, True, None]) | JSON_VALUES,
        "amount": JSON_VALUES,
        "user_id": JSON_VALUES,
    },
)
# Any bytes, and bodies that are JSON but not a JSON object.
ODD_BODIES = st.binary(max_size=300) | JSON_VALUES.map(lambda value: json.dumps(value).encode())
CONTENT_TYPES = st.sampled_from(
    [
        "application/json",
        "application/json; charset=utf-16",
        "application/merge-patch+json",
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "",
    ]
)
# A header value as HTTP can carry it: latin-1, no line breaks, no edge whitespace.
HEADER_VALUES = (
    st.text(
        st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
        max_size=300,
    )
    | st.sampled_from(["", "*/*", "text/html", "application/json;q=0", "a" * 4096])
).map(str.strip)
QUERY_NAMES = st.sampled_from(["limit", "days", "user_id", "id", "page", "limit[]"]) | TEXT
QUERY_VALUES = (
    st.sampled_from(["0", "1", "-1", "365", "366", "1e3", "NaN", "", "ten", "9" * 30]) | TEXT
)
QUERY_JUNK = st.sampled_from(["%zz", "a=%", "&&&=", "=1", "limit", "limit=1&limit=2", "%00=%00"])


def query_string(pairs: list[tuple[str, str]], junk: list[str]) -> str:
    """Percent-encoded by hand: lone surrogates become bytes that are not UTF-8 (which clients
    such as requests refuse to encode), and junk goes in as it is."""

    def encoded(text: str) -> str:
        return quote(text.encode("utf-8", "surrogatepass"), safe="")

    return "&".join([*(f"{encoded(k)}={encoded(v)}" for k, v in pairs), *junk])


QUERIES = st.builds(
    query_string,
    st.lists(st.tuples(QUERY_NAMES, QUERY_VALUES), max_size=4),
    st.lists(QUERY_JUNK, max_size=2),
)


# -- helpers --------------------------------------------------------------------------------------


class Fuzzer:
    """Sends a test's examples and keeps its figures: cases, 5xx, refusals that changed things."""

    def __init__(self, deployment: Deployment, figures: Figures) -> None:
        self.deployment = deployment
        self.figures = figures
        self.traffic = Traffic()
        self.session = self.traffic.session()
        figures.unit = "cases"

    def send(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        self.figures.count += 1
        try:
            response: requests.Response = self.session.request(
                method, self.deployment.url(path), timeout=30, **kwargs
            )
        finally:
            self.figures.server_errors = self.traffic.server_errors
        assert response.status_code < 500, f"{response.status_code}: {response.text[:500]}"
        return response

    def unchanged(self, before: Any, after: Any, response: requests.Response) -> None:
        """A refusal must change nothing (a success may)."""
        if response.status_code >= 400 and before != after:
            self.figures.lost += 1
            pytest.fail(f"refused with {response.status_code} but changed the database")


def bearer(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for(DEFAULT_SECRET_KEY, user)}"}


def snapshot(engine: Engine, user: str, tables: tuple[Table, ...] = USER_TABLES) -> Any:
    return user_rows(engine, user, tables)


def as_json(value: Any) -> bytes:
    return json.dumps(value).encode()


def visited(fuzzer: Fuzzer, user: str) -> str:
    """``user`` after a first read, so that its lazily created rows exist before any snapshot."""
    response = fuzzer.session.get(fuzzer.deployment.url("/api/profile/me"), headers=bearer(user))
    assert response.status_code == 200, response.text
    return user


def fuzz(strategy: st.SearchStrategy[Any]) -> Callable[[Callable[[Any], None]], Callable[[], None]]:
    """``@given(strategy)`` with this module's settings, for a check defined inside a test."""

    def decorate(check: Callable[[Any], None]) -> Callable[[], None]:
        wrapped: Callable[[], None] = FUZZ(given(strategy)(check))
        return wrapped

    return decorate


# -- the scenarios --------------------------------------------------------------------------------


def test_random_profile_patches(host_app: Deployment, figures: Figures) -> None:
    fuzzer = Fuzzer(host_app, figures)
    user = visited(fuzzer, "fuzz-profile")

    @fuzz(PROFILE_PATCHES)
    def check(body: dict[str, Any]) -> None:
        before = snapshot(host_app.engine, user)
        response = fuzzer.send(
            "PATCH",
            "/api/profile/me",
            data=as_json(body),
            headers={**bearer(user), "Content-Type": "application/json"},
        )
        fuzzer.unchanged(before, snapshot(host_app.engine, user), response)

    check()


def test_random_bodies_on_every_endpoint_that_reads_json(
    host_app: Deployment, figures: Figures
) -> None:
    fuzzer = Fuzzer(host_app, figures)
    user = visited(fuzzer, "fuzz-bodies")

    @fuzz(st.tuples(st.sampled_from(JSON_WRITES), ODD_BODIES, CONTENT_TYPES))
    def check(case: tuple[tuple[str, str], bytes, str]) -> None:
        (method, path), body, content_type = case
        before = snapshot(host_app.engine, user, (*USER_TABLES, payments))
        headers = {**bearer(user), "Content-Type": content_type}
        response = fuzzer.send(method, path, data=body, headers=headers)
        fuzzer.unchanged(
            before, snapshot(host_app.engine, user, (*USER_TABLES, payments)), response
        )

    check()


def test_random_tracking_events(host_app: Deployment, figures: Figures) -> None:
    fuzzer = Fuzzer(host_app, figures)
    user = visited(fuzzer, "fuzz-events")

    @fuzz(EVENTS)
    def check(body: dict[str, Any]) -> None:
        before = snapshot(host_app.engine, user)
        response = fuzzer.send(
            "POST",
            "/api/profile/events",
            data=as_json(body),
            headers={**bearer(user), "Content-Type": "application/json"},
        )
        fuzzer.unchanged(before, snapshot(host_app.engine, user), response)

    check()


def test_random_upgrade_requests(host_app: Deployment, figures: Figures) -> None:
    fuzzer = Fuzzer(host_app, figures)
    users = (f"fuzz-upgrade-{n}" for n in itertools.count())
    user = visited(fuzzer, next(users))

    @fuzz(UPGRADES)
    def check(body: dict[str, Any]) -> None:
        nonlocal user
        before = snapshot(host_app.engine, user, (*USER_TABLES, payments))
        response = fuzzer.send(
            "POST",
            "/api/subscription/upgrade",
            data=as_json(body),
            headers={**bearer(user), "Content-Type": "application/json"},
        )
        fuzzer.unchanged(
            before, snapshot(host_app.engine, user, (*USER_TABLES, payments)), response
        )
        if response.status_code < 400:
            # A payment started (or a plan changed): go on with a new user, so that the cap on
            # pending payments does not turn every later case into the same refusal.
            user = visited(fuzzer, next(users))

    check()


def test_random_query_strings_on_every_read(host_app: Deployment, figures: Figures) -> None:
    fuzzer = Fuzzer(host_app, figures)
    user = visited(fuzzer, "fuzz-queries")

    @fuzz(st.tuples(st.sampled_from(READS), QUERIES))
    def check(case: tuple[str, str]) -> None:
        path, query = case
        before = snapshot(host_app.engine, user)
        response = fuzzer.send("GET", f"{path}?{query}", headers=bearer(user))
        after = snapshot(host_app.engine, user)
        # A read changes nothing, whatever it answers.
        if before != after:
            figures.lost += 1
        assert before == after, f"GET {path}?{query} changed the database ({response.status_code})"

    check()


def test_random_headers_on_a_guarded_route(host_app: Deployment, figures: Figures) -> None:
    fuzzer = Fuzzer(host_app, figures)
    case_numbers = itertools.count()
    headers = st.fixed_dictionaries(
        {},
        optional={
            "Idempotency-Key": HEADER_VALUES,
            "Accept": HEADER_VALUES,
            "Content-Type": HEADER_VALUES,
            "X-CSRFToken": HEADER_VALUES,
            "X-Requested-With": HEADER_VALUES,
        },
    )

    @fuzz(st.tuples(headers, ODD_BODIES))
    def check(case: tuple[dict[str, str], bytes]) -> None:
        sent_headers, body = case
        number = next(case_numbers)
        # A fresh user every few cases keeps some quota left, so that charges happen too.
        user = f"fuzz-guard-{number // (MAX_FREE_CHARGES // 2)}"
        if key := sent_headers.get("Idempotency-Key"):
            # Unique per case: a replayed key answers from its first request, which has tests of
            # its own; here every key is new, so a success is exactly one more charge.
            sent_headers = {**sent_headers, "Idempotency-Key": f"{number}:{key}"}
        before = snapshot(host_app.engine, user, USAGE_TABLES)
        used_before = usage_records(host_app.engine, METRIC, [user])[user].counter_used
        response = fuzzer.send(
            "POST", "/analyze/fuzz", data=body, headers={**sent_headers, **bearer(user)}
        )
        fuzzer.unchanged(before, snapshot(host_app.engine, user, USAGE_TABLES), response)
        if response.status_code < 400:
            used_after = usage_records(host_app.engine, METRIC, [user])[user].counter_used
            assert used_after - used_before == 1, "a success is exactly one charge"

    check()


def test_random_csrf_tokens_and_credentials_on_cookie_writes(
    host_app: Deployment, figures: Figures
) -> None:
    fuzzer = Fuzzer(host_app, figures)
    user = visited(fuzzer, "fuzz-cookie")
    browser = fuzzer.traffic.session()
    login = browser.post(
        host_app.url("/login"), json={"token": token_for(DEFAULT_SECRET_KEY, user)}, timeout=30
    )
    assert login.status_code == 200, login.text
    fuzzer.session = browser  # the examples go out with the cookie
    credentials = st.fixed_dictionaries(
        {},
        optional={
            "X-CSRFToken": HEADER_VALUES,
            "X-CSRF-Token": HEADER_VALUES,
            "Authorization": HEADER_VALUES
            | st.just("Bearer ")
            | HEADER_VALUES.map("Bearer {}".format),
            "Cookie": HEADER_VALUES,
        },
    )

    @fuzz(st.tuples(st.sampled_from(JSON_WRITES), credentials))
    def check(case: tuple[tuple[str, str], dict[str, str]]) -> None:
        (method, path), sent_headers = case
        before = snapshot(host_app.engine, user, (*USER_TABLES, payments))
        response = fuzzer.send(
            method,
            path,
            data=as_json({"first_name": "Forged"} if method == "PATCH" else {}),
            headers={**sent_headers, "Content-Type": "application/json"},
        )
        # No random token is the session's, and no random Authorization is a valid token.
        assert response.status_code in (400, 401), response.text
        fuzzer.unchanged(
            before, snapshot(host_app.engine, user, (*USER_TABLES, payments)), response
        )

    check()


def test_random_webhook_deliveries(host_app: Deployment, figures: Figures) -> None:
    fuzzer = Fuzzer(host_app, figures)
    payer = visited(fuzzer, "fuzz-webhook-payer")
    started = fuzzer.session.post(
        host_app.url("/api/subscription/upgrade"),
        json={"plan_type": "professional", "duration_months": 1},
        headers=bearer(payer),
        timeout=30,
    )
    assert started.status_code == 202, started.text
    payment = started.json()["data"]["payment"]
    # Events about the real pending payment, with every field possibly wrong.
    events = st.fixed_dictionaries(
        {},
        optional={
            "event_id": st.text(max_size=20) | JSON_VALUES,
            "event_type": st.sampled_from([*EVENT_TYPES, "payment.refunded"]) | JSON_VALUES,
            "payment_id": st.just(payment["id"]) | JSON_VALUES,
            "provider_payment_id": st.just(f"test_{payment['id']}") | JSON_VALUES,
            "amount": st.sampled_from([payment["amount"], "1", "-1", "NaN", "1e999"]) | JSON_VALUES,
            "currency": st.sampled_from([payment["currency"], "usd", "XXX"]) | JSON_VALUES,
        },
    ).map(as_json)
    signatures = st.sampled_from(["now", "stale", "absent", "garbage"])

    @fuzz(st.tuples(events | ODD_BODIES, signatures, HEADER_VALUES, st.booleans()))
    def check(case: tuple[bytes, str, str, bool]) -> None:
        body, how, garbage, known_provider = case
        now = int(time.time())
        header = {
            "now": sign(WEBHOOK_SECRET, body, now),
            "stale": sign(WEBHOOK_SECRET, body, now - 3600),
            "absent": None,
            "garbage": garbage,
        }[how]
        provider = PROVIDER_NAME if known_provider else quote(garbage or "x", safe="")
        before_counts = row_counts(host_app.engine, (webhook_deliveries,))
        before = snapshot(host_app.engine, payer, PAYMENT_TABLES)
        headers = {"Content-Type": "application/json"}
        if header is not None:
            headers[SIGNATURE_HEADER] = header
        response = fuzzer.send(
            "POST", f"/api/billing/webhooks/{provider}", data=body, headers=headers
        )
        fuzzer.unchanged(before, snapshot(host_app.engine, payer, PAYMENT_TABLES), response)
        if response.status_code in (401, 404):
            # Unauthenticated deliveries are not even recorded (a signed but unreadable one is,
            # as rejected).
            fuzzer.unchanged(
                before_counts, row_counts(host_app.engine, (webhook_deliveries,)), response
            )

    check()
