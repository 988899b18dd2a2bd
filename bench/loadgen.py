"""Running ``wrk`` against one route and reading its numbers.

Two variants of every route:

- ``hot``: every request is the same user (``X-User: hot``): one counter row takes every write.
- ``spread``: each request names a random user of 1,000 (``X-User: u1`` .. ``u1000``), picked by a
  small Lua ``request()`` function. That function costs the client some CPU on the same 2 cores,
  so a spread route is only compared with the spread ``/bare``.

Both variants use a Lua ``done()`` that prints one JSON line with the request count, the duration,
the errors and the latency percentiles (microseconds, from wrk's own histogram, the same numbers
that ``--latency`` prints), so nothing is scraped from wrk's human-readable output.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

MARKER = "BENCH_RESULT "

_DONE_LUA = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%s{"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"mean":%.1f,"stdev":%.1f,"max":%d,"p50":%d,"p90":%d,"p95":%d,"p99":%d}}\\n',
    "MARKER", summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.stdev, latency.max,
    latency:percentile(50), latency:percentile(90), latency:percentile(95),
    latency:percentile(99)))
end
""".replace('"MARKER"', f'"{MARKER}"')

# wrk gives each thread its own Lua state; setup() numbers them so their random streams differ.
_SPREAD_LUA = """
local counter = 0
setup = function(thread)
  counter = counter + 1
  thread:set("thread_number", counter)
end
init = function(args)
  math.randomseed(os.time() * 1000 + (thread_number or 0) * 7919)
  users = tonumber(args[1]) or 1000
end
request = function()
  return wrk.format(nil, nil, {["X-User"] = "u" .. math.random(1, users)})
end
"""

VARIANTS = ("hot", "spread")


@dataclass(frozen=True)
class WrkResult:
    requests: int
    duration_s: float
    rps: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    errors: dict[str, int]
    """connect/read/write/timeout socket errors, and status: non-2xx/3xx answers."""

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    @property
    def failed(self) -> int:
        """Requests that did not get a good answer (non-2xx, timeouts, write errors).

        ``read`` errors are left out: gunicorn's sync workers close every connection after the
        answer, and wrk may count a close that races its next write as a read error.
        """
        e = self.errors
        return e.get("status", 0) + e.get("timeout", 0) + e.get("connect", 0) + e.get("write", 0)


def write_scripts(directory: Path) -> dict[str, Path]:
    """The Lua scripts of both variants, written into ``directory``."""
    scripts = {"hot": _DONE_LUA, "spread": _SPREAD_LUA + _DONE_LUA}
    paths = {}
    for variant, source in scripts.items():
        path = directory / f"wrk-{variant}.lua"
        path.write_text(source)
        paths[variant] = path
    return paths


def wrk_version() -> str:
    binary = shutil.which("wrk")
    if not binary:
        return "not installed"
    out = subprocess.run([binary, "-v"], capture_output=True, text=True, check=False)
    return (out.stdout + out.stderr).splitlines()[0].strip() if (out.stdout + out.stderr) else "?"


def run_wrk(
    url: str,
    variant: str,
    scripts: dict[str, Path],
    *,
    threads: int,
    connections: int,
    duration: float,
    users: int = 1000,
    timeout: float = 10.0,
) -> WrkResult:
    """One wrk run; raises ``RuntimeError`` when wrk fails or prints no result."""
    command = [
        "wrk",
        "--latency",
        "-t",
        str(threads),
        "-c",
        str(connections),
        "-d",
        f"{max(1, round(duration))}s",
        "--timeout",
        f"{round(timeout)}s",
        "-s",
        str(scripts[variant]),
    ]
    if variant == "hot":
        command += ["-H", "X-User: hot"]
    command += [url, "--", str(users)]
    proc = subprocess.run(
        command, capture_output=True, text=True, check=False, timeout=duration + timeout + 60
    )
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith(MARKER)), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr or proc.stdout}")
    raw = json.loads(line[len(MARKER) :])
    seconds = raw["duration_us"] / 1e6
    lat = raw["latency_us"]
    return WrkResult(
        requests=raw["requests"],
        duration_s=round(seconds, 3),
        rps=round(raw["requests"] / seconds, 1) if seconds else 0.0,
        p50_ms=lat["p50"] / 1000,
        p90_ms=lat["p90"] / 1000,
        p95_ms=lat["p95"] / 1000,
        p99_ms=lat["p99"] / 1000,
        mean_ms=round(lat["mean"] / 1000, 3),
        max_ms=lat["max"] / 1000,
        errors=raw["errors"],
    )
