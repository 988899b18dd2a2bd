"""Throwaway servers on loopback for one benchmark run: PostgreSQL, Redis and gunicorn.

The same approach as the test suite's ``tests/support/servers.py`` (initdb into a temporary directory, the
PostgreSQL tools run as the ``postgres`` user when we are root, Redis without persistence), as
context managers: every server is stopped and its directory removed when the block ends, errors
and Ctrl-C included. Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.loopback import HOST, free_port, pg_bindir, run_pg_tool, tail, wait_for_postgres

START_TIMEOUT = 60.0
ROOT = Path(__file__).resolve().parent.parent


class ServerError(RuntimeError):
    """A server did not start; the message ends with the tail of its log."""


def _private_dir(prefix: str, owner: str | None = None) -> Path:
    # Not under a directory private to root: the postgres user must be able to enter it.
    base = Path(tempfile.mkdtemp(prefix=prefix))
    if owner and os.geteuid() == 0:
        shutil.chown(base, owner, owner)
    return base


# -- PostgreSQL ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Postgres:
    host: str
    port: int
    settings: dict[str, str]
    version: str
    log: Path
    data_dir: Path
    user: str = "postgres"

    @property
    def pid(self) -> int | None:
        """The postmaster's process id (its backends are its children)."""
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def url_for(self, database: str) -> str:
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{database}"

    def new_database(self, name: str) -> str:
        """Create ``name`` empty (dropping an older one) and return its SQLAlchemy URL."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(
            host=self.host, port=self.port, user=self.user, dbname="postgres", autocommit=True
        ) as conn:
            ident = sql.Identifier(name)
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(ident))
        return self.url_for(name)

    def set_database_option(self, name: str, option: str, value: str) -> None:
        """``ALTER DATABASE name SET option = value`` (sessions opened afterwards use it)."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(
            host=self.host, port=self.port, user=self.user, dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(
                sql.SQL("ALTER DATABASE {} SET {} = {}").format(
                    sql.Identifier(name), sql.Identifier(option), sql.Literal(value)
                )
            )


@contextmanager
def postgres(*, fsync: bool = True) -> Iterator[Postgres]:
    """A PostgreSQL cluster in a temporary directory; durable (fsync on) unless told otherwise."""
    bindir = pg_bindir()
    if bindir is None:
        raise ServerError(
            "PostgreSQL server binaries not found (install postgresql or set PG_BINDIR)"
        )
    base = _private_dir("bench-postgresql-", owner="postgres")
    data, log = base / "data", base / "server.log"
    try:
        init = run_pg_tool(
            bindir,
            base,
            "initdb",
            "-D",
            str(data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )
        if init.returncode != 0:
            raise ServerError(f"initdb failed:\n{init.stdout}{init.stderr}")
        port = free_port()
        durability = "on" if fsync else "off"
        settings = {
            "listen_addresses": f"'{HOST}'",
            "port": str(port),
            "unix_socket_directories": f"'{base}'",
            "max_connections": "100",
            "fsync": durability,
            "synchronous_commit": durability,
            "full_page_writes": durability,
            "timezone": "'UTC'",
            # Fewer checkpoints during the bulk load and the runs (a common production setting).
            "max_wal_size": "'2GB'",
        }
        with (data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
        start = run_pg_tool(
            bindir,
            base,
            "pg_ctl",
            "-D",
            str(data),
            "-l",
            str(log),
            "-w",
            "-t",
            str(int(START_TIMEOUT)),
            "start",
        )
        if start.returncode != 0:
            raise ServerError(f"PostgreSQL failed to start: {start.stderr}\n{tail(log)}")
        try:
            version = run_pg_tool(bindir, base, "postgres", "--version").stdout.strip()
            shown = {k: v.strip("'") for k, v in settings.items()}
            server = Postgres(HOST, port, shown, version, log, data)
            error = wait_for_postgres(server.host, server.port, server.user, START_TIMEOUT)
            if error is not None:
                raise ServerError(f"PostgreSQL does not accept connections: {error}\n{tail(log)}")
            yield server
        finally:
            run_pg_tool(bindir, base, "pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop")
    finally:
        shutil.rmtree(base, ignore_errors=True)


# -- Redis -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Redis:
    host: str
    port: int
    version: str

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"


@contextmanager
def redis_server() -> Iterator[Redis]:
    binary = os.environ.get("REDIS_SERVER") or shutil.which("redis-server")
    if not binary:
        raise ServerError("redis-server not found (install redis-server or set REDIS_SERVER)")
    import redis

    base = _private_dir("bench-redis-")
    log = base / "server.log"
    port = free_port()
    args = [
        "--bind",
        HOST,
        "--port",
        str(port),
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        "--dir",
        str(base),
    ]
    version = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout.strip()
    try:
        with log.open("wb") as out:
            proc = subprocess.Popen([binary, *args], stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + START_TIMEOUT
            with redis.Redis(host=HOST, port=port, socket_timeout=5) as client:
                while True:
                    try:
                        if client.ping():
                            break
                    except redis.ConnectionError:
                        pass
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise ServerError(f"redis-server failed to start\n{tail(log)}")
                    time.sleep(0.05)
            yield Redis(HOST, port, version)
        finally:
            _stop(proc)
    finally:
        shutil.rmtree(base, ignore_errors=True)


# -- gunicorn --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Gunicorn:
    host: str
    port: int
    log: Path

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"


@contextmanager
def gunicorn(env: dict[str, str], *, workers: int = 2, log_dir: Path) -> Iterator[Gunicorn]:
    """gunicorn serving ``bench.app:create_wsgi()`` with ``workers`` sync workers on loopback."""
    port = free_port()
    log = log_dir / f"gunicorn-{port}.log"
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "--workers",
        str(workers),
        "--worker-class",
        "sync",
        "--bind",
        f"{HOST}:{port}",
        "--backlog",
        "2048",
        "--timeout",
        "120",
        "--log-level",
        "warning",
        "--error-logfile",
        str(log),
        "--chdir",
        str(ROOT),
        "bench.app:create_wsgi()",
    ]
    full_env = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        command,
        env=full_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    server = Gunicorn(HOST, port, log)
    try:
        _wait_for_http(server, proc)
        yield server
    finally:
        _stop(proc, group=True)


def _wait_for_http(server: Gunicorn, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if proc.poll() is not None:
            raise ServerError(f"gunicorn exited with {proc.returncode}\n{tail(server.log)}")
        try:
            status = http_get(server.host, server.port, "/bare")[0]
            if status == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise ServerError(f"gunicorn does not answer on {server.base_url}\n{tail(server.log)}")
        time.sleep(0.1)


def http_get(
    host: str, port: int, path: str, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    """One GET over a direct connection (http.client: no proxy settings are ever consulted)."""
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _stop(proc: subprocess.Popen[bytes], *, group: bool = False) -> None:
    """SIGTERM (to the process group for gunicorn: master and workers), then SIGKILL."""
    if proc.poll() is not None:
        return
    try:
        if group:
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            proc.terminate()
        proc.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            if group:
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.kill()
        except ProcessLookupError:
            pass
        proc.wait()
