"""The account a request acts for: which account the current user's charges and billing reads
belong to. Every face asks here, so that a request's account is decided in one place.

In order: the account a guard names itself, the host's ``@billing.account_loader``, the account
chosen on the profile page (kept in the session), the user's personal account. A team named by the
host or a guard must be one the user belongs to, else ``UnknownAccountError`` (404): a guard's
charge checks that in its own statement, every other face here. A choice kept in the session that
is no longer valid (the user left the team) falls back to the personal account.
"""

from __future__ import annotations

from collections.abc import Callable

from flask import current_app, g, has_request_context, request, session

from .domain.accounts import UnknownAccountError, personal_account_id
from .state import BillingState

SESSION_KEY = "billing_account"
"""Where the profile page keeps the account the user chose."""

AccountChoice = Callable[[], "str | None"]
"""A guard's own choice of account, asked in the request (None: as if it had none)."""


def request_account_id(
    state: BillingState,
    user_id: str,
    choice: AccountChoice | None = None,
    *,
    checked_by_caller: bool = False,
) -> str:
    """The account the request of ``user_id`` acts for. ``checked_by_caller``: the caller's own
    statement checks the membership (a guard's charge), so it is not asked here."""
    personal = personal_account_id(user_id)
    chosen = choice() if choice is not None else None
    loader = state.runtime.account_loader
    if chosen is None and loader is not None:
        chosen = loader(user_id)
    if chosen is not None:
        if chosen != personal and not checked_by_caller:
            _check_membership(state, user_id, chosen)
        return chosen
    return _session_choice(state, user_id) or personal


def choose_account(state: BillingState, user_id: str, account_id: str) -> str:
    """Keep ``account_id`` (one the user belongs to) as the session's account."""
    account_id = state.accounts.resolve(user_id, account_id)
    session[SESSION_KEY] = account_id
    _memo()[user_id] = account_id
    return account_id


def _check_membership(state: BillingState, user_id: str, account_id: str) -> None:
    memo = _memo()
    if memo.get(user_id) == account_id:
        return
    state.accounts.resolve(user_id, account_id)
    memo[user_id] = account_id


def _session_choice(state: BillingState, user_id: str) -> str | None:
    if not has_request_context():
        return None
    if current_app.config.get("SESSION_COOKIE_NAME", "session") not in request.cookies:
        # No session to have chosen in (a token client): not even read, so that the answer does
        # not vary by cookie.
        return None
    chosen = session.get(SESSION_KEY)
    if not isinstance(chosen, str) or chosen == personal_account_id(user_id):
        return None
    memo = _memo()
    if memo.get(user_id) == chosen:
        return chosen
    try:
        state.accounts.resolve(user_id, chosen)
    except UnknownAccountError:
        session.pop(SESSION_KEY, None)
        return None
    memo[user_id] = chosen
    return chosen


def _memo() -> dict[str, str]:
    """Memberships already checked in this request (a page asks several times)."""
    if not has_request_context():
        return {}
    memo: dict[str, str] | None = g.get("_billing_checked_accounts")
    if memo is None:
        memo = {}
        g._billing_checked_accounts = memo
    return memo
