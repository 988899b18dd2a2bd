"""The billing subject of a request: which account the current user's charges and billing reads
belong to. Every face asks here, so that a request's account is decided in one place.
"""

from __future__ import annotations

from .domain.accounts import personal_account_id
from .state import BillingState


def request_account_id(state: BillingState, user_id: str) -> str:
    """The account the request of ``user_id`` bills: for now always the user's personal one."""
    return personal_account_id(user_id)
