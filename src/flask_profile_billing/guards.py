"""Route guards: ``@requires_quota``, ``@requires_feature`` and ``@requires_capacity``.

Each resolves the user through Flask-Login, checks or reserves before the view runs (so concurrent
requests cannot all pass), and delegates anonymous users to the login manager's ``unauthorized()``,
like ``@login_required``. ``OPTIONS`` requests pass untouched (CORS preflights carry no cookies).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar, cast

from flask import abort, current_app, request
from flask_login import current_user
from werkzeug.wrappers import Response

from .domain.limits import Allowance, validate_amount
from .errors import InvalidRequest
from .extension import BillingState, get_state
from .responses import quota_headers
from .services.quotas import MAX_IDEMPOTENCY_KEY_LENGTH, Reservation

View = TypeVar("View", bound=Callable[..., Any])
EXEMPT_METHODS = frozenset({"OPTIONS"})
# A guard's own part: given the app's state, the user and the view to run, answer the request.
Check = Callable[["BillingState", str, Callable[[], Response]], Response]


def requires_quota(metric: str, amount: int = 1) -> Callable[[View], View]:
    """Charge ``amount`` of a periodic ``metric`` for each successful request.

    The charge is reserved before the view and given back when the view raises or answers with an
    error status (unless ``BILLING_CHARGE_FAILED_REQUESTS``). A retried request that repeats the
    ``Idempotency-Key`` header is not charged again. The URL's view arguments are logged as the
    usage event's resources.
    """
    validate_amount(amount)

    def charge(state: BillingState, user_id: str, run: Callable[[], Response]) -> Response:
        reservation = state.quotas.reserve(
            user_id,
            metric,
            amount,
            idempotency_key=_idempotency_key(state),
            resources=request.view_args or None,
        )
        keep_failures = state.runtime.settings.charge_failed_requests
        try:
            response = run()
        except BaseException:
            if not keep_failures:
                _release_after_failure(state, reservation)
            raise
        allowance = reservation.allowance
        if response.status_code >= 400 and not keep_failures:
            _release_after_failure(state, reservation)
            allowance = Allowance(
                allowance.metric,
                allowance.limit,
                allowance.used - reservation.amount,
                allowance.resets_at,
            )
        return _with_headers(state, response, allowance)

    return _guard(charge)


def requires_feature(feature: str) -> Callable[[View], View]:
    """Answer 403 ``FEATURE_NOT_AVAILABLE`` unless the user's plan includes ``feature``."""

    def check(state: BillingState, user_id: str, run: Callable[[], Response]) -> Response:
        state.quotas.require_feature(user_id, feature)
        return run()

    return _guard(check)


def requires_capacity(metric: str, amount: int = 1) -> Callable[[View], View]:
    """Answer 429 ``LIMIT_EXCEEDED`` unless ``amount`` more of a gauge fits under the plan's cap.

    The current level comes from the host's ``@billing.capacity_loader(metric)`` callback. Requests
    of the same user take turns (a database advisory lock on PostgreSQL) from the check until the
    view returns, so the view must commit what it creates before returning.
    """
    validate_amount(amount)

    def check(state: BillingState, user_id: str, run: Callable[[], Response]) -> Response:
        with state.quotas.capacity_held(user_id, metric, amount) as before:
            response = run()
        used = before.used + (amount if response.status_code < 400 else 0)
        return _with_headers(state, response, Allowance(metric, before.limit, used))

    return _guard(check)


def _guard(check: Check) -> Callable[[View], View]:
    """What every guard shares: ``OPTIONS`` passes untouched, an anonymous user goes to
    Flask-Login's ``unauthorized()``, and ``check`` runs around the view."""

    def decorator(view: View) -> View:
        @wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            if request.method in EXEMPT_METHODS:
                return current_app.ensure_sync(view)(*args, **kwargs)
            state = get_state()  # first: an app without init_app fails loudly, even for anonymous
            user_id = _current_user_id()
            if user_id is None:
                return _unauthorized()
            return check(state, user_id, lambda: _run(view, args, kwargs))

        return cast(View, guarded)

    return decorator


def _release_after_failure(state: BillingState, reservation: Reservation) -> None:
    """Give the charge of a failed view back.

    On SQLite, a view that flushed writes it did not commit still holds the database's only write
    lock through the host's session, and the refund's own connection would wait for it until the
    busy timeout. Those writes are discarded when Flask-SQLAlchemy ends the session after the
    request anyway, so they are rolled back now, before the refund.
    """
    db = state.runtime.db
    if state.runtime.engine.dialect.name == "sqlite":
        db.session.rollback()
    state.quotas.release(reservation)


def _run(view: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Response:
    return current_app.make_response(current_app.ensure_sync(view)(*args, **kwargs))


def _with_headers(state: BillingState, response: Response, allowance: Allowance) -> Response:
    if state.runtime.settings.headers_enabled:
        response.headers.update(quota_headers(allowance))
    return response


def _current_user_id() -> str | None:
    if not getattr(current_user, "is_authenticated", False):
        return None
    user_id = current_user.get_id()
    return None if user_id is None else str(user_id)


def _unauthorized() -> Any:
    login_manager = getattr(current_app, "login_manager", None)
    if login_manager is None:
        abort(401)
    return login_manager.unauthorized()


def _idempotency_key(state: BillingState) -> str | None:
    header = state.runtime.settings.idempotency_header
    key = request.headers.get(header)
    if key is None:
        return None
    if not 0 < len(key) <= MAX_IDEMPOTENCY_KEY_LENGTH:
        message = f"{header} must have 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} characters"
        raise InvalidRequest(message, {header: [message]})
    return key
