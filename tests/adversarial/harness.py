"""The adversarial harness: gunicorn servers, a bounded load generator, an invariant checker that
reads the database directly, and servers of a test's own to break (PostgreSQL, Redis).

Everything listens on 127.0.0.1 only. Every loop is bounded twice, by a count and by a deadline,
so a server that hangs fails a test instead of stalling the session.

Counts scale with ``ADVERSARIAL_SCALE`` (a positive number, 1 by default): ``scaled(2000)`` is
2,000 requests in the normal test command and 20,000 with ``ADVERSARIAL_SCALE=10``.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import redis
import requests
from requests.adapters import HTTPAdapter
from requests.models import PreparedRequest
from sqlalchemy import Engine, Select, Table, func, select

from flask_profile_billing.domain.accounts import personal_account_id, personal_user_id
from flask_profile_billing.store.models import (
    subscriptions,
    usage_counters,
    usage_daily,
    usage_events,
)
from tests.adversarial.gunicorn_hooks import READY_MARKER
from tests.support.loopback import HOST, free_port, pg_bindir, run_pg_tool, tail, wait_for_postgres
from tests.support.servers import INITDB_ARGS, PG_SETTINGS, PostgresServer

ROOT = Path(__file__).resolve().parents[2]
SCALE_ENV = "ADVERSARIAL_SCALE"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
REQUEST_TIMEOUT = 30.0
"""Seconds one HTTP request may take; a longer one counts as unanswered."""
POLL_INTERVAL = 0.1


# -- scale ----------------------------------------------------------------------------------------


def scale() -> float:
    """The multiplier of every count, from ADVERSARIAL_SCALE."""
    raw = os.environ.get(SCALE_ENV, "1")
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{SCALE_ENV} must be a number, not {raw!r}") from None
    if value <= 0:
        raise ValueError(f"{SCALE_ENV} must be positive, not {raw!r}")
    return value


def scaled(count: int) -> int:
    """``count`` times the scale, at least 1."""
    return max(1, round(count * scale()))


class _BoundedAdapter(HTTPAdapter):
    """Gives every request REQUEST_TIMEOUT unless it names its own: requests waits forever by
    default, and a hung server must fail a scenario, not stall it."""

    def send(self, request: PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = REQUEST_TIMEOUT
        return super().send(request, **kwargs)


def http_session() -> requests.Session:
    """A requests session that talks to loopback directly (no proxy from the environment), each
    request bounded in time."""
    session = requests.Session()
    session.trust_env = False
    adapter = _BoundedAdapter()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


@dataclass
class Traffic:
    """Counts the answers of every session it made: a scenario's requests and its 5xx."""

    answered: int = 0
    server_errors: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def session(self) -> requests.Session:
        session = http_session()
        session.hooks["response"].append(self._count)
        return session

    def _count(self, response: requests.Response, *args: object, **kwargs: object) -> None:
        with self._lock:
            self.answered += 1
            self.server_errors += response.status_code >= 500


# -- gunicorn -------------------------------------------------------------------------------------

WorkerClass = Literal["sync", "gthread"]


class ServerFailed(RuntimeError):
    """A server did not come up (or went away); the message ends with the tail of its log."""


@dataclass(frozen=True)
class ServerSpec:
    """What to serve and how: a WSGI app spec as gunicorn takes it and its worker model."""

    app: str
    """For example ``example_app:create_app()``."""
    workers: int = 2
    worker_class: WorkerClass = "sync"
    threads: int = 1
    """Threads per worker; gthread only."""
    ready_path: str = "/"
    """A path that answers 200 once a worker serves the app."""


@dataclass
class GunicornServer:
    spec: ServerSpec
    port: int
    log: Path
    process: subprocess.Popen[bytes]

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def alive(self) -> bool:
        return self.process.poll() is None

    def ready_workers(self) -> int:
        """How many workers have loaded the app so far (restarted workers count again)."""
        try:
            return self.log.read_text(errors="replace").count(READY_MARKER)
        except OSError:
            return 0

    def log_tail(self) -> str:
        return tail(self.log)

    def stop(self) -> None:
        """SIGTERM to the process group (master and workers), SIGKILL if they linger."""
        _stop_group(self.process)


def start_gunicorn(spec: ServerSpec, env: Mapping[str, str], log_dir: Path) -> GunicornServer:
    """Start gunicorn on a free loopback port without waiting for it (``wait_until_ready``)."""
    port = free_port()
    log = log_dir / f"gunicorn-{port}.log"
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "--config",
        "python:tests.adversarial.gunicorn_hooks",
        "--bind",
        f"{HOST}:{port}",
        "--workers",
        str(spec.workers),
        "--worker-class",
        spec.worker_class,
        "--threads",
        str(spec.threads),
        "--timeout",
        "60",
        "--graceful-timeout",
        "5",
        "--log-level",
        "info",  # the workers' ready lines are info
        "--error-logfile",
        str(log),
        "--chdir",
        str(ROOT),
        spec.app,
    ]
    process = subprocess.Popen(
        command,
        # This checkout's package before any installed copy (an editable install may point
        # at another checkout of the repository).
        env={**os.environ, **env, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group, so stop() reaches every worker
    )
    return GunicornServer(spec, port, log, process)


def wait_until_ready(server: GunicornServer, timeout: float = START_TIMEOUT) -> None:
    """Return once every worker has loaded the app and the ready path answers 200.

    Raises ``ServerFailed`` if gunicorn exits first (a worker that fails to boot halts it) or
    nothing is ready within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    with http_session() as session:
        while True:
            if not server.alive():
                raise ServerFailed(
                    f"gunicorn {server.spec.app} exited with {server.process.returncode} "
                    f"before it was ready\n{server.log_tail()}"
                )
            if server.ready_workers() >= server.spec.workers:
                try:
                    response = session.get(server.url(server.spec.ready_path), timeout=5)
                    if response.status_code == 200:
                        return
                    last = f"HTTP {response.status_code}"
                except requests.RequestException as exc:
                    last = str(exc)
            if time.monotonic() > deadline:
                raise ServerFailed(
                    f"gunicorn {server.spec.app} not ready after {timeout:.0f} s ({last}; "
                    f"{server.ready_workers()} of {server.spec.workers} workers loaded)\n"
                    f"{server.log_tail()}"
                )
            time.sleep(POLL_INTERVAL)


@contextmanager
def gunicorn_servers(
    specs: Sequence[ServerSpec], env: Mapping[str, str], log_dir: Path
) -> Iterator[list[GunicornServer]]:
    """Several gunicorn servers started at once on one configuration (the same database), ready
    when the block begins and stopped when it ends, whatever happens."""
    servers: list[GunicornServer] = []
    try:
        for spec in specs:
            servers.append(start_gunicorn(spec, env, log_dir))
        for server in servers:
            wait_until_ready(server)
        yield servers
    finally:
        for server in servers:
            server.stop()


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=STOP_TIMEOUT)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with suppress(ProcessLookupError):  # it may have exited in between
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


# -- load -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One request of a load run, on behalf of ``user``."""

    user: str
    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass
class LoadResult:
    statuses: dict[str, Counter[int]]
    """Per user: how many answers of each HTTP status."""
    unanswered: dict[str, int]
    """Per user: requests that got no HTTP answer (connection refused or reset, timeout)."""
    unsent: int
    """Jobs not sent because the run's time limit was reached first."""
    seconds: float
    without_retry_after: int = 0
    """Answers of 503 without a ``Retry-After`` header (a client cannot tell when to retry)."""

    @property
    def sent(self) -> int:
        return sum(sum(c.values()) for c in self.statuses.values()) + sum(self.unanswered.values())

    @property
    def server_errors(self) -> int:
        return sum(n for c in self.statuses.values() for status, n in c.items() if status >= 500)


def run_load(jobs: Sequence[Job], *, clients: int, time_limit: float) -> LoadResult:
    """Send ``jobs`` from ``clients`` threads, each with its own ``requests.Session``.

    Bounded: every job is sent at most once, and no job is started after ``time_limit`` seconds
    (the rest are counted as ``unsent``).
    """
    lock = threading.Lock()
    pending = iter(jobs)
    statuses: dict[str, Counter[int]] = {}
    unanswered: Counter[str] = Counter()
    started = time.monotonic()
    deadline = started + time_limit
    unsent = 0
    without_retry_after = [0]

    def next_job() -> Job | None:
        nonlocal unsent
        with lock:
            job = next(pending, None)
            if job is not None and time.monotonic() > deadline:
                unsent += 1 + sum(1 for _ in pending)
                return None
            return job

    def client() -> None:
        with http_session() as session:
            while (job := next_job()) is not None:
                try:
                    response = session.request(
                        job.method, job.url, headers=dict(job.headers), timeout=REQUEST_TIMEOUT
                    )
                except requests.RequestException:
                    with lock:
                        unanswered[job.user] += 1
                    continue
                with lock:
                    statuses.setdefault(job.user, Counter())[response.status_code] += 1
                    if response.status_code == 503 and "Retry-After" not in response.headers:
                        without_retry_after[0] += 1

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    # Each request is bounded by REQUEST_TIMEOUT, so every client ends soon after the deadline.
    join_deadline = deadline + REQUEST_TIMEOUT * 2
    for thread in threads:
        thread.join(timeout=max(0.0, join_deadline - time.monotonic()))
    if any(thread.is_alive() for thread in threads):
        raise RuntimeError("a load client did not finish; requests are hanging past their timeout")
    return LoadResult(
        statuses, dict(unanswered), unsent, time.monotonic() - started, without_retry_after[0]
    )


def interleaved_jobs(
    sent_per_user: Mapping[str, int],
    servers: Sequence[GunicornServer],
    path: str,
    headers_for: Mapping[str, Mapping[str, str]],
    *,
    seed: int = 0,
) -> list[Job]:
    """``sent_per_user[user]`` POSTs to ``path`` per user, spread over ``servers`` in turn and
    shuffled (seeded: a failing run can be replayed), so each user's requests race one another
    on every server at once."""
    jobs = [
        Job(user, "POST", servers[n % len(servers)].url(path), headers_for[user])
        for user, count in sent_per_user.items()
        for n in range(count)
    ]
    random.Random(seed).shuffle(jobs)
    return jobs


# -- invariants -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class UsageRecord:
    """What the database holds for one user and metric, read directly from the billing tables."""

    counter_used: int
    """Sum of billing_usage_counters.used over every period."""
    events: int
    """Number of billing_usage_events rows."""
    event_amount: int
    daily_total: int
    """Sum of billing_usage_daily.total."""
    current_subscriptions: int
    """billing_subscriptions rows without ended_at: exactly one for a user who was served."""


def usage_records(engine: Engine, metric: str, users: Sequence[str]) -> dict[str, UsageRecord]:
    accounts = [personal_account_id(user) for user in users]

    def per_user(query: Select[Any]) -> dict[str, int]:
        # Keyed back by user: each user's rows are their personal account's.
        return {
            str(personal_user_id(row[0])): int(row[1] or 0) for row in connection.execute(query)
        }

    with engine.connect() as connection:
        counters = per_user(
            select(usage_counters.c.account_id, func.sum(usage_counters.c.used))
            .where(usage_counters.c.metric == metric, usage_counters.c.account_id.in_(accounts))
            .group_by(usage_counters.c.account_id)
        )
        events = per_user(
            select(usage_events.c.account_id, func.count())
            .where(usage_events.c.metric == metric, usage_events.c.account_id.in_(accounts))
            .group_by(usage_events.c.account_id)
        )
        amounts = per_user(
            select(usage_events.c.account_id, func.sum(usage_events.c.amount))
            .where(usage_events.c.metric == metric, usage_events.c.account_id.in_(accounts))
            .group_by(usage_events.c.account_id)
        )
        daily = per_user(
            select(usage_daily.c.account_id, func.sum(usage_daily.c.total))
            .where(usage_daily.c.metric == metric, usage_daily.c.account_id.in_(accounts))
            .group_by(usage_daily.c.account_id)
        )
        current = per_user(
            select(subscriptions.c.account_id, func.count())
            .where(subscriptions.c.ended_at.is_(None), subscriptions.c.account_id.in_(accounts))
            .group_by(subscriptions.c.account_id)
        )
    return {
        user: UsageRecord(
            counters.get(user, 0),
            events.get(user, 0),
            amounts.get(user, 0),
            daily.get(user, 0),
            current.get(user, 0),
        )
        for user in users
    }


@dataclass(frozen=True)
class QuotaCheck:
    violations: list[str]
    lost: int
    """Requests whose outcome the database does not show: unanswered ones, plus the difference
    between the successes clients saw and the charges recorded (either way)."""


def check_quota_invariants(
    result: LoadResult,
    sent_per_user: Mapping[str, int],
    limit: int,
    records: Mapping[str, UsageRecord],
) -> QuotaCheck:
    """Per user: every request answered, only 200 or 429, and successes = min(sent, limit) =
    counter = events = daily total, with one current subscription."""
    violations: list[str] = []
    lost = 0
    if result.unsent:
        violations.append(f"{result.unsent} requests not sent before the time limit")
    for user, sent in sent_per_user.items():
        statuses = result.statuses.get(user, Counter())
        record = records[user]
        unanswered = result.unanswered.get(user, 0)
        successes = statuses.get(200, 0)
        expected = min(sent, limit)
        lost += unanswered + abs(successes - record.counter_used)
        problems = []
        if unanswered:
            problems.append(f"{unanswered} unanswered")
        others = {status: n for status, n in statuses.items() if status not in (200, 429)}
        if others:
            problems.append(f"unexpected statuses {others}")
        figures = {
            "successes": successes,
            "counter": record.counter_used,
            "events": record.events,
            "event amounts": record.event_amount,
            "daily total": record.daily_total,
        }
        wrong = {name: value for name, value in figures.items() if value != expected}
        if wrong:
            problems.append(f"expected {expected} everywhere, got {wrong}")
        if record.current_subscriptions != 1:
            problems.append(f"{record.current_subscriptions} current subscriptions")
        if problems:
            violations.append(f"{user} (sent {sent}, limit {limit}): {'; '.join(problems)}")
    return QuotaCheck(violations, lost)


def user_rows(
    engine: Engine, user: str, tables: Sequence[Table]
) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of ``user`` in each of ``tables`` (keyed by ``user_id``, or by ``account_id``:
    the user's personal account), sorted: two snapshots are equal exactly when nothing of the
    user's changed in between."""
    with engine.connect() as connection:
        return {
            table.name: sorted(
                (
                    tuple(row)
                    for row in connection.execute(select(table).where(_owned_by(table, user)))
                ),
                key=repr,
            )
            for table in tables
        }


def _owned_by(table: Table, user: str) -> Any:
    if "account_id" in table.c:
        return table.c.account_id == personal_account_id(user)
    return table.c.user_id == user


def row_counts(engine: Engine, tables: Sequence[Table]) -> dict[str, int]:
    """How many rows each table has: a cheap check that a refused request added nothing."""
    with engine.connect() as connection:
        return {
            table.name: connection.execute(select(func.count()).select_from(table)).scalar_one()
            for table in tables
        }


# -- servers of a test's own, to stop, kill or freeze ---------------------------------------------


@dataclass
class DedicatedPostgres:
    """A PostgreSQL cluster for one test alone, which it may stop and start again (an outage):
    the session's server (tests/support/servers.py) is shared by every test and must stay up."""

    bindir: Path
    base: Path
    server: PostgresServer

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def log(self) -> Path:
        return self.base / "server.log"

    def new_database(self, name: str) -> str:
        return self.server.new_database(name)

    def stop(self, mode: Literal["fast", "immediate"] = "immediate") -> None:
        """Stop the server; ``immediate`` is a crash (no clean shutdown), ``fast`` a clean stop."""
        stop = self._pg_ctl("-m", mode, "-w", "stop")
        if stop.returncode != 0:
            raise ServerFailed(f"pg_ctl stop failed: {stop.stderr}\n{tail(self.log)}")

    def start(self) -> None:
        """Start it again on the same port and data; return once it accepts connections."""
        timeout = str(int(START_TIMEOUT))
        start = self._pg_ctl("-l", str(self.log), "-w", "-t", timeout, "start")
        if start.returncode != 0:
            raise ServerFailed(f"PostgreSQL failed to start: {start.stderr}\n{tail(self.log)}")
        error = wait_for_postgres(
            self.server.host, self.server.port, self.server.user, START_TIMEOUT
        )
        if error is not None:
            raise ServerFailed(f"PostgreSQL does not accept connections: {error}\n{tail(self.log)}")

    def _pg_ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_pg_tool(self.bindir, self.base, "pg_ctl", "-D", str(self.data), *args)


@contextmanager
def dedicated_postgres() -> Iterator[DedicatedPostgres]:
    """initdb and start a cluster in a temporary directory; stop and delete it at the end.

    The caller has made sure the binaries exist (the ``postgresql_server`` fixture fails or skips
    when they do not).
    """
    bindir = pg_bindir()
    if bindir is None:
        raise ServerFailed("PostgreSQL server binaries not found (install postgresql)")
    # Not a directory private to root: the postgres user runs the server when we are root.
    base = Path(tempfile.mkdtemp(prefix="adversarial-postgresql-"))
    try:
        if os.geteuid() == 0:
            shutil.chown(base, "postgres", "postgres")
        init = run_pg_tool(bindir, base, "initdb", "-D", str(base / "data"), *INITDB_ARGS)
        if init.returncode != 0:
            raise ServerFailed(f"initdb failed:\n{init.stdout}{init.stderr}")
        cluster = DedicatedPostgres(bindir, base, PostgresServer(HOST, free_port()))
        settings = {
            **PG_SETTINGS,
            # A stop may be a crash (immediate): commits must reach the WAL before they are
            # acknowledged, or the cluster would come back without them. fsync can stay off, as
            # the kernel keeps what the server wrote when only the server dies.
            "synchronous_commit": "on",
            "max_connections": "100",
            "port": str(cluster.server.port),
            "unix_socket_directories": f"'{base}'",
        }
        with (cluster.data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
        cluster.start()
        try:
            yield cluster
        finally:
            cluster._pg_ctl("-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(base, ignore_errors=True)


@dataclass
class DedicatedRedis:
    """A Redis server for one test alone: kill it, restart it on the same port, or freeze it
    (SIGSTOP: connections stay open and nothing answers, like a hung host) and thaw it."""

    binary: str
    base: Path
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    @property
    def log(self) -> Path:
        return self.base / "server.log"

    def start(self) -> None:
        args = ["--bind", HOST, "--port", str(self.port), "--save", "", "--appendonly", "no"]
        args += ["--daemonize", "no", "--dir", str(self.base)]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [self.binary, *args], stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + START_TIMEOUT
        with redis.Redis(host=HOST, port=self.port, socket_timeout=5) as client:
            while True:
                try:
                    if client.ping():
                        return
                except redis.ConnectionError:
                    pass
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise ServerFailed(f"redis-server failed to start\n{tail(self.log)}")
                time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: the server vanishes at once, as in a crash (nothing is persisted)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=STOP_TIMEOUT)

    def restart(self) -> None:
        self.kill()
        self.start()

    def freeze(self) -> None:
        self._signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self._signal(signal.SIGCONT)

    def _signal(self, signum: signal.Signals) -> None:
        if self.process is None or self.process.poll() is not None:
            raise ServerFailed("redis-server is not running")
        self.process.send_signal(signum)


@contextmanager
def dedicated_redis() -> Iterator[DedicatedRedis]:
    """A Redis without persistence in a temporary directory; killed and deleted at the end."""
    binary = os.environ.get("REDIS_SERVER") or shutil.which("redis-server")
    if not binary:
        raise ServerFailed("redis-server not found (install redis-server or set REDIS_SERVER)")
    base = Path(tempfile.mkdtemp(prefix="adversarial-redis-"))
    server = DedicatedRedis(binary, base, free_port())
    try:
        server.start()
        yield server
    finally:
        if server.process is not None and server.process.poll() is None:
            server.thaw()  # a stopped process ignores SIGTERM until it runs again
            server.kill()
        shutil.rmtree(base, ignore_errors=True)
