"""Maintenance over many subscriptions: ``flask billing maintenance`` timed in a process of its own.

The database gets ``count`` current subscriptions, bulk-loaded with ``INSERT ... SELECT
generate_series``, of which ``lapsed`` are paid ones whose period is over and the rest free ones,
which never lapse. Three scenarios: a tenth lapsed (more than a month of expiries when a tenth of
the users pay monthly: a daily run sees far fewer), all of them (the worst case: every one must be
ended and replaced by a free one), and all of them with two runs at once. A fourth measures the
notification sweep: ``count`` users of whom a tenth have a paid period ending within
BILLING_NOTIFY_EXPIRING_DAYS, so the run's work is claiming their ``expiring`` notices. The CLI
command a deployment schedules runs in child processes, whose resident memory is sampled from
``/proc`` while they work: flat memory means the batches do not accumulate.

``python -m bench.maintenance`` runs these scenarios alone, on a throwaway PostgreSQL of its own
(``--help``); ``python -m bench.run`` runs them as its ``maintenance`` part.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import text

from flask_profile_billing import signals

from .app import ENV_DATABASE_URL, billing, create_app, db
from .machine import TICKS, CpuMeter, Snapshot

# The default catalog (BILLING_PLANS unset): "free" is the default, "professional" lapses.
PAID_PLAN = "professional"
FREE_PLAN = "free"
USER_PREFIX = "maint-"
SAMPLE_SECONDS = 0.2
ROOT = Path(__file__).resolve().parent.parent


def create_maintenance_app(receiver: bool = False) -> Any:
    """The app the CLI runs in: the bench host with the default plans (``--app`` target); with
    ``receiver``, a receiver of ``subscription_expired`` connected, as a host that sends its own
    email on expiry would have (the batches then read what they ended back into Python)."""
    app = create_app(config={"BILLING_PLANS": None})
    if receiver:
        signals.subscription_expired.connect(_expired, sender=app, weak=False)
    return app


def _expired(sender: Any, **_: Any) -> None:
    """What a host's receiver costs at least: being called."""


# Paid ones lapsed during the last day, the others free.
LAPSED_EXPIRY = "now() - (g % 86400) * interval '1 second'"
# Paid ones ending from an hour to six days and an hour from now: within the default seven days of
# BILLING_NOTIFY_EXPIRING_DAYS, spread over them.
EXPIRING_EXPIRY = "now() + interval '1 hour' + (g % (6 * 86400)) * interval '1 second'"


def load_subscriptions(url: str, count: int, lapsed: int, expiry: str = LAPSED_EXPIRY) -> float:
    """``count`` current subscriptions: ``lapsed`` paid ones whose period ends at ``expiry`` (SQL
    over the row number ``g``; by default during the last day), the others free; seconds taken."""
    app = create_app(url, {"BILLING_PLANS": None})
    with app.app_context():
        db.create_all()
        billing.create_all()
        billing.seed_plans()
        started = time.monotonic()
        with db.engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO billing_subscriptions "
                    "(account_id, plan_code, status, started_at, expires_at, period_anchor) "
                    "SELECT 'user:' || :prefix || g, "
                    "CASE WHEN g <= :lapsed THEN :paid ELSE :free END, 'active', "
                    "now() - interval '31 days', "
                    f"CASE WHEN g <= :lapsed THEN {expiry} END, "
                    "now() - interval '31 days' "
                    "FROM generate_series(1, :count) AS g"
                ),
                {
                    "prefix": USER_PREFIX,
                    "paid": PAID_PLAN,
                    "free": FREE_PLAN,
                    "lapsed": lapsed,
                    "count": count,
                },
            )
            connection.execute(text("ANALYZE billing_subscriptions"))
        seconds = time.monotonic() - started
        db.engine.dispose()
    return round(seconds, 1)


def _rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, ValueError):
        return None
    return None


def run_cli(
    url: str, processes: int = 1, meter: CpuMeter | None = None, receiver: bool = False
) -> dict[str, Any]:
    """``flask billing maintenance`` in ``processes`` child processes started together (they share
    the work: each batch locks its rows with SKIP LOCKED): wall time until the last ends, their
    outputs, the RSS of the largest over time, the load average before and after, and with a
    ``meter`` the share of the CPUs that other processes took meanwhile."""
    # The package of this tree first: an installed (editable) copy elsewhere is not what is measured.
    path = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
    env = {**os.environ, ENV_DATABASE_URL: url, "PYTHONPATH": path}
    command = [
        sys.executable,
        "-m",
        "flask",
        "--app",
        f"bench.maintenance:create_maintenance_app(receiver={receiver})",
        "billing",
        "maintenance",
    ]
    load_before = os.getloadavg()[0]
    before = meter.snapshot() if meter else None
    usage_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as logs:
        outputs = [Path(logs, f"{n}.out") for n in range(processes)]
        children = []
        for output in outputs:
            with output.open("w") as sink:  # a file, not a pipe: nothing can block on a full pipe
                children.append(
                    subprocess.Popen(command, env=env, cwd=ROOT, stdout=sink, stderr=sink)
                )
        samples: list[tuple[float, int]] = []
        while any(child.poll() is None for child in children):
            sizes = [_rss_kib(child.pid) for child in children if child.poll() is None]
            known = [size for size in sizes if size is not None]
            if known:
                samples.append((round(time.monotonic() - started, 2), max(known)))
            time.sleep(SAMPLE_SECONDS)
        seconds = time.monotonic() - started
        after = meter.snapshot() if meter else None
        others = CpuMeter.others_share(before, after)
        load_after = os.getloadavg()[0]
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        texts = [output.read_text().strip() for output in outputs]
    for child, text_ in zip(children, texts, strict=True):
        if child.returncode != 0:
            raise RuntimeError(f"maintenance exited {child.returncode}: {text_[-2000:]}")
    return {
        "processes": processes,
        "seconds": round(seconds, 1),
        "output": " / ".join(texts),
        # The 1-minute load average when the run started and when it ended (the run itself
        # keeps about one CPU busy), and the share of all CPUs that other processes used.
        "load_average": [round(load_before, 2), round(load_after, 2)],
        "others_cpu_share": others,
        # CPU time, which moves less than wall time with what else runs: the maintenance
        # processes', and with a meter the database's (its server processes, meanwhile).
        "cli_cpu_seconds": round(
            usage.ru_utime + usage.ru_stime - usage_before.ru_utime - usage_before.ru_stime,
            1,
        ),
        "database_cpu_seconds": _database_cpu(before, after, usage, usage_before),
        "rss_samples_kib": samples,
    }


def _database_cpu(
    before: Snapshot | None, after: Snapshot | None, usage: Any, usage_before: Any
) -> float | None:
    """CPU seconds of the meter's other roots (the database server) between the snapshots: all
    of ours minus the maintenance processes (and this sampling process, a few percent)."""
    if before is None or after is None:
        return None
    ours = (after.our_ticks - before.our_ticks) / TICKS
    cli = usage.ru_utime + usage.ru_stime - usage_before.ru_utime - usage_before.ru_stime
    return round(max(0.0, ours - cli), 1)


def _rss_summary(samples: list[tuple[float, int]]) -> dict[str, Any]:
    """RSS at the end of each tenth of the run, the peak, and the growth over the second half
    (after imports and the first batches: what a leak per batch would show as)."""
    if not samples:
        return {}
    values = [rss for _, rss in samples]
    tenths = [values[min(len(values) - 1, len(values) * k // 10)] for k in range(1, 10)]
    half = values[len(values) // 2 :]
    return {
        "rss_by_tenth_mib": [round(v / 1024, 1) for v in [*tenths, values[-1]]],
        "rss_peak_mib": round(max(values) / 1024, 1),
        "rss_growth_second_half_mib": round((max(half) - min(half)) / 1024, 1),
    }


def verify(url: str, count: int) -> dict[str, int]:
    """What the run left: lapsed current subscriptions (0 expected) and free ones (``count``)."""
    app = create_app(url, {"BILLING_PLANS": None})
    with app.app_context(), db.engine.connect() as connection:
        lapsed = connection.execute(
            text(
                "SELECT count(*) FROM billing_subscriptions "
                "WHERE ended_at IS NULL AND expires_at <= now()"
            )
        ).scalar_one()
        free = connection.execute(
            text(
                "SELECT count(*) FROM billing_subscriptions "
                "WHERE ended_at IS NULL AND plan_code = :free AND user_id LIKE :prefix"
            ),
            {"free": FREE_PLAN, "prefix": f"{USER_PREFIX}%"},
        ).scalar_one()
        db.engine.dispose()
    if lapsed or free != count:
        raise RuntimeError(f"maintenance left {lapsed} lapsed and {free} of {count} free")
    return {"lapsed_after": int(lapsed), "free_after": int(free)}


def maintenance(
    url: str,
    count: int,
    lapsed: int,
    processes: int = 1,
    meter: CpuMeter | None = None,
    receiver: bool = False,
) -> dict[str, Any]:
    """One scenario on an empty database at ``url``."""
    result: dict[str, Any] = {"subscriptions": count, "lapsed": lapsed, "receiver": receiver}
    result["load_seconds"] = load_subscriptions(url, count, lapsed)
    run = run_cli(url, processes, meter, receiver)
    result.update(run)
    result.update(_rss_summary(run["rss_samples_kib"]))
    result.update(verify(url, count))
    ended = sum(int(n) for n in re.findall(r"free plan: (\d+)", run["output"]))
    if ended != lapsed:  # more would mean a subscription ended twice, fewer one left behind
        raise RuntimeError(f"the runs report {ended} ended subscriptions, not {lapsed}")
    result["ended_by_runs"] = ended
    result["lapsed_per_second"] = round(lapsed / run["seconds"]) if run["seconds"] else None
    return result


def verify_sweep(url: str, due: int) -> dict[str, int]:
    """What the sweep left: one ``expiring`` notification per due subscription."""
    app = create_app(url, {"BILLING_PLANS": None})
    with app.app_context(), db.engine.connect() as connection:
        claimed = connection.execute(
            text(
                "SELECT count(*), count(DISTINCT account_id) FROM billing_notifications "
                "WHERE kind = 'expiring'"
            )
        ).one()
        db.engine.dispose()
    if tuple(claimed) != (due, due):
        raise RuntimeError(f"the sweep claimed {tuple(claimed)}, not {due} once each")
    return {"expiring_claimed": int(claimed[0])}


def notification_sweep(
    url: str, count: int, due: int, meter: CpuMeter | None = None
) -> dict[str, Any]:
    """``count`` users on an empty database at ``url``, ``due`` of them with a paid period
    ending within the notice window (none lapsed): the run claims their ``expiring`` notices."""
    result: dict[str, Any] = {"subscriptions": count, "due": due}
    result["load_seconds"] = load_subscriptions(url, count, due, EXPIRING_EXPIRY)
    run = run_cli(url, 1, meter)
    result.update(run)
    result.update(_rss_summary(run["rss_samples_kib"]))
    reported = sum(int(n) for n in re.findall(r"claimed: expiring (\d+)", run["output"]))
    if reported != due:
        raise RuntimeError(f"the run reports {reported} expiring notices, not {due}")
    result.update(verify_sweep(url, due))
    result["due_per_second"] = round(due / run["seconds"]) if run["seconds"] else None
    return result


SCENARIOS = ("tenth_lapsed", "all_lapsed", "all_lapsed_two_processes", "notification_sweep")
"""What ``bench.run`` measures."""
OPTIONAL_SCENARIOS = ("all_lapsed_with_receiver",)
"""Measured when asked for (``python -m bench.maintenance --scenarios ...``): all lapsed, with a
receiver of ``subscription_expired`` connected."""


def run_scenario(
    new_database: Any, scenario: str, total: int, meter: CpuMeter | None = None
) -> dict[str, Any]:
    """One of ``SCENARIOS`` over ``total`` subscriptions, on a fresh database from
    ``new_database(name)``."""
    url = new_database(f"bench_maintenance_{scenario}")
    if scenario == "notification_sweep":
        return notification_sweep(url, total, total // 10, meter)
    lapsed, processes = {
        "tenth_lapsed": (total // 10, 1),
        "all_lapsed": (total, 1),
        "all_lapsed_two_processes": (total, 2),
        "all_lapsed_with_receiver": (total, 1),
    }[scenario]
    receiver = scenario == "all_lapsed_with_receiver"
    return maintenance(url, total, lapsed, processes, meter, receiver)


def describe(scenario: str, total: int) -> str:
    if scenario == "notification_sweep":
        return (
            f"flask billing maintenance: the notification sweep over {total:,} users, "
            f"{total // 10:,} of them with an expiring paid period (PostgreSQL)"
        )
    lapsed = total // 10 if scenario == "tenth_lapsed" else total
    processes = 2 if scenario.endswith("two_processes") else 1
    receiver = ", a subscription_expired receiver" if scenario.endswith("receiver") else ""
    return (
        f"flask billing maintenance: {total:,} subscriptions, {lapsed:,} of them lapsed, "
        f"{processes} process(es) at once{receiver} (PostgreSQL)"
    )


def summary(run: dict[str, Any]) -> str:
    """The lines a scenario prints."""
    if "due" in run:
        rate = f"{run['due_per_second']:,} notices/s"
    else:
        rate = f"{run['lapsed_per_second']:,} lapsed subscriptions/s"
    return (
        f"loaded in {run['load_seconds']} s; maintenance took {run['seconds']} s ({rate}; "
        f"CPU: {run.get('cli_cpu_seconds')} s maintenance, {run.get('database_cpu_seconds')} s "
        f"database); "
        f"1-minute load average at its start and end {run.get('load_average')}, other "
        f"processes used {_percent(run.get('others_cpu_share'))} of the CPUs: {run['output']}\n"
        f"RSS by tenths of the run (MiB): {run.get('rss_by_tenth_mib')}; peak "
        f"{run.get('rss_peak_mib')} MiB, growth over the second half "
        f"{run.get('rss_growth_second_half_mib')} MiB"
    )


def _percent(share: float | None) -> str:
    return "?" if share is None else f"{share:.0%}"


def main(argv: list[str] | None = None) -> int:
    from . import servers

    parser = argparse.ArgumentParser(
        prog="python -m bench.maintenance",
        description="Time flask billing maintenance over many subscriptions on PostgreSQL.",
    )
    parser.add_argument("--subscriptions", type=int, default=1_000_000)
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"any of {','.join(SCENARIOS + OPTIONAL_SCENARIOS)} (default: {','.join(SCENARIOS)})",
    )
    parser.add_argument("--pg-fsync", choices=["on", "off"], default="on")
    parser.add_argument("--output", type=Path, help="write the results here as JSON")
    args = parser.parse_args(argv)
    chosen = [name for name in args.scenarios.split(",") if name]
    unknown = set(chosen) - set(SCENARIOS + OPTIONAL_SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {sorted(unknown)}")
    results: dict[str, Any] = {}
    with servers.postgres(fsync=args.pg_fsync == "on") as pg:
        meter = CpuMeter(lambda: [pid for pid in (pg.pid,) if pid])
        for scenario in chosen:
            print(f"\n== {describe(scenario, args.subscriptions)} ==", flush=True)
            ran = run_scenario(pg.new_database, scenario, args.subscriptions, meter)
            ran.pop("rss_samples_kib", None)
            results[scenario] = ran
            print(summary(ran), flush=True)
    if args.output:
        args.output.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
