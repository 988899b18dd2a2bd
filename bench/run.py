"""The benchmark suite: ``python -m bench.run [--quick]`` (``make bench``).

Starts PostgreSQL and Redis on loopback, then gunicorn (sync workers, 127.0.0.1) once per database
configuration, and runs ``wrk`` against every route, the routes taking turns within each round, for
several rounds; prints medians and ratios, then the in-process measurements (guard overhead per
call, statements per request, usage statistics over millions of events, the profile read) and the
maintenance run over a million subscriptions and the data migration to accounts, and writes
everything to ``bench/results/<timestamp>.json`` and ``bench/results/latest.json``.

Every server it starts is stopped when it ends, on errors and Ctrl-C (SIGINT, SIGTERM) too.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from contextlib import ExitStack
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from . import accounts, inprocess, loadgen, machine, maintenance, migration, page, report, servers
from .app import ENV_DATABASE_URL, ENV_REDIS_URL, HOT_USER, create_app, db, setup_database

BENCH_DIR = Path(__file__).resolve().parent
busy_budget = {"left": 0.0}  # seconds left for re-measuring runs disturbed by other processes
ROUTES = [
    "bare",
    "limiter/memory",
    "limiter/redis",
    "sql/update",
    "sql/update-insert",
    "guard/quota",
    "guard/feature",
    "guard/capacity",
]
# SQLite runs the routes that compare @requires_quota with the hand-written SQL on SQLite; the
# others do not touch the database (bare, limiters) or are measured on PostgreSQL.
SQLITE_ROUTES = ["bare", "sql/update", "sql/update-insert", "guard/quota"]
CONFIGS = ("postgresql", "sqlite")


def _env(name: str, default: Any, kind: type = int) -> Any:
    value = os.environ.get(name)
    return default if value in (None, "") else kind(value)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.run",
        description="Benchmark the guards against bare, Flask-Limiter and hand-written SQL routes.",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="a short trial: 3 s per run, 1 round, 200,000 events, fewer calls",
    )
    p.add_argument("--duration", type=float, help="seconds per wrk run (BENCH_DURATION, 10)")
    p.add_argument(
        "--rounds", type=int, help="rounds; medians are taken over them (BENCH_ROUNDS, 3)"
    )
    p.add_argument("--threads", type=int, help="wrk threads (BENCH_THREADS, 2)")
    p.add_argument("--connections", type=int, help="wrk connections (BENCH_CONNECTIONS, 16)")
    p.add_argument("--workers", type=int, help="gunicorn sync workers (BENCH_WORKERS, 2)")
    p.add_argument("--warmup", type=float, help="seconds of wrk warm-up per route and variant (2)")
    p.add_argument(
        "--events",
        type=int,
        help="usage events to load for the statistics and the data migration "
        "(BENCH_EVENTS, 2,000,000)",
    )
    p.add_argument(
        "--subscriptions",
        type=int,
        help="subscriptions for the maintenance runs: a tenth, then all of them lapsed, "
        "then all with two runs at once, then the notification sweep with a tenth due "
        "(BENCH_SUBSCRIPTIONS, 1,000,000); also the users of the data migration",
    )
    p.add_argument("--calls", type=int, help="calls per endpoint for p50/p95 in process (30)")
    p.add_argument("--iterations", type=int, help="calls per view for the overhead (500)")
    p.add_argument(
        "--configs",
        default=os.environ.get("BENCH_CONFIGS", ",".join(CONFIGS)),
        help="database configurations for the HTTP runs: postgresql,sqlite",
    )
    p.add_argument(
        "--routes",
        default=os.environ.get("BENCH_ROUTES"),
        help="only these routes (comma-separated, e.g. bare,guard/quota)",
    )
    p.add_argument(
        "--variants",
        default=os.environ.get("BENCH_VARIANTS", "hot,spread"),
        help="hot (one user), spread (1,000 users), or both",
    )
    p.add_argument(
        "--pg-fsync",
        choices=["on", "off"],
        default=os.environ.get("BENCH_PG_FSYNC", "on"),
        help="PostgreSQL durability: fsync and synchronous_commit (on: realistic)",
    )
    p.add_argument(
        "--skip",
        default=os.environ.get("BENCH_SKIP", ""),
        help=(
            "parts to leave out: http,statements,page,overhead,accounts,usage,maintenance,migration"
        ),
    )
    p.add_argument(
        "--wait-idle",
        type=float,
        default=_env("BENCH_WAIT_IDLE", 0.0, float),
        help="wait up to this many seconds for other processes to leave the CPUs "
        "(under 10%% used by others over 5 s) before measuring (0: do not wait)",
    )
    p.add_argument(
        "--max-others",
        type=float,
        default=_env("BENCH_MAX_OTHERS", 0.2, float),
        help="a wrk run during which other processes used more than this share of the "
        "CPUs is measured again, after waiting for a quiet moment (0.2)",
    )
    p.add_argument(
        "--retry-busy",
        type=int,
        default=_env("BENCH_RETRY_BUSY", 2, int),
        help="how many times a run on a busy machine is measured again (2; 0: never)",
    )
    p.add_argument(
        "--busy-budget",
        type=float,
        default=_env("BENCH_BUSY_BUDGET", 300.0, float),
        help="seconds the whole run may spend waiting for quiet and measuring again (300)",
    )
    p.add_argument("--output-dir", type=Path, default=BENCH_DIR / "results")
    p.add_argument(
        "--label",
        default=os.environ.get("BENCH_LABEL", ""),
        help="a note stored in the JSON (what this run is about)",
    )
    args = p.parse_args(argv)
    quick = args.quick
    defaults = {
        "duration": ("BENCH_DURATION", 3 if quick else 10, float),
        "rounds": ("BENCH_ROUNDS", 1 if quick else 3, int),
        "threads": ("BENCH_THREADS", 2, int),
        "connections": ("BENCH_CONNECTIONS", 16, int),
        "workers": ("BENCH_WORKERS", 2, int),
        "warmup": ("BENCH_WARMUP", 1 if quick else 2, float),
        "events": ("BENCH_EVENTS", 200_000 if quick else 2_000_000, int),
        "subscriptions": ("BENCH_SUBSCRIPTIONS", 100_000 if quick else 1_000_000, int),
        "calls": ("BENCH_CALLS", 10 if quick else 30, int),
        "iterations": ("BENCH_ITERATIONS", 200 if quick else 500, int),
    }
    for name, (env, default, kind) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, default if quick else _env(env, default, kind))
    args.configs = [c for c in args.configs.split(",") if c]
    unknown = set(args.configs) - set(CONFIGS)
    if unknown:
        p.error(f"unknown configs: {sorted(unknown)}")
    args.routes = [r.strip("/") for r in args.routes.split(",")] if args.routes else None
    args.variants = [v for v in args.variants.split(",") if v]
    if set(args.variants) - set(loadgen.VARIANTS):
        p.error(f"variants are {loadgen.VARIANTS}")
    args.skip = {s for s in args.skip.split(",") if s}
    return args


def say(message: str = "") -> None:
    print(message, flush=True)


# -- the HTTP runs -------------------------------------------------------------------------------


def routes_for(config: str, args: argparse.Namespace) -> list[str]:
    routes = ROUTES if config == "postgresql" else SQLITE_ROUTES
    if args.routes:
        routes = [r for r in routes if r in args.routes]
    return routes


def _check_route(server: servers.Gunicorn, route: str) -> str | None:
    """None when the route answers 200 for a hot and a spread user; else what went wrong."""
    for user in (HOT_USER, "u1"):
        try:
            status, body = servers.http_get(server.host, server.port, "/" + route, {"X-User": user})
        except OSError as exc:
            return f"{type(exc).__name__}: {exc}"
        if status != 200:
            return f"HTTP {status}: {body[:200].decode(errors='replace')}"
    return None


def http_runs(
    config: str,
    url: str,
    redis_url: str,
    args: argparse.Namespace,
    scripts: dict[str, Path],
    workdir: Path,
    meter: machine.CpuMeter,
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Every (route, variant) of ``config`` for ``args.rounds`` rounds, taking turns."""
    say(f"\n== HTTP: {config} ==")
    started = time.monotonic()
    app = create_app(url)
    setup_database(app)
    with app.app_context():
        db.engine.dispose()
    say(f"tables, plans and 1,001 users' subscriptions ready ({time.monotonic() - started:.1f} s)")
    env = {ENV_DATABASE_URL: url, ENV_REDIS_URL: redis_url}
    runs: list[dict[str, Any]] = []
    unavailable: dict[str, str] = {}
    with servers.gunicorn(env, workers=args.workers, log_dir=workdir) as server:
        routes = []
        for route in routes_for(config, args):
            problem = _check_route(server, route)
            if problem:
                unavailable[route] = problem
                say(f"  /{route}: not measured ({problem})")
            else:
                routes.append(route)
        combos = [(route, variant) for route in routes for variant in args.variants]

        def wrk(route: str, variant: str, seconds: float) -> loadgen.WrkResult:
            return loadgen.run_wrk(
                f"{server.base_url}/{route}",
                variant,
                scripts,
                threads=args.threads,
                connections=args.connections,
                duration=seconds,
            )

        for route, variant in combos:  # warm-up: connections, caches, first-use code paths
            try:
                wrk(route, variant, args.warmup)
            except RuntimeError as exc:
                say(f"  warm-up of /{route} {variant} failed: {exc}")
        for round_number in range(args.rounds):
            # The routes take turns; each round starts at another place in the list, so a slow
            # drift of the machine (another process, a checkpoint) does not always hit the same one.
            shift = (round_number * len(combos)) // max(1, args.rounds)
            order = combos[shift:] + combos[:shift]
            for n, (route, variant) in enumerate(order, 1):
                record: dict[str, Any] = {
                    "config": config,
                    "route": route,
                    "variant": variant,
                    "round": round_number + 1,
                    "load_1min_before": round(os.getloadavg()[0], 2),
                }
                try:
                    attempt = 1
                    while True:
                        before = meter.snapshot()
                        result = wrk(route, variant, args.duration)
                        others = meter.others_share(before, meter.snapshot())
                        if others is None or others <= args.max_others:
                            break
                        if attempt > args.retry_busy or busy_budget["left"] <= 0:
                            break
                        say(
                            f"  /{route} {variant}: other processes used {others:.0%} of the "
                            f"CPUs meanwhile; measuring again ({attempt}/{args.retry_busy})"
                        )
                        spent = time.monotonic()
                        meter.wait_until_quiet(
                            min(60, busy_budget["left"]), share=args.max_others, report=say
                        )
                        busy_budget["left"] -= time.monotonic() - spent + args.duration
                        attempt += 1
                    record["result"] = result.as_dict()
                    record["others_cpu_share"] = others
                    record["attempts"] = attempt
                    flag = f"  FAILED {result.failed}" if result.failed else ""
                    busy = "" if others is None else f"  others {others:4.0%}"
                    say(
                        f"  [{config} {round_number + 1}/{args.rounds} {n:>2}/{len(order)}] "
                        f"/{route:<18} {variant:<6} {result.rps:>8,.0f} req/s  "
                        f"p50 {result.p50_ms:6.1f} ms  p99 {result.p99_ms:6.1f} ms{busy}{flag}"
                    )
                except (RuntimeError, subprocess.TimeoutExpired) as exc:
                    record["error"] = str(exc)
                    say(f"  /{route} {variant}: wrk failed: {exc}")
                runs.append(record)
    return runs, unavailable


# -- everything else -------------------------------------------------------------------------------


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "wrk": loadgen.wrk_version()}
    for dist in (
        "flask-profile-billing",
        "Flask",
        "SQLAlchemy",
        "psycopg",
        "gunicorn",
        "Flask-Limiter",
        "limits",
        "redis",
        "Werkzeug",
    ):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    return versions


def _git() -> dict[str, Any]:
    """The commit measured (read-only git commands; no optional locks, so nothing is written)."""
    root = BENCH_DIR.parent

    def git(*args: str) -> str:
        out = subprocess.run(
            ["git", "--no-optional-locks", *args],
            cwd=root,
            capture_output=True,
            text=True,
            check=False,
        )
        return out.stdout.strip()

    changed = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "HEAD") or None, "dirty": bool(changed)}


def _source_digest() -> str:
    """A fingerprint of the package's source: it tells whether the code changed during a run
    (the package is installed in editable mode, and gunicorn's workers import it when they start)."""
    import hashlib

    digest = hashlib.sha256()
    package = BENCH_DIR.parent / "src" / "flask_profile_billing"
    for path in sorted(package.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(package)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _sqlite_facts() -> dict[str, str]:
    import sqlite3

    return {
        "version": sqlite3.sqlite_version,
        "journal_mode": "delete (default)",
        "synchronous": "full (default)",
    }


def _step(name: str, results: dict[str, Any], fn: Any, *args: Any) -> Any:
    """Run one part; a failure is reported and recorded, and the other parts still run."""
    try:
        return fn(*args)
    except Exception as exc:
        say(f"  {name} failed: {exc}")
        traceback.print_exc()
        results.setdefault("errors", {})[name] = f"{type(exc).__name__}: {exc}"
        return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    busy_budget["left"] = args.busy_budget
    for tool in ("wrk",):
        if "http" not in args.skip and not shutil.which(tool):
            say(f"{tool} is not installed (apt-get install {tool})")
            return 2

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)

    started_at = datetime.now(UTC)
    t0 = time.monotonic()
    stamp = started_at.strftime("%Y%m%dT%H%M%SZ")
    results: dict[str, Any] = {
        "schema": 1,
        "label": args.label,
        "started_at": started_at.isoformat(),
        "git": _git(),
        "source_digest": _source_digest(),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_1min_at_start": round(os.getloadavg()[0], 2),
        },
        "versions": _versions(),
        "settings": {
            "quick": args.quick,
            "duration_s": args.duration,
            "rounds": args.rounds,
            "wrk_threads": args.threads,
            "wrk_connections": args.connections,
            "gunicorn_workers": args.workers,
            "gunicorn_worker_class": "sync",
            "warmup_s": args.warmup,
            "events": args.events,
            "subscriptions": args.subscriptions,
            "calls": args.calls,
            "iterations": args.iterations,
            "variants": args.variants,
            "configs": args.configs,
            "pg_fsync": args.pg_fsync,
            "sqlite": _sqlite_facts(),
            "max_others": args.max_others,
            "retry_busy": args.retry_busy,
            "busy_budget_s": args.busy_budget,
        },
    }
    say(
        f"flask-profile-billing bench {stamp}  (commit {str(results['git']['commit'])[:10]}"
        f"{', uncommitted changes' if results['git']['dirty'] else ''})"
    )
    say(
        f"wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s --latency, "
        f"{args.rounds} round(s), gunicorn {args.workers} sync workers, all on 127.0.0.1"
    )
    say(
        f"PostgreSQL fsync/synchronous_commit: {args.pg_fsync}; SQLite: journal_mode=delete, "
        f"synchronous=full (defaults); load average now {os.getloadavg()[0]:.2f} on "
        f"{os.cpu_count()} CPUs"
    )
    if os.getloadavg()[0] > 0.5:
        say("note: the machine is not idle; other processes share the CPUs with this run")

    workdir = Path(tempfile.mkdtemp(prefix="bench-run-"))
    exit_code = 0
    try:
        with ExitStack() as stack:
            pg = stack.enter_context(servers.postgres(fsync=args.pg_fsync == "on"))
            rds = stack.enter_context(servers.redis_server())
            results["versions"]["postgresql-server"] = pg.version
            results["versions"]["redis-server"] = rds.version
            results["settings"]["postgresql"] = pg.settings

            meter = machine.CpuMeter(lambda: [p for p in (pg.pid,) if p])
            if args.wait_idle > 0:
                say(f"waiting up to {args.wait_idle:g} s for the machine to be quiet...")
                share = meter.wait_until_quiet(args.wait_idle, report=say)
                results["machine"]["others_cpu_share_before_start"] = share
            if "http" not in args.skip:
                scripts = loadgen.write_scripts(workdir)
                runs: list[dict[str, Any]] = []
                unavailable: dict[str, dict[str, str]] = {}
                for config in args.configs:
                    if config == "postgresql":
                        url = pg.new_database("bench_http")
                    else:
                        url = f"sqlite:///{workdir}/bench_http.sqlite3"
                    done = _step(
                        f"http {config}",
                        results,
                        http_runs,
                        config,
                        url,
                        rds.url,
                        args,
                        scripts,
                        workdir,
                        meter,
                    )
                    if done:
                        runs.extend(done[0])
                        unavailable[config] = done[1]
                results["http_runs"] = runs
                results["http"] = report.aggregate(runs)
                results["http_unavailable"] = unavailable

            if "statements" not in args.skip:
                say("\n== statements per request (one request, after warm-up) ==")
                statements: dict[str, Any] = {}
                url = pg.new_database("bench_statements")
                pg.set_database_option("bench_statements", "log_statement", "all")
                app = create_app(url)
                setup_database(app, [HOT_USER])
                statements["postgresql"] = _step(
                    "statements postgresql", results, inprocess.statements, app, pg.log
                ) or {"error": "failed"}
                app = create_app(f"sqlite:///{workdir}/bench_statements.sqlite3")
                setup_database(app, [HOT_USER])
                statements["sqlite"] = _step(
                    "statements sqlite", results, inprocess.statements, app
                ) or {"error": "failed"}
                results["statements"] = statements
                say(report.statements_table(statements))

            if "page" not in args.skip:
                say("\n== the profile page (GET /profile/, in process) ==")
                pages = {
                    "postgresql": _step(
                        "page postgresql",
                        results,
                        page.profile_page,
                        pg.new_database("bench_page"),
                        args.calls,
                    ),
                    "sqlite": _step(
                        "page sqlite",
                        results,
                        page.profile_page,
                        f"sqlite:///{workdir}/bench_page.sqlite3",
                        args.calls,
                    ),
                }
                results["profile_page"] = pages
                for measured in pages.values():
                    if measured:
                        say(page.summary(measured))

            if "overhead" not in args.skip:
                say(
                    f"\n== in-process time per call ({args.iterations} calls per view, "
                    f"view called directly in a test_request_context) =="
                )
                overhead: dict[str, Any] = {}
                for config in ("sqlite", "postgresql"):
                    if config == "postgresql":
                        url = pg.new_database("bench_overhead")
                    else:
                        url = f"sqlite:///{workdir}/bench_overhead.sqlite3"
                    app = create_app(url)
                    setup_database(app, [HOT_USER])
                    overhead[config] = _step(
                        f"overhead {config}", results, inprocess.overhead, app, args.iterations
                    ) or {"error": "failed"}
                    with app.app_context():
                        db.engine.dispose()
                results["in_process"] = overhead
                say(report.overhead_table(overhead))

            if "accounts" not in args.skip:
                say(
                    f"\n== accounts: the hand-written statements, the personal and the team "
                    f"guard ({args.iterations} calls per view, in process) =="
                )
                by_database: dict[str, Any] = {}
                for config in ("postgresql", "sqlite"):
                    if config == "postgresql":
                        url = pg.new_database("bench_accounts")
                        logged: str | None = pg.new_database("bench_accounts_logged")
                        pg.set_database_option("bench_accounts_logged", "log_statement", "all")
                        server_log: Path | None = pg.log
                    else:
                        url = f"sqlite:///{workdir}/bench_accounts.sqlite3"
                        logged, server_log = None, None
                    measured = _step(
                        f"accounts {config}",
                        results,
                        accounts.measure,
                        url,
                        args.iterations,
                        logged,
                        server_log,
                    )
                    by_database[config] = measured or {"error": "failed"}
                    if measured:
                        say(accounts.summary(config, measured))
                results["accounts"] = by_database

            if "usage" not in args.skip:
                say(
                    f"\n== usage statistics over {args.events:,} events (PostgreSQL), "
                    f"and GET /api/profile/me =="
                )
                usage = _step(
                    "usage",
                    results,
                    inprocess.usage_and_profile,
                    pg.new_database("bench_usage"),
                    args.events,
                    args.calls,
                )
                if usage:
                    results["usage_stats"] = usage
                    say(_usage_text(usage))

            if "maintenance" not in args.skip:
                runs_by_scenario: dict[str, Any] = {}
                total = args.subscriptions
                for scenario in maintenance.SCENARIOS:
                    say(f"\n== {maintenance.describe(scenario, total)} ==")
                    ran = _step(
                        f"maintenance {scenario}",
                        results,
                        maintenance.run_scenario,
                        pg.new_database,
                        scenario,
                        total,
                        meter,
                    )
                    if ran:
                        runs_by_scenario[scenario] = ran
                        say(maintenance.summary(ran))
                results["maintenance"] = runs_by_scenario

            if "migration" not in args.skip:
                say(f"\n== {migration.describe(args.subscriptions, args.events)} ==")
                migrated = _step(
                    "migration",
                    results,
                    migration.migrate,
                    pg,
                    args.subscriptions,
                    args.events,
                    meter,
                )
                if migrated:
                    results["migration"] = migrated
                    say(migration.summary(migrated))
    except KeyboardInterrupt:
        say("\ninterrupted: servers stopped, partial results written")
        exit_code = 130
    except SystemExit as exc:
        say(f"\nstopped by a signal: servers stopped, partial results written ({exc.code})")
        exit_code = int(exc.code or 1)
    except servers.ServerError as exc:
        say(f"\na server did not start: {exc}")
        results.setdefault("errors", {})["servers"] = str(exc)
        exit_code = 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    results["finished_at"] = datetime.now(UTC).isoformat()
    results["wall_seconds"] = round(time.monotonic() - t0, 1)
    results["machine"]["load_1min_at_end"] = round(os.getloadavg()[0], 2)
    results["source_digest_at_end"] = _source_digest()
    changed = results["source_digest_at_end"] != results["source_digest"]
    results["source_changed_during_run"] = changed
    if results.get("http"):
        say(
            "\n== HTTP: medians over rounds (ratios: req/s of the route / req/s of the baseline, "
            "same database and variant) =="
        )
        say(report.http_table(results["http"]))
        for config, missing in results.get("http_unavailable", {}).items():
            for route, problem in missing.items():
                say(f"not measured on {config}: /{route} ({problem})")
    if changed:
        say(
            "\nWARNING: the package's source changed during the run: the parts measured before and "
            "after the change measured different code"
        )
    path = write_results(results, args.output_dir, stamp)
    say(
        f"\nwall time {results['wall_seconds'] / 60:.1f} min; results: {path} "
        f"(and {path.parent / 'latest.json'})"
    )
    if results.get("errors"):
        say(f"errors: {json.dumps(results['errors'], indent=1)}")
        exit_code = exit_code or 1
    return exit_code


def _usage_text(usage: dict[str, Any]) -> str:
    lines = [
        f"loaded {usage['events']:,} events in {usage['load_seconds']} s "
        f"(user has {usage['events_of_user']:,})"
    ]
    if usage.get("rollup_table"):
        lines.append(
            f"daily rollup {usage.get('rollup_rows', '?')} rows, rebuilt from them in "
            f"{usage.get('rollup_rebuild_seconds')} s"
        )
    for key, title in (
        ("usage_30d", "GET /api/subscription/usage?days=30"),
        ("usage_365d", "GET /api/subscription/usage?days=365"),
        ("profile_me_cached", "GET /api/profile/me (cache on, default)"),
        ("profile_me_uncached", "GET /api/profile/me (BILLING_PROFILE_CACHE_SECONDS=0)"),
    ):
        m = usage.get(key, {})
        if m.get("available"):
            lines.append(f"{title:<58} p50 {m['p50_ms']:8.1f} ms   p95 {m['p95_ms']:8.1f} ms")
        else:
            lines.append(f"{title:<58} not available (HTTP {m.get('status')})")
    plan = usage.get("usage_365d_plan") or []
    if plan:
        lines.append("plan of the 365-day query:")
        lines.extend("  " + line for line in plan)
    return "\n".join(lines)


def write_results(results: dict[str, Any], directory: Path, stamp: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{stamp}.json"
    text = json.dumps(results, indent=2, default=str) + "\n"
    path.write_text(text)
    (directory / "latest.json").write_text(text)
    return path


if __name__ == "__main__":
    sys.exit(main())
