"""The maintenance scheduler: an APScheduler 3 job that runs ``MaintenanceService.run_if_due``.

Two ways to run it:

- in every process that serves requests (BILLING_SCHEDULER_ENABLED): a ``BackgroundScheduler``
  started by the process's first request, not by ``init_app``. A thread started at import would not
  exist in the workers that ``gunicorn --preload`` forks from its master, and the Werkzeug
  reloader's parent process never serves a request, so it never starts one. A process forked after
  the start gets a scheduler of its own on its own first request. Each app has its own scheduler,
  stopped when the process exits;
- ``flask billing scheduler``: a ``BlockingScheduler`` in a process of its own that does nothing else.

Every tick runs in an app context. The job's lease in the database (``services.leases``) decides
which of any number of schedulers runs a tick, so a second one started by mistake costs a thread
and never a second effect. ``coalesce`` and no misfire grace: a tick that comes late (a busy
worker, a suspended machine) still runs, once; the first tick is at start, so a restart catches up
at once.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import threading
from datetime import UTC, datetime
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.interval import IntervalTrigger

from .maintenance import MaintenanceReport, MaintenanceService
from .runtime import Runtime

log = logging.getLogger(__name__)

JOB_ID = "flask-profile-billing-maintenance"


class MaintenanceScheduler:
    def __init__(self, runtime: Runtime, maintenance: MaintenanceService) -> None:
        self._runtime = runtime
        self._maintenance = maintenance
        self._lock = threading.Lock()
        self._background: Any = None
        self._started_in: int | None = None
        """The process the background scheduler runs in: a forked child must start its own."""
        self._exit_hook_registered = False

    @property
    def running(self) -> bool:
        """Whether this process runs the background scheduler."""
        return (
            self._started_in == os.getpid()
            and self._background is not None
            and bool(self._background.running)
        )

    def start_in_background(self) -> bool:
        """Start the background scheduler in this process unless it runs already; True when this
        call started it. Cheap when it runs: the serving process calls it on every request."""
        pid = os.getpid()
        if self._started_in == pid:
            return False
        with self._lock:
            if self._started_in == pid:
                return False
            # A scheduler inherited through fork has no thread here: it is replaced, not stopped.
            scheduler = self._build(BackgroundScheduler)
            scheduler.start()
            self._background = scheduler
            self._started_in = pid
            if not self._exit_hook_registered:
                atexit.register(self.shutdown)
                self._exit_hook_registered = True
        log.info("billing maintenance scheduler started", extra={"pid": pid})
        return True

    def shutdown(self) -> None:
        """Stop this process's background scheduler (a tick running now is not waited for: its
        lease runs out)."""
        with self._lock:
            scheduler, self._background = self._background, None
            started_in, self._started_in = self._started_in, None
        if scheduler is not None and started_in == os.getpid() and scheduler.running:
            scheduler.shutdown(wait=False)

    def run_forever(self) -> None:
        """Run the schedule in the foreground until interrupted (SIGINT or SIGTERM)."""
        scheduler = self._build(BlockingScheduler)

        def stop(signum: int, frame: Any) -> None:
            raise SystemExit(0)

        in_main_thread = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, stop) if in_main_thread else None
        try:
            scheduler.start()
        except (KeyboardInterrupt, SystemExit):
            pass
        finally:
            if in_main_thread:
                signal.signal(signal.SIGTERM, previous)
            if scheduler.running:
                scheduler.shutdown(wait=False)

    def tick(self) -> MaintenanceReport | None:
        """One tick: maintenance, if it is due and this process gets its lease. Never raises (a
        failed tick is logged and the next one tries again)."""
        try:
            with self._runtime.app.app_context():
                return self._maintenance.run_if_due()
        except Exception:
            log.exception("billing maintenance failed")
            return None

    def _build(self, kind: type[Any]) -> Any:
        settings = self._runtime.settings.maintenance
        scheduler = kind(
            executors={"default": ThreadPoolExecutor(max_workers=1)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone=UTC,
        )
        scheduler.add_job(
            self.tick,
            IntervalTrigger(
                seconds=settings.interval_seconds,
                jitter=settings.jitter_seconds or None,
                timezone=UTC,
            ),
            id=JOB_ID,
            name="flask-profile-billing maintenance",
            next_run_time=datetime.now(UTC),
            replace_existing=True,
        )
        return scheduler
