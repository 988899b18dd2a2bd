"""The profile page (``GET /profile``), measured in process: server time, the statements of one
render, and the bytes a browser downloads.

Two users on the default catalog (four plans, fourteen features): one with a day of usage history,
one with a year of it, so that the statement counts show whether a render's work grows with the
history (it must not). Times are through Flask's test client: the server's own time, no network.
``python -m bench.page [DATABASE_URL]`` runs it alone (default: a SQLite file in a temporary
folder); ``python -m bench.run`` runs it on PostgreSQL and SQLite with the rest (its ``page`` part).
"""

from __future__ import annotations

import sys
import tempfile
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Flask
from sqlalchemy import text

from .app import create_app, db, setup_database
from .inprocess import recording, time_get

SHORT_HISTORY_USER = "page-short"
LONG_HISTORY_USER = "page-long"
HISTORY_DAYS = {SHORT_HISTORY_USER: 1, LONG_HISTORY_USER: 365}
EVENTS_A_DAY = 4
PAGE = "/profile/"
ASSETS = ("/profile/static/profile.css", "/profile/static/profile.js")

_EVENT = text(
    "INSERT INTO billing_usage_events "
    "(account_id, actor_user_id, metric, amount, period_start, created_at) "
    "VALUES ('user:' || :user_id, :user_id, :metric, 1, :period_start, :created_at)"
)
_ROLLUP = text(
    "INSERT INTO billing_usage_daily (account_id, metric, day, total) "
    "VALUES ('user:' || :user_id, :metric, :day, :total)"
)


def load_history(app: Flask, now: datetime) -> None:
    """Usage events of both users, a few a day before today (today has the charge of
    ``setup_database``), with the daily rollup a charge also keeps."""
    events: list[dict[str, Any]] = []
    rollup: list[dict[str, Any]] = []
    for user, days in HISTORY_DAYS.items():
        for back in range(1, days + 1):
            moment = now - timedelta(days=back)
            for metric, count in (("analysis", EVENTS_A_DAY - 1), ("export", 1)):
                for _ in range(count):
                    events.append(
                        {
                            "user_id": user,
                            "metric": metric,
                            "period_start": moment.replace(day=1, hour=0, minute=0),
                            "created_at": moment,
                        }
                    )
                rollup.append(
                    {"user_id": user, "metric": metric, "day": moment.date(), "total": count}
                )
    with app.app_context(), db.engine.begin() as connection:
        connection.execute(_EVENT, events)
        connection.execute(_ROLLUP, rollup)


def statements_per_render(app: Flask, user: str) -> dict[str, Any]:
    client = app.test_client()
    headers = {"X-User": user}
    for _ in range(3):
        client.get(PAGE, headers=headers)
    with app.app_context():
        engine = db.engine
    with recording(engine) as log:
        status = client.get(PAGE, headers=headers).status_code
    executed = [sql for kind, sql in log if kind == "execute"]
    return {"status": status, "statements": len(executed), "sql": executed}


def page_bytes(app: Flask, user: str) -> dict[str, int]:
    client = app.test_client()
    headers = {"X-User": user}
    sizes = {"html": len(client.get(PAGE, headers=headers).data)}
    for asset in ASSETS:
        sizes[asset.rsplit("/", 1)[-1]] = len(client.get(asset).data)
    sizes["total"] = sum(sizes.values())
    return sizes


def profile_page(url: str, calls: int) -> dict[str, Any]:
    """Everything the performance page reports of ``/profile`` on the database at ``url``."""
    default_catalog = {"BILLING_PLANS": None}
    app = create_app(url, default_catalog)
    russian = create_app(url, {**default_catalog, "BILLING_LOCALE": "ru"})
    setup_database(app, list(HISTORY_DAYS))
    load_history(app, datetime.now(UTC))
    result: dict[str, Any] = {"dialect": url.split(":", 1)[0], "history_days": HISTORY_DAYS}
    for user in HISTORY_DAYS:
        result[f"time_{user}"] = time_get(app, PAGE, user, calls)
        result[f"statements_{user}"] = statements_per_render(app, user)
    result["bytes_en"] = page_bytes(app, LONG_HISTORY_USER)
    result["bytes_ru"] = page_bytes(russian, LONG_HISTORY_USER)
    for each in (app, russian):
        with each.app_context():
            db.engine.dispose()
    return result


def summary(result: dict[str, Any]) -> str:
    """The rows of docs/performance.md's profile page table."""
    lines = []
    for user, days in result["history_days"].items():
        timing = result[f"time_{user}"]
        count = result[f"statements_{user}"]["statements"]
        lines.append(
            f"{result['dialect']:<12} {days:>4} days of history: p50 {timing.get('p50_ms')} ms, "
            f"p95 {timing.get('p95_ms')} ms, {count} statements"
        )
    for language in ("en", "ru"):
        sizes = result[f"bytes_{language}"]
        lines.append(
            f"{language}: HTML {sizes['html']:,} B + CSS {sizes['profile.css']:,} B "
            f"+ JS {sizes['profile.js']:,} B = {sizes['total']:,} B"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    url = argv[0] if argv else f"sqlite:///{tempfile.mkdtemp()}/page.sqlite3"
    print(summary(profile_page(url, calls=200)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
