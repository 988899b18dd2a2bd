"""Who sends the notification emails: BILLING_EMAIL_SENDER, or the adapter of the mail extension
the host initialised (flask-mailman or Flask-Mail), looked up at each use so that a mail extension
set up after this one is found too. Both the notifications (whether a claimed notice waits for an
email) and the mail service (which sends) ask it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from flask import current_app

from ..domain.notifications import Notification
from .runtime import Runtime


@dataclass(frozen=True, slots=True)
class OutgoingEmail:
    """One rendered email, as a sender receives it."""

    to: str
    subject: str
    text: str
    html: str | None
    """None: text only."""
    from_address: str | None
    """BILLING_EMAIL_FROM, else the host's MAIL_DEFAULT_SENDER; None (a sender of the host's own
    only) when neither is set."""
    locale: str
    notification: Notification | None = None
    """The notification this email tells of; None for an invitation to a team account."""


@runtime_checkable
class EmailSender(Protocol):
    """Sends one email, or raises: then it is retried later. Any callable will do; one that also
    has ``batch()`` (a context manager yielding a send function, as the adapters below) sends each
    maintenance batch over one connection."""

    def __call__(self, email: OutgoingEmail, /) -> None: ...


SendOne = Callable[[OutgoingEmail], None]


class FlaskMailmanSender:
    """Sends through the host's flask-mailman (``app.extensions["mailman"]``), text with an HTML
    alternative."""

    def __call__(self, email: OutgoingEmail) -> None:
        with self.batch() as send:
            send(email)

    @contextmanager
    def batch(self) -> Iterator[SendOne]:
        mailman = importlib.import_module("flask_mailman")
        with current_app.extensions["mailman"].get_connection() as connection:

            def send(email: OutgoingEmail) -> None:
                message = mailman.EmailMultiAlternatives(
                    subject=email.subject,
                    body=email.text,
                    from_email=email.from_address,
                    to=[email.to],
                    connection=connection,
                )
                if email.html is not None:
                    message.attach_alternative(email.html, "text/html")
                message.send()

            yield send


class FlaskMailSender:
    """Sends through the host's Flask-Mail (``app.extensions["mail"]``)."""

    def __call__(self, email: OutgoingEmail) -> None:
        with self.batch() as send:
            send(email)

    @contextmanager
    def batch(self) -> Iterator[SendOne]:
        flask_mail = importlib.import_module("flask_mail")
        with current_app.extensions["mail"].connect() as connection:

            def send(email: OutgoingEmail) -> None:
                message = flask_mail.Message(
                    subject=email.subject,
                    recipients=[email.to],
                    body=email.text,
                    html=email.html,
                    sender=email.from_address,
                )
                connection.send(message)

            yield send


def find_sender(extensions: Mapping[str, Any], configured: object) -> EmailSender | None:
    """The sender of BILLING_EMAIL_SENDER (``configured``), or the adapter of the mail extension
    the host initialised; None when emails are off."""
    if configured is False:
        return None
    if configured is not None:
        return configured if isinstance(configured, EmailSender) else None
    if "mailman" in extensions:
        return FlaskMailmanSender()
    if "mail" in extensions:
        return FlaskMailSender()
    return None


class EmailSenders:
    """The sender of one app, read at each use."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    @property
    def sender(self) -> EmailSender | None:
        return find_sender(self._runtime.app.extensions, self._runtime.settings.email.sender)

    @property
    def enabled(self) -> bool:
        """Whether emails follow the notifications: a sender is available."""
        return self.sender is not None
