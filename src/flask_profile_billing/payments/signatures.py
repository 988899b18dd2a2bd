"""Webhook signatures: one HMAC-SHA256 scheme, over the raw body, with a signed timestamp.

The header (in the style of Stripe's)::

    X-Billing-Signature: t=1760349600,v1=<hex hmac_sha256(secret, "1760349600." + raw_body)>

The MAC covers the bytes as received, never a re-serialised JSON, so nothing a parser normalises can
change what was signed. The timestamp is inside the MAC and must be near now, so a captured delivery
cannot be replayed later. Several ``v1=`` entries are accepted, so a sender can sign with the old and
the new secret while the secret is being rotated.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import datetime

SIGNATURE_HEADER = "X-Billing-Signature"
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_MAC = re.compile(r"[0-9a-f]{64}")


class InvalidSignature(Exception):
    """The signature header is missing, malformed, wrong or too old; ``str()`` says which."""


def signature(secret: str, raw_body: bytes, timestamp: int | str) -> str:
    """The ``v1`` MAC of ``raw_body`` signed at ``timestamp`` (Unix seconds)."""
    message = f"{timestamp}.".encode("ascii") + raw_body
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def sign(secret: str, raw_body: bytes, timestamp: int) -> str:
    """The ``X-Billing-Signature`` header value for ``raw_body``: what a sender (or a test) sends."""
    return f"t={timestamp},v1={signature(secret, raw_body, timestamp)}"


def verify(
    header: str | None, raw_body: bytes, secret: str, now: datetime, tolerance_seconds: int
) -> None:
    """Raise ``InvalidSignature`` unless ``header`` signs ``raw_body`` with ``secret`` at a time
    at most ``tolerance_seconds`` away from ``now``."""
    if not header:
        raise InvalidSignature(f"the {SIGNATURE_HEADER} header is missing")
    timestamp, macs = _parse(header)
    if abs(now.timestamp() - int(timestamp)) > tolerance_seconds:
        raise InvalidSignature("the signature's timestamp is too far from now")
    expected = signature(secret, raw_body, timestamp)
    # Every candidate is compared in constant time, and all of them, so the timing says nothing.
    matches = [hmac.compare_digest(expected, mac) for mac in macs]
    if not any(matches):
        raise InvalidSignature("the signature does not match the body")


def _parse(header: str) -> tuple[str, list[str]]:
    timestamp: str | None = None
    macs: list[str] = []
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t":
            if timestamp is not None or not _TIMESTAMP.fullmatch(value):
                raise InvalidSignature("malformed signature header: one t=<unix seconds> expected")
            timestamp = value
        elif key == "v1" and _MAC.fullmatch(value.lower()):
            macs.append(value.lower())
    if timestamp is None or not macs:
        raise InvalidSignature("malformed signature header: expected t=<unix seconds>,v1=<hex>")
    return timestamp, macs
