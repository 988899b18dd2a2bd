"""Route guards: ``@requires_quota``, ``@requires_feature`` and ``@requires_capacity``.

Each resolves the user through Flask-Login, checks or reserves before the view runs (so concurrent
requests cannot all pass), and delegates anonymous users to the login manager's ``unauthorized()``,
like ``@login_required``. ``OPTIONS`` requests pass untouched (CORS preflights carry no cookies), and
so do the methods a guard's ``methods=`` leaves out. Without ``methods=``, the guards that charge or
count (quota, capacity) leave ``GET`` and ``HEAD`` alone on a view that also accepts an unsafe
method: that ``GET`` shows the form, the ``POST`` does the work.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from functools import wraps
from typing import Any, TypeVar, cast

from flask import current_app, request
from flask_login import current_user
from flask_login.signals import user_unauthorized
from werkzeug.wrappers import Response

from .account_context import request_account_id
from .domain.limits import Allowance, validate_amount
from .errors import ApiError, InvalidRequest
from .responses import (
    database_faults_as_503,
    database_unavailable_error,
    quota_headers,
    refusals_noted,
    wants_json,
)
from .services.charge_returns import PendingReturn
from .services.faults import DATABASE_FAULTS, is_database_fault
from .services.idempotency import IdempotentRequest, StoredResponse
from .services.quotas import MAX_IDEMPOTENCY_KEY_LENGTH
from .state import BillingState, get_state

View = TypeVar("View", bound=Callable[..., Any])
EXEMPT_METHODS = frozenset({"OPTIONS"})
# Read-only methods: on a view that also accepts a write, they show what the write will do.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
REPLAYED_HEADER = "Idempotent-Replayed"
# Not part of a stored response: they belong to the connection or the session, not the answer.
_UNSTORED_HEADERS = frozenset(
    {"set-cookie", "date", "content-length", "transfer-encoding", "connection", "keep-alive"}
)
log = logging.getLogger(__name__)
# A guard's own part: given the app's state, the user and the view to run, answer the request.
Check = Callable[["BillingState", str, Callable[[], Response]], Response]
# Whether the charge of a request that answered ``response`` is kept (else it is given back).
ChargeRule = Callable[[Response], bool]


def requires_quota(
    metric: str,
    amount: int = 1,
    *,
    methods: Iterable[str] | None = None,
    charge_when: ChargeRule | None = None,
) -> Callable[[View], View]:
    """Charge ``amount`` of a periodic ``metric`` for each successful request.

    The charge is reserved before the view and given back when the view raises or answers with an
    error status (unless ``BILLING_CHARGE_FAILED_REQUESTS``). ``methods`` limits the charge to the
    listed HTTP methods; the others run the view untouched. Without it, a view whose rule also
    accepts an unsafe method has its ``GET`` and ``HEAD`` (the form page) untouched.
    ``charge_when(response)`` replaces the status rule for a view that answered: the charge is kept
    when it returns true, else given back like a failed request's (a form page re-rendered with
    its errors answers 200 but did nothing). A request that carries an ``Idempotency-Key`` header
    is answered once: its charged response is stored, and a repeat of the key gets it back without
    the view running (see ``services.idempotency``); an uncharged one releases its key. The URL's
    view arguments are logged as the usage event's resources.
    """
    validate_amount(amount)

    def charge(state: BillingState, user_id: str, run: Callable[[], Response]) -> Response:
        key = _idempotency_key(state)
        if key is None:
            token = uuid.uuid4().hex
            return _charge_and_run(state, user_id, metric, amount, run, token, charge_when)[0]
        idempotent = IdempotentRequest(
            user_id,
            request.endpoint or request.path,
            key,
            _fingerprint(),
            request_account_id(state, user_id),
        )
        with database_faults_as_503():
            outcome = state.idempotency.begin(idempotent)
        if isinstance(outcome, StoredResponse):
            return _replay(outcome)
        try:
            # The claim's token keys the charge, so a takeover of a dead holder finds it; the
            # lock is renewed while the view runs, so a slow view keeps its key.
            with state.idempotency.hold(outcome):
                response, charged = _charge_and_run(
                    state, user_id, metric, amount, run, outcome.token, charge_when
                )
        except BaseException:
            _bookkeeping(state.idempotency.release, outcome)
            raise
        if charged:
            _bookkeeping(state.idempotency.complete, outcome, _to_stored(response))
        else:
            _bookkeeping(state.idempotency.release, outcome)
        return response

    return _guard(charge, methods, spare_form_pages=True)


def _bookkeeping(operation: Callable[..., None], *args: Any) -> None:
    """Storing or releasing a key after the view ran: what fails here is logged, never the
    request's answer (the view ran, and its charge was kept or given back already). Faults of the
    database are retried by the service; anything else leaves the key locked until its lock runs
    out, when a repeat takes it over."""
    try:
        operation(*args)
    except Exception:
        log.exception("the bookkeeping of an idempotency key failed after its view ran")


def _charge_and_run(
    state: BillingState,
    user_id: str,
    metric: str,
    amount: int,
    run: Callable[[], Response],
    token: str,
    charge_when: ChargeRule | None,
) -> tuple[Response, bool]:
    """Reserve, run the view, keep or give back the charge; the response and whether it was kept.

    Every charge carries a token of its own as its usage event's idempotency key, so a charge
    whose outcome is unknown (the database failed while answering) can still be given back: giving
    back a charge that was never made changes nothing. A ``charge_when`` that raises fails the
    request like a view that raises.
    """
    account_id = request_account_id(state, user_id)
    try:
        reservation = state.quotas.reserve(
            account_id,
            metric,
            amount,
            actor_user_id=user_id,
            idempotency_key=token,
            resources=request.view_args or None,
        )
    except DATABASE_FAULTS as error:
        if not is_database_fault(error):
            raise
        state.charge_returns.return_later(PendingReturn(account_id, idempotency_key=token))
        raise database_unavailable_error(error) from error
    keep_failures = state.runtime.settings.charge_failed_requests
    try:
        response = run()
        if charge_when is not None:
            kept = bool(charge_when(response))
        else:
            kept = response.status_code < 400 or keep_failures
    except BaseException:
        if not keep_failures:
            state.quotas.release_failed(reservation)
        raise
    if not kept:
        allowance = state.quotas.release_failed(reservation)
        return _with_headers(state, response, allowance), False
    return _with_headers(state, response, reservation.allowance), True


def requires_feature(
    feature: str, *, methods: Iterable[str] | None = None
) -> Callable[[View], View]:
    """Answer 403 ``FEATURE_NOT_AVAILABLE`` unless the user's plan includes ``feature``; only for
    the listed ``methods`` when given."""

    def check(state: BillingState, user_id: str, run: Callable[[], Response]) -> Response:
        with database_faults_as_503():
            state.quotas.require_feature(request_account_id(state, user_id), feature)
        return run()

    return _guard(check, methods)


def requires_capacity(
    metric: str, amount: int = 1, *, methods: Iterable[str] | None = None
) -> Callable[[View], View]:
    """Answer 429 ``LIMIT_EXCEEDED`` unless ``amount`` more of a gauge fits under the plan's cap.

    The current level comes from the host's ``@billing.capacity_loader(metric)`` callback. Requests
    of the same user take turns (a database advisory lock on PostgreSQL) from the check until the
    view returns, so the view must commit what it creates before returning. When ``methods`` is
    given, only those methods are checked.
    """
    validate_amount(amount)

    def check(state: BillingState, user_id: str, run: Callable[[], Response]) -> Response:
        answered: list[Response] = []

        def lock_lost(kind: object, error: BaseException | None, trace: object) -> bool:
            # Ending the lock's transaction failed after the view answered (the database went
            # away meanwhile): the view's work is done, so its answer goes out; the lock ended
            # with the connection.
            if not answered or error is None or not is_database_fault(error):
                return False
            log.warning("a gauge's lock ended on a database that went away", exc_info=error)
            return True

        with ExitStack() as held:
            held.push(lock_lost)
            with database_faults_as_503():
                before = held.enter_context(
                    state.quotas.capacity_held(request_account_id(state, user_id), metric, amount)
                )
            answered.append(run())
        response = answered[0]
        used = before.used + (amount if response.status_code < 400 else 0)
        return _with_headers(state, response, Allowance(metric, before.limit, used))

    return _guard(check, methods, spare_form_pages=True)


def _guard(
    check: Check, methods: Iterable[str] | None = None, *, spare_form_pages: bool = False
) -> Callable[[View], View]:
    """What every guard shares: ``OPTIONS`` and the methods outside ``methods`` (when given) pass
    untouched, an anonymous user goes to Flask-Login's ``unauthorized()``, and ``check`` runs
    around the view. With ``spare_form_pages`` and no ``methods``, ``GET`` and ``HEAD`` pass
    untouched too when the view's rule also accepts an unsafe method (a form page)."""
    guarded_methods = _guarded_methods(methods)

    def decorator(view: View) -> View:
        @wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            if request.method in EXEMPT_METHODS or (
                guarded_methods is not None and request.method not in guarded_methods
            ):
                return current_app.ensure_sync(view)(*args, **kwargs)
            if guarded_methods is None and spare_form_pages and _shows_a_form():
                return current_app.ensure_sync(view)(*args, **kwargs)
            state = get_state()  # first: an app without init_app fails loudly, even for anonymous
            # The host's user loader reads its database too: down, it is the same 503.
            with database_faults_as_503():
                user_id = _current_user_id()
            if user_id is None:
                return _unauthorized()
            with refusals_noted():
                return check(state, user_id, lambda: _run(view, args, kwargs))

        return cast(View, guarded)

    return decorator


def _shows_a_form() -> bool:
    """A ``GET`` or ``HEAD`` of a rule that also accepts an unsafe method (``POST``, ``PUT``,
    ``PATCH``, ``DELETE``): it shows what the write will do, which costs nothing. A rule of ``GET``
    alone is the work itself, and is checked."""
    if request.method not in SAFE_METHODS:
        return False
    rule = request.url_rule
    accepted = rule.methods if rule is not None and rule.methods is not None else ()
    return any(method not in SAFE_METHODS for method in accepted)


def _guarded_methods(methods: Iterable[str] | None) -> frozenset[str] | None:
    """The methods a guard checks, upper-cased; ``None`` for all of them.

    Refused when the decorator is applied, not at request time: a bare string (``"POST"`` would be
    read as the methods P, O, S and T) and an empty list (a guard that never checks anything).
    """
    if methods is None:
        return None
    if isinstance(methods, str):
        raise ValueError(f"methods must be a list of HTTP methods, such as [{methods!r}]")
    listed = list(methods)
    if not listed or not all(isinstance(method, str) and method for method in listed):
        raise ValueError(f"methods must name at least one HTTP method, got {listed!r}")
    return frozenset(method.upper() for method in listed)


def _fingerprint() -> str:
    """What makes two requests "the same request": method, path, query string and body.

    A JSON body counts by its value, not its bytes: the same document sent again with other
    spacing or key order (a client that serialises anew for its retry) is the same request. Any
    other body is its raw bytes, or the parsed form fields where the host parsed the form before
    the guard ran (Flask-WTF's CSRFProtect does), when the raw bytes are no longer there.
    """
    digest = hashlib.sha256()
    for part in (request.method, request.path, request.query_string.decode("latin-1")):
        digest.update(part.encode("utf-8", "surrogateescape") + b"\0")
    body = request.get_data(cache=True)
    if body and request.is_json:
        body = _canonical_json(body)
    elif not body and "form" in request.__dict__:
        fields = sorted(request.form.items(multi=True))
        files = sorted(
            (name, upload.filename or "", upload.content_type or "")
            for name, upload in request.files.items(multi=True)
        )
        body = repr((fields, files)).encode("utf-8", "surrogateescape")
    digest.update(body)
    return digest.hexdigest()


def _canonical_json(body: bytes) -> bytes:
    """A JSON body in one canonical spelling (keys sorted, no spaces), marked apart from raw
    bytes; the body as it is when it is not JSON (its bytes are then the request)."""
    try:
        value = json.loads(body)
        canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except (ValueError, RecursionError):
        return body
    return b"json\0" + canonical.encode("utf-8", "surrogatepass")


def _to_stored(response: Response) -> StoredResponse:
    """What a repeat of the key will get: the status, the headers that describe the answer (not
    cookies or framing) and the body; no body for a streamed response."""
    headers = [
        (name, value)
        for name, value in response.headers.items()
        if name.lower() not in _UNSTORED_HEADERS
    ]
    body = None if response.is_streamed else response.get_data()
    return StoredResponse(response.status_code, headers, body)


def _replay(stored: StoredResponse) -> Response:
    response = Response(stored.body, status=stored.status, headers=stored.headers)
    response.headers[REPLAYED_HEADER] = "true"
    return response


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
    """An anonymous request, answered as ``@login_required`` would for a browser (Flask-Login's
    ``unauthorized()``: the host's ``unauthorized_handler``, or the redirect to its login view),
    and in the client's own format otherwise: 401 ``UNAUTHORIZED`` in the error shape, as JSON for
    API clients (``wants_json``) and as the error page for browsers of an app without a login
    view, never werkzeug's bare HTML page to a JSON client."""
    login_manager = getattr(current_app, "login_manager", None)
    if login_manager is not None and (
        login_manager.unauthorized_callback is not None
        or (not wants_json() and _login_view(login_manager))
    ):
        return login_manager.unauthorized()
    if login_manager is not None:
        # What Flask-Login's unauthorized() would have sent, for the host's receivers.
        user_unauthorized.send(current_app._get_current_object())  # type: ignore[attr-defined]
    raise ApiError("UNAUTHORIZED", "Log in to use this endpoint")


def _login_view(login_manager: Any) -> str | None:
    """The login view Flask-Login would redirect this request to (its blueprint's first)."""
    views: dict[str, str] = getattr(login_manager, "blueprint_login_views", {}) or {}
    if request.blueprint in views:
        return views[request.blueprint]
    view: str | None = getattr(login_manager, "login_view", None)
    return view


def _idempotency_key(state: BillingState) -> str | None:
    header = state.runtime.settings.idempotency_header
    key = request.headers.get(header)
    if key is None:
        return None
    if not 0 < len(key) <= MAX_IDEMPOTENCY_KEY_LENGTH:
        message = f"{header} must have 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} characters"
        raise InvalidRequest(message, {header: [message]})
    return key
