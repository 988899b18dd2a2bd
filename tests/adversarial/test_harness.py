"""The harness itself: its checker must see what it is there to see, its fault controls must
really break and mend their servers, and its report must add up. A harness that passes
everything is worth nothing, so these run with the scenarios."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import psycopg
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.adversarial.harness import (
    DedicatedPostgres,
    DedicatedRedis,
    LoadResult,
    UsageRecord,
    check_quota_invariants,
)
from tests.adversarial.report import Figures, load, main, markdown_table, record

LIMIT = 20


def result(
    statuses: dict[str, dict[int, int]], unanswered: dict[str, int] | None = None
) -> LoadResult:
    return LoadResult(
        {user: Counter(counts) for user, counts in statuses.items()}, unanswered or {}, 0, 1.0
    )


def exact(used: int) -> UsageRecord:
    return UsageRecord(used, used, used, used, 1)


def test_the_checker_accepts_a_run_where_everything_adds_up() -> None:
    check = check_quota_invariants(
        result({"under": {200: 8}, "over": {200: 20, 429: 70}}),
        {"under": 8, "over": 90},
        LIMIT,
        {"under": exact(8), "over": exact(20)},
    )

    assert check.violations == []
    assert check.lost == 0


@pytest.mark.parametrize(
    ("statuses", "record", "unanswered", "expected_lost"),
    [
        pytest.param({200: 20, 429: 10}, UsageRecord(19, 19, 19, 19, 1), 0, 1, id="a lost charge"),
        pytest.param({200: 21, 429: 9}, exact(21), 0, 0, id="overspent"),
        pytest.param({200: 20, 500: 10}, exact(20), 0, 0, id="server errors"),
        pytest.param({200: 20, 429: 9}, exact(20), 1, 1, id="an unanswered request"),
        pytest.param({200: 20, 429: 10}, UsageRecord(20, 21, 21, 20, 1), 0, 0, id="an extra event"),
        pytest.param({200: 20, 429: 10}, UsageRecord(20, 20, 20, 19, 1), 0, 0, id="daily off"),
        pytest.param({200: 20, 429: 10}, UsageRecord(20, 20, 20, 20, 2), 0, 0, id="two current"),
    ],
)
def test_the_checker_reports_each_kind_of_violation(
    statuses: dict[int, int], record: UsageRecord, unanswered: int, expected_lost: int
) -> None:
    check = check_quota_invariants(
        result({"user": statuses}, {"user": unanswered}), {"user": 30}, LIMIT, {"user": record}
    )

    assert len(check.violations) == 1
    assert check.violations[0].startswith("user (sent 30, limit 20)")
    assert check.lost == expected_lost


def test_a_dedicated_postgresql_stops_and_starts_again(own_postgres: DedicatedPostgres) -> None:
    url = own_postgres.new_database("outage")
    server = own_postgres.server

    def connect() -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(
            host=server.host,
            port=server.port,
            user=server.user,
            dbname="outage",
            connect_timeout=2,
            autocommit=True,
        )

    with connect() as connection:
        connection.execute("CREATE TABLE kept (id int)")
        connection.execute("INSERT INTO kept VALUES (1)")

    own_postgres.stop()  # a crash: no clean shutdown
    with pytest.raises(psycopg.OperationalError):
        connect()
    own_postgres.start()

    with connect() as connection:  # back, with what was committed before the crash
        assert connection.execute("SELECT id FROM kept").fetchall() == [(1,)]
    assert url.endswith("/outage")


def redis_client(port: int, timeout: float) -> redis.Redis:
    """A client that gives up at once: redis-py otherwise retries with back-off."""
    return redis.Redis(
        host="127.0.0.1", port=port, socket_timeout=timeout, retry=Retry(NoBackoff(), 0)
    )


def test_a_dedicated_redis_can_be_frozen_thawed_killed_and_restarted(
    own_redis: DedicatedRedis,
) -> None:
    client = redis_client(own_redis.port, timeout=0.5)
    assert client.ping()

    own_redis.freeze()
    with pytest.raises(redis.TimeoutError):
        client.ping()  # connected, but nobody answers: a hung server
    own_redis.thaw()
    assert redis_client(own_redis.port, timeout=5).ping()

    own_redis.kill()
    with pytest.raises(redis.ConnectionError):
        redis_client(own_redis.port, timeout=0.5).ping()
    own_redis.start()
    assert redis_client(own_redis.port, timeout=5).ping()


def test_the_report_prints_one_row_per_scenario_adding_up_its_variants(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    load_test = "tests/adversarial/test_load.py::test_two_servers"
    fuzz_test = "tests/adversarial/test_bad_input.py::test_x"
    sheets = [
        Figures(load_test, "requests", 2000, 0, 0, 12.3, "passed"),
        Figures(f"{fuzz_test}[a]", "cases", 40, 1, 2, 3.0, "failed"),
        Figures(f"{fuzz_test}[b]", "cases", 40, 0, 0, 1.5, "passed"),
    ]
    for sheet in sheets:
        record(sheet, tmp_path)

    assert [f.scenario for f in load(tmp_path)] == sorted(s.scenario for s in sheets)
    assert json.loads(next(tmp_path.glob("*test_load*")).read_text())["count"] == 2000
    assert main([str(tmp_path)]) == 0
    table = capsys.readouterr().out
    assert table.strip() == markdown_table(load(tmp_path))
    assert len(table.strip().splitlines()) == 2 + 2
    assert (
        f"| load: two servers | 2,000 requests | 0 | 0 | 12.3 | passed "
        f"| `.venv/bin/pytest '{load_test}' -q` |"
    ) in table
    assert (
        f"| bad input: x (2 variants) | 80 cases | 1 | 2 | 4.5 | 1 of 2 not passed "
        f"| `.venv/bin/pytest '{fuzz_test}' -q` |"
    ) in table
