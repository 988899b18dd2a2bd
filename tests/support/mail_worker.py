"""A host app whose maintenance scheduler sends the notification emails through flask-mailman to
an SMTP server on loopback, run in a process of its own (``python -m tests.support.mail_worker``)
for the tests that kill it or stop its database mid-batch.

Configured by environment variables: ``BILLING_TEST_DATABASE_URL``, ``BILLING_TEST_SMTP_PORT``,
``BILLING_TEST_EMAIL_BATCH`` (10) and ``BILLING_TEST_LEASE_SECONDS`` (3). It ticks every second
until SIGTERM.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from flask import Flask
from flask_mailman import Mail

from flask_profile_billing.state import get_state
from tests.support.host_app import create_host_app
from tests.support.loopback import HOST


def user_info(user: Any) -> dict[str, Any]:
    """Every user's address is ``<id>@example.com``: a recipient names its notification's user."""
    return {"email": f"{user.id}@example.com"}


def mail_config(smtp_port: int) -> dict[str, Any]:
    """What a host sets for flask-mailman to send through the SMTP server at ``smtp_port``."""
    return {
        "MAIL_BACKEND": "smtp",  # not the in-memory one a testing app gets
        "MAIL_SERVER": HOST,
        "MAIL_PORT": smtp_port,
        "MAIL_USE_TLS": False,
        "MAIL_TIMEOUT": 30,
        "MAIL_DEFAULT_SENDER": "billing@example.com",
        "BILLING_USER_INFO": user_info,
        "BILLING_EMAIL_PROFILE_URL": "https://app.example.com/profile",
    }


def create_app() -> Flask:
    app = create_host_app(
        os.environ["BILLING_TEST_DATABASE_URL"],
        {
            **mail_config(int(os.environ["BILLING_TEST_SMTP_PORT"])),
            "BILLING_SCHEDULER_INTERVAL_SECONDS": 1,
            "BILLING_SCHEDULER_JITTER_SECONDS": 0,
            "BILLING_SCHEDULER_LEASE_SECONDS": int(
                os.environ.get("BILLING_TEST_LEASE_SECONDS", "3")
            ),
            "BILLING_EMAIL_BATCH_SIZE": int(os.environ.get("BILLING_TEST_EMAIL_BATCH", "10")),
        },
    )
    Mail(app)
    return app


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    application = create_app()
    with application.app_context():
        print("worker-ready", os.getpid(), flush=True)
        get_state(application).scheduler.run_forever()
