"""gunicorn settings the harness loads with ``--config python:tests.adversarial.gunicorn_hooks``.

A worker that answered one request is not proof that all of them booted: gunicorn halts the whole
server when any worker fails to load the app, possibly just after another one answered. Each worker
logs a line once its app is loaded, so the harness can wait until every worker is up.
"""

from __future__ import annotations

from typing import Any

READY_MARKER = "adversarial-harness: worker ready"


def post_worker_init(worker: Any) -> None:
    # gunicorn has no type hints; `worker` is a gunicorn.workers.base.Worker.
    worker.log.info("%s pid=%s", READY_MARKER, worker.pid)
