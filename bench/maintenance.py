"""Maintenance over many subscriptions: ``flask billing maintenance`` timed in a process of its own.

The database gets ``count`` current subscriptions, bulk-loaded with ``INSERT ... SELECT
generate_series``, of which ``lapsed`` are paid ones whose period is over and the rest free ones,
which never lapse. Three scenarios: a tenth lapsed (more than a month of expiries when a tenth of
the users pay monthly: a daily run sees far fewer), all of them (the worst case: every one must be
ended and replaced by a free one), and all of them with two runs at once. The CLI command a
deployment schedules runs in child processes, whose resident memory is sampled from ``/proc``
while they work: flat memory means the batches do not accumulate.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import text

from .app import ENV_DATABASE_URL, billing, create_app, db

# The default catalog (BILLING_PLANS unset): "free" is the default, "professional" lapses.
PAID_PLAN = "professional"
FREE_PLAN = "free"
USER_PREFIX = "maint-"
SAMPLE_SECONDS = 0.2
ROOT = Path(__file__).resolve().parent.parent


def create_maintenance_app() -> Any:
    """The app the CLI runs in: the bench host with the default plans (``--app`` target)."""
    return create_app(config={"BILLING_PLANS": None})


def load_subscriptions(url: str, count: int, lapsed: int) -> float:
    """``count`` current subscriptions: ``lapsed`` paid ones that expired during the last day,
    the others free; seconds taken."""
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
                    "(user_id, plan_code, status, started_at, expires_at, period_anchor) "
                    "SELECT :prefix || g, "
                    "CASE WHEN g <= :lapsed THEN :paid ELSE :free END, 'active', "
                    "now() - interval '31 days', "
                    "CASE WHEN g <= :lapsed THEN now() - (g % 86400) * interval '1 second' END, "
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


def run_cli(url: str, processes: int = 1) -> dict[str, Any]:
    """``flask billing maintenance`` in ``processes`` child processes started together (they share
    the work: each batch locks its rows with SKIP LOCKED): wall time until the last ends, their
    outputs, and the RSS of the largest over time."""
    env = {**os.environ, ENV_DATABASE_URL: url, "PYTHONPATH": str(ROOT)}
    command = [
        sys.executable,
        "-m",
        "flask",
        "--app",
        "bench.maintenance:create_maintenance_app()",
        "billing",
        "maintenance",
    ]
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
        texts = [output.read_text().strip() for output in outputs]
    for child, text_ in zip(children, texts, strict=True):
        if child.returncode != 0:
            raise RuntimeError(f"maintenance exited {child.returncode}: {text_[-2000:]}")
    return {
        "processes": processes,
        "seconds": round(seconds, 1),
        "output": " / ".join(texts),
        "rss_samples_kib": samples,
    }


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


def maintenance(url: str, count: int, lapsed: int, processes: int = 1) -> dict[str, Any]:
    """One scenario on an empty database at ``url``."""
    result: dict[str, Any] = {"subscriptions": count, "lapsed": lapsed}
    result["load_seconds"] = load_subscriptions(url, count, lapsed)
    run = run_cli(url, processes)
    result.update(run)
    result.update(_rss_summary(run["rss_samples_kib"]))
    result.update(verify(url, count))
    ended = sum(int(n) for n in re.findall(r"free plan: (\d+)", run["output"]))
    if ended != lapsed:  # more would mean a subscription ended twice, fewer one left behind
        raise RuntimeError(f"the runs report {ended} ended subscriptions, not {lapsed}")
    result["ended_by_runs"] = ended
    result["lapsed_per_second"] = round(lapsed / run["seconds"]) if run["seconds"] else None
    return result
