"""How much of the machine other processes took while we measured (Linux ``/proc``).

Throughput on a 2-core machine moves with whatever else runs on it. Each wrk run records the share
of all CPUs used by processes that are not ours (this process and its descendants: gunicorn, its
workers, wrk, Redis; and the PostgreSQL postmaster with its backends), so a result measured on a
busy machine can be recognised as such, in the table and in the JSON.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class Snapshot:
    at: float
    busy_ticks: int
    our_ticks: int


def _busy_ticks() -> int:
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return user + nice + system + irq + softirq + steal


def _processes() -> dict[int, tuple[int, int, int]]:
    """pid -> (parent pid, own ticks, reaped children's ticks)."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        rest = raw.rsplit(")", 1)[1].split()  # the command name may hold spaces
        # rest[0] is the state (field 3); utime, stime, cutime, cstime are fields 14..17
        ppid = int(rest[1])
        own = int(rest[11]) + int(rest[12])
        children = int(rest[13]) + int(rest[14])
        table[int(entry.name)] = (ppid, own, children)
    return table


class CpuMeter:
    """Snapshots of the machine's busy time and of the part that our processes account for."""

    def __init__(self, extra_roots: Callable[[], list[int]] | None = None) -> None:
        self._extra_roots = extra_roots or (lambda: [])
        self.available = Path("/proc/stat").exists()

    def snapshot(self) -> Snapshot | None:
        if not self.available:
            return None
        try:
            table = _processes()
            roots = {os.getpid(), *self._extra_roots()}
            children: dict[int, list[int]] = {}
            for pid, (ppid, _, _) in table.items():
                children.setdefault(ppid, []).append(pid)
            ours, stack = set(), [r for r in roots if r in table]
            while stack:
                pid = stack.pop()
                if pid not in ours:
                    ours.add(pid)
                    stack.extend(children.get(pid, []))
            # Reaped children's time counts too: a finished wrk is in our cutime.
            our_ticks = sum(table[p][1] + table[p][2] for p in ours)
            return Snapshot(time.monotonic(), _busy_ticks(), our_ticks)
        except (OSError, ValueError, IndexError):
            return None

    @staticmethod
    def others_share(before: Snapshot | None, after: Snapshot | None) -> float | None:
        """Share (0..1) of all CPUs used by other processes between the two snapshots."""
        if before is None or after is None or after.at <= before.at:
            return None
        foreign = (after.busy_ticks - before.busy_ticks) - (after.our_ticks - before.our_ticks)
        capacity = (after.at - before.at) * TICKS * (os.cpu_count() or 1)
        return round(max(0.0, foreign / capacity), 3)

    def wait_until_quiet(
        self,
        limit_s: float,
        share: float = 0.1,
        window_s: float = 5.0,
        report: Callable[[str], None] = print,
    ) -> float | None:
        """Wait up to ``limit_s`` until others use less than ``share`` of the CPUs over a window."""
        deadline = time.monotonic() + limit_s
        last = None
        while True:
            before = self.snapshot()
            time.sleep(window_s)
            last = self.others_share(before, self.snapshot())
            if last is None or last < share:
                return last
            if time.monotonic() >= deadline:
                report(
                    f"the machine is still busy (others use {last:.0%} of the CPUs); measuring anyway"
                )
                return last
            report(f"others use {last:.0%} of the CPUs; waiting for a quieter moment...")
