"""Helpers for throwaway servers on loopback, shared by the test session (tests/support/servers.py)
and the benchmarks (bench/servers.py). Standard library only, so the benchmarks need no pytest."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

__all__ = ["HOST", "free_port", "pg_bindir", "run_pg_tool", "tail", "wait_for_postgres"]

HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def tail(log: Path, lines: int = 30) -> str:
    """The end of a server log, for error messages."""
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(no log: {exc})"


def pg_bindir() -> Path | None:
    """PG_BINDIR, else the newest /usr/lib/postgresql/*/bin, else the directory of pg_ctl."""
    if env := os.environ.get("PG_BINDIR"):
        return Path(env) if (Path(env) / "pg_ctl").is_file() else None
    candidates = [
        d
        for d in Path("/usr/lib/postgresql").glob("*/bin")
        if (d / "pg_ctl").is_file() and (d / "initdb").is_file() and d.parent.name.isdigit()
    ]
    if candidates:
        return max(candidates, key=lambda d: int(d.parent.name))
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).resolve().parent if pg_ctl else None


def run_pg_tool(bindir: Path, cwd: Path, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a PostgreSQL tool; it refuses to run as root, so root runs it as `postgres`."""
    command = [str(bindir / tool), *args]
    if os.geteuid() == 0:
        command = ["runuser", "-u", "postgres", "--", *command]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)


def wait_for_postgres(host: str, port: int, user: str, timeout: float) -> str | None:
    """Wait until PostgreSQL accepts TCP connections (``pg_ctl -w`` only saw the postmaster up);
    None once it does, else the last connection error when ``timeout`` seconds have passed."""
    import psycopg  # the postgresql extra: only the callers that start PostgreSQL need it

    deadline = time.monotonic() + timeout
    while True:
        try:
            with psycopg.connect(host=host, port=port, user=user, connect_timeout=5):
                return None
        except psycopg.OperationalError as exc:
            if time.monotonic() > deadline:
                return str(exc)
        time.sleep(0.1)
