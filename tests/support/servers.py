"""Real PostgreSQL and Redis servers on loopback, started once per test session.

Why: row locks, atomic quota counters and cross-process caching only behave truly on the real
servers, so the tests run against throwaway instances instead of fakes. A missing binary skips
the tests that need it on a developer's machine, but fails them in CI (CI=true), where a
silent skip would hide an untested backend.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import NoReturn

import psycopg
import pytest
import redis
from psycopg import sql

from tests.support.loopback import HOST, free_port, pg_bindir, run_pg_tool, tail, wait_for_postgres

START_TIMEOUT = 60.0

# Superuser `postgres` with trust auth: the server only listens on loopback and a private socket.
INITDB_ARGS = ("-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync")
# Tuned for speed and for many concurrent connections from several processes; durability is
# irrelevant for a database that is deleted at the end of the session.
PG_SETTINGS = {
    "listen_addresses": f"'{HOST}'",
    "max_connections": "300",
    "shared_buffers": "'64MB'",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    # Tiny test tables gain nothing from parallel plans, which need /dev/shm space.
    "max_parallel_workers_per_gather": "0",
}


@dataclass(frozen=True)
class PostgresServer:
    """Connection facts of the session's PostgreSQL server (trust auth, no password)."""

    host: str
    port: int
    user: str = "postgres"

    def url_for(self, database: str) -> str:
        """SQLAlchemy URL of `database` on this server, via psycopg 3."""
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{database}"

    @property
    def url(self) -> str:
        """URL of the default 'postgres' database."""
        return self.url_for("postgres")

    def new_database(self, name: str) -> str:
        """Recreate `name` empty, dropping it and its connections first (PostgreSQL 13+).

        Returns its SQLAlchemy URL.
        """
        with psycopg.connect(
            host=self.host, port=self.port, user=self.user, dbname="postgres", autocommit=True
        ) as conn:
            ident = sql.Identifier(name)
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(ident))
        return self.url_for(name)


@dataclass(frozen=True)
class RedisServer:
    """Connection facts of the session's Redis server."""

    host: str
    port: int

    @property
    def url(self) -> str:
        """URL of database 0."""
        return f"redis://{self.host}:{self.port}/0"

    def flush(self) -> None:
        """Empty every database, so that one test's keys never leak into the next."""
        with redis.Redis(host=self.host, port=self.port) as client:
            client.flushall()


def missing(what: str, remedy: str) -> NoReturn:
    """Fail in CI (an untested backend or browser must not pass unnoticed), skip elsewhere.

    `remedy` says what to install: "install the Debian package 'postgresql'"."""
    reason = f"{what} not found; {remedy} to run these tests"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: a missing dependency is a failure)", pytrace=False)
    pytest.skip(reason, allow_module_level=True)  # also from a module's top, as an import


def required_module(name: str) -> ModuleType:
    """The module ``name`` of a package the tests need (the test extra has it), imported; when it is
    not installed, the test, or the module that calls this at its top, fails under CI=true and is
    skipped elsewhere, like a missing server."""
    try:
        return importlib.import_module(name)
    except ImportError:
        missing(f"Python module {name!r}", "install the test extra: pip install -e '.[test]'")


def _missing(what: str, package: str) -> NoReturn:
    missing(what, f"install the Debian package '{package}'")


@pytest.fixture(scope="session")
def postgresql_server() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL cluster for the whole session."""
    bindir = pg_bindir()
    if bindir is None or not (bindir / "initdb").is_file():
        _missing("PostgreSQL server binaries (pg_ctl, initdb; or set PG_BINDIR)", "postgresql")
    # Not tmp_path_factory: its directory is private to the user running pytest, which the
    # `postgres` user needs to enter when pytest runs as root.
    base = Path(tempfile.mkdtemp(prefix="pytest-postgresql-"))
    data, log = base / "data", base / "server.log"
    try:
        if os.geteuid() == 0:
            try:
                shutil.chown(base, "postgres", "postgres")
            except LookupError:
                pytest.fail("running as root needs a 'postgres' system user", pytrace=False)
        init = run_pg_tool(bindir, base, "initdb", "-D", str(data), *INITDB_ARGS)
        if init.returncode != 0:
            pytest.fail(f"initdb failed:\n{init.stdout}{init.stderr}", pytrace=False)
        server = PostgresServer(HOST, free_port())
        settings = {**PG_SETTINGS, "port": str(server.port), "unix_socket_directories": f"'{base}'"}
        with (data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
        timeout = str(int(START_TIMEOUT))
        start = run_pg_tool(
            bindir, base, "pg_ctl", "-D", str(data), "-l", str(log), "-w", "-t", timeout, "start"
        )
        if start.returncode != 0:
            pytest.fail(f"PostgreSQL failed to start: {start.stderr}\n{tail(log)}", pytrace=False)
        try:
            error = wait_for_postgres(server.host, server.port, server.user, START_TIMEOUT)
            if error is not None:
                message = f"PostgreSQL does not accept connections: {error}\n{tail(log)}"
                pytest.fail(message, pytrace=False)
            yield server
        finally:
            run_pg_tool(bindir, base, "pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _wait_for_redis(server: RedisServer, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Wait until the server answers PING; fail at once if it exited."""
    deadline, error = time.monotonic() + START_TIMEOUT, "no answer"
    with redis.Redis(host=server.host, port=server.port, socket_timeout=5) as client:
        while True:
            try:
                if client.ping():
                    return
            except redis.ConnectionError as exc:
                error = str(exc)
            if proc.poll() is not None or time.monotonic() > deadline:
                message = f"redis-server failed to start ({error}, exit code {proc.returncode})"
                pytest.fail(f"{message}\n{tail(log)}", pytrace=False)
            time.sleep(0.05)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One throwaway Redis for the whole session, without persistence."""
    binary = os.environ.get("REDIS_SERVER") or shutil.which("redis-server")
    if not binary or not os.access(binary, os.X_OK):
        _missing("redis-server (or set REDIS_SERVER)", "redis-server")
    base = tmp_path_factory.mktemp("redis")
    log = base / "server.log"
    server = RedisServer(HOST, free_port())
    args = ["--bind", HOST, "--port", str(server.port), "--save", "", "--appendonly", "no"]
    args += ["--daemonize", "no", "--dir", str(base)]
    with log.open("wb") as out:
        proc = subprocess.Popen([binary, *args], stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_for_redis(server, proc, log)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
