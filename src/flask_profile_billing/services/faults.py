"""What reaches a face when the database cannot serve it now (down, restarting, locked past the
busy timeout, no pooled connection free): faces answer these with 503 and ``Retry-After``, as a
fault to retry, never as a bug. The exception classes are the store's; faces learn them here."""

from ..store.transactions import UNAVAILABLE_ERRORS as DATABASE_UNAVAILABLE

__all__ = ["DATABASE_UNAVAILABLE"]
