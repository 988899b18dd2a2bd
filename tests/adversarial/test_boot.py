"""First boot on an empty database, by several processes at once.

The example app under gunicorn: four workers start together, and each creates the host's tables,
migrates the billing tables and adds the demo users. Every boot must come up (a worker that fails
to load the app halts gunicorn), leave the billing tables at the head revision, and create the demo
users once: one alice, one bob, and bob's year of Professional granted once, not once per worker.

The example app serialises its whole start (example_app/boot.py), so the extension's own migration
lock is also tested bare: processes released together by a barrier all call ``migrate.upgrade``.
"""

from __future__ import annotations

import multiprocessing
import queue
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, func, select, text

from flask_profile_billing import migrate
from flask_profile_billing.store.models import subscriptions
from tests.adversarial.harness import (
    ServerFailed,
    ServerSpec,
    scaled,
    start_gunicorn,
    wait_until_ready,
)
from tests.adversarial.report import Figures
from tests.support.servers import PostgresServer

BOOTS_ON_POSTGRESQL = scaled(5)
MIGRATION_ROUNDS = scaled(2)
MIGRATING_PROCESSES = 4
EXAMPLE_APP = ServerSpec("example_app:create_app()", workers=4, ready_path="/login")
DEMO_EMAILS = ("alice@example.com", "bob@example.com")
# Bob is granted a year; twice granted would be two years.
LONGEST_GRANT = timedelta(days=367)


@dataclass(frozen=True)
class Boot:
    error: str | None
    """Why the server did not come up, or what is wrong in the database it left; None if fine."""


def boot_example_app(database_url: str, log_dir: Path) -> Boot:
    """Start gunicorn with four sync workers of the example app, wait until every worker has
    loaded it and the login page answers, stop it, then check the database it prepared."""
    env = {"DATABASE_URL": database_url, "SECRET_KEY": "adversarial-boot"}
    server = start_gunicorn(EXAMPLE_APP, env, log_dir)
    try:
        wait_until_ready(server)
    except ServerFailed as failure:
        return Boot(str(failure))
    finally:
        server.stop()
    problems = database_problems(database_url)
    return Boot("; ".join(problems) if problems else None)


def database_problems(database_url: str) -> list[str]:
    engine = create_engine(database_url)
    try:
        problems = []
        head = ScriptDirectory.from_config(migrate.alembic_config(engine)).get_current_head()
        revision = migrate.current_revision(engine)
        if revision != head:
            problems.append(f"billing tables at {revision}, not at head {head}")
        with engine.connect() as connection:
            emails = connection.execute(text("SELECT email FROM users ORDER BY email")).scalars()
            if tuple(emails) != DEMO_EMAILS:
                problems.append(f"demo users are {list(emails)}")
            bob = connection.execute(
                text("SELECT id FROM users WHERE email = 'bob@example.com'")
            ).scalar_one()
            current = connection.execute(
                select(subscriptions.c.plan_code, subscriptions.c.expires_at).where(
                    subscriptions.c.account_id == "user:" + str(bob),
                    subscriptions.c.ended_at.is_(None),
                )
            ).all()
            granted = connection.execute(
                select(func.count()).where(
                    subscriptions.c.account_id == "user:" + str(bob),
                    subscriptions.c.plan_code == "professional",
                )
            ).scalar_one()
        if [plan for plan, _ in current] != ["professional"]:
            problems.append(f"bob's current subscriptions: {current}")
        elif (expires := current[0][1]) is None or _aware(expires) > _now() + LONGEST_GRANT:
            problems.append(f"bob's year was granted more than once: expires {expires}")
        if granted != 1:
            problems.append(f"bob has {granted} professional subscriptions")
        return problems
    finally:
        engine.dispose()


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(moment: datetime) -> datetime:
    # SQLite gives the stored UTC moments back without their offset.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def test_four_workers_boot_on_a_fresh_postgresql_database_every_time(
    postgresql_server: PostgresServer, log_dir: Path, figures: Figures
) -> None:
    failures = []
    for attempt in range(1, BOOTS_ON_POSTGRESQL + 1):
        url = postgresql_server.new_database(f"adversarial_boot_{attempt}")
        outcome = boot_example_app(url, log_dir)
        if outcome.error is not None:
            failures.append(f"boot {attempt}: {outcome.error}")

    figures.unit, figures.count, figures.lost = "boots", BOOTS_ON_POSTGRESQL, len(failures)
    assert not failures, f"{len(failures)} of {BOOTS_ON_POSTGRESQL} boots failed:\n" + "\n\n".join(
        failures
    )


def test_four_workers_boot_on_a_fresh_sqlite_file(
    tmp_path: Path, log_dir: Path, figures: Figures
) -> None:
    outcome = boot_example_app(f"sqlite:///{tmp_path}/example.sqlite3", log_dir)

    figures.unit, figures.count, figures.lost = "boots", 1, int(outcome.error is not None)
    assert outcome.error is None, outcome.error


# -- the migrations alone -------------------------------------------------------------------------


def upgrade_when_released(
    database_url: str, barrier: Any, errors: multiprocessing.Queue[str]
) -> None:
    """In a process of its own: wait for the others, then migrate (imports done beforehand, so
    that the processes really migrate at the same moment)."""
    engine = create_engine(database_url)
    try:
        barrier.wait(timeout=60)
        migrate.upgrade(engine)
    except BaseException as error:
        errors.put(f"{type(error).__name__}: {error}")
        raise
    finally:
        engine.dispose()


def migrate_concurrently(database_url: str) -> list[str]:
    """Run ``migrate.upgrade`` in MIGRATING_PROCESSES processes at once; the errors they met,
    and whether the database ends at head."""
    context = multiprocessing.get_context("spawn")  # no inherited connections or locks
    barrier = context.Barrier(MIGRATING_PROCESSES)
    errors: multiprocessing.Queue[str] = context.Queue()
    processes = [
        context.Process(target=upgrade_when_released, args=(database_url, barrier, errors))
        for _ in range(MIGRATING_PROCESSES)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
        if process.is_alive():
            process.kill()
            process.join()
    found = []
    while True:
        try:
            found.append(errors.get(timeout=1))
        except queue.Empty:
            break
    found += [f"exit code {p.exitcode}" for p in processes if p.exitcode != 0]
    engine = create_engine(database_url)
    try:
        head = ScriptDirectory.from_config(migrate.alembic_config(engine)).get_current_head()
        revision = migrate.current_revision(engine)
    finally:
        engine.dispose()
    if revision != head:
        found.append(f"billing tables at {revision}, not at head {head}")
    return found


def test_processes_migrating_one_postgresql_database_at_once_take_turns(
    postgresql_server: PostgresServer, figures: Figures
) -> None:
    failures = []
    for attempt in range(1, MIGRATION_ROUNDS + 1):
        url = postgresql_server.new_database(f"adversarial_migrate_{attempt}")
        if problems := migrate_concurrently(url):
            failures.append(f"round {attempt}: {problems}")

    figures.unit, figures.count, figures.lost = "rounds", MIGRATION_ROUNDS, len(failures)
    assert not failures


def test_processes_migrating_one_sqlite_file_at_once_take_turns(
    tmp_path: Path, figures: Figures
) -> None:
    failures = []
    for attempt in range(1, MIGRATION_ROUNDS + 1):
        url = f"sqlite:///{tmp_path}/migrate-{attempt}.sqlite3"
        if problems := migrate_concurrently(url):
            failures.append(f"round {attempt}: {problems}")

    figures.unit, figures.count, figures.lost = "rounds", MIGRATION_ROUNDS, len(failures)
    assert not failures
