"""Rendering the extension's answers: the error shape, JSON or HTML, the quota headers, and the
security headers of everything the extension answers."""

from __future__ import annotations

import logging
import secrets
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, tzinfo
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from flask import (
    Blueprint,
    Flask,
    current_app,
    g,
    has_app_context,
    has_request_context,
    jsonify,
    render_template,
    request,
    url_for,
)
from flask_login import current_user
from jinja2 import TemplateNotFound
from markupsafe import escape
from werkzeug.exceptions import HTTPException
from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.routing import BuildError
from werkzeug.wrappers import Response

from .domain.accounts import MEMBER_CAP_MESSAGE
from .domain.catalog import render
from .domain.errors import BillingError
from .errors import (
    REFUSAL_ATTRIBUTE,
    BillingConfigError,
    BillingUnavailable,
    FeatureNotAvailable,
    QuotaExceeded,
)

# Re-exported: the guards add them to every charged answer.
from .errors import quota_headers as quota_headers
from .presentation.formats import moment_in_zone
from .presentation.i18n import ENGLISH, request_locale, translatable
from .presentation.translator import Translator, counted
from .services.faults import (
    DATABASE_FAULTS,
    database_unavailable,
    is_database_fault,
    migrations_pending,
    missing_table_behind,
)
from .settings import (
    DEFAULTS,
    BlueprintSettings,
    PageSecuritySettings,
    RefusalPageSettings,
    with_sources,
)
from .state import BillingState, get_state

log = logging.getLogger(__name__)

# The one place where an error code becomes an HTTP status. docs/api.md lists the same table, and a
# test checks that every code the package raises is here.
STATUS_BY_ERROR_CODE: Mapping[str, int] = {
    "INVALID_JSON": 400,
    "INVALID_REQUEST": 400,
    "CSRF_FAILED": 400,
    "UNAUTHORIZED": 401,
    "INVALID_SIGNATURE": 401,
    "PAYMENT_REQUIRED": 402,
    "FEATURE_NOT_AVAILABLE": 403,
    "ACCOUNT_FORBIDDEN": 403,
    "UNTRUSTED_SOURCE": 403,
    "NOT_FOUND": 404,
    "UNKNOWN_PROVIDER": 404,
    "UNKNOWN_PLAN": 404,
    "UNKNOWN_USER": 404,
    "ACCOUNT_NOT_FOUND": 404,
    "INVITATION_INVALID": 404,
    "NOT_CANCELLABLE": 409,
    "NOT_RESUMABLE": 409,
    "SUBSCRIPTION_CONFLICT": 409,
    "SEATS_EXHAUSTED": 409,
    "TOO_MANY_MEMBERS": 409,
    "MEMBERSHIP_CONFLICT": 409,
    "IDEMPOTENCY_KEY_IN_USE": 409,
    "IDEMPOTENT_RESPONSE_NOT_STORED": 409,
    "UNSUPPORTED_MEDIA_TYPE": 415,
    "VALIDATION_ERROR": 422,
    "INVALID_EVENT": 422,
    "IDEMPOTENCY_KEY_REUSED": 422,
    "LIMIT_EXCEEDED": 429,
    "TOO_MANY_PENDING_PAYMENTS": 429,
    "PAYMENT_PROVIDER_ERROR": 502,
    "SERVICE_UNAVAILABLE": 503,
    "MIGRATIONS_PENDING": 503,
    "WEBHOOKS_DISABLED": 503,
}
"""Codes not listed (configuration errors, an unknown metric: bugs of the host) answer 500."""

# Every answer: a browser must never guess another type than the one declared (a JSON body that
# echoes user input, sniffed as HTML, would run as a page of the host's origin).
ANSWER_SECURITY_HEADERS: Mapping[str, str] = {"X-Content-Type-Options": "nosniff"}
# Pages also get no full URL leaked to other sites and no framing (the policy's frame-ancestors,
# BILLING_CONTENT_SECURITY_POLICY, says the same to browsers that read it).
PAGE_SECURITY_HEADERS: Mapping[str, str] = {
    **ANSWER_SECURITY_HEADERS,
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",  # frame-ancestors' twin, for browsers without CSP level 2
}
CSP_HEADER = "Content-Security-Policy"


def status_of(error: BillingError) -> int:
    """The HTTP status of an error code, from ``STATUS_BY_ERROR_CODE``."""
    status = STATUS_BY_ERROR_CODE.get(error.error_code)
    if status is None:
        log.error("no HTTP status for error code %s; answering 500", error.error_code)
        return 500
    return status


def error_body(error: BillingError) -> dict[str, Any]:
    return {
        "success": False,
        "error": error.error_code,
        "message": error.message,
        "details": error.details(),
    }


def from_http_exception(error: HTTPException) -> BillingError:
    """A werkzeug HTTP error raised inside the extension's blueprints (a 404, a 405...) in the
    error shape: its name as the code (``METHOD_NOT_ALLOWED``)."""
    name = (error.name or "error").upper().replace(" ", "_").replace("'", "")
    return BillingError(error.description or error.name, error_code=name)


def wants_html() -> bool:
    """A browser asking for a page gets a page; API clients and ``*/*`` get JSON.

    ``Accept`` alone does not decide: fetch() and many HTTP libraries send a browser's
    ``text/html,...,*/*;q=0.8``, so a request that shows it comes from code (``is_api_client``)
    gets JSON whatever it accepts."""
    if not has_request_context() or is_api_client():
        return False
    accept = request.accept_mimetypes
    return accept["text/html"] > accept["application/json"]


def wants_json() -> bool:
    """The client asked for JSON: it shows it is code (``is_api_client``), or its ``Accept``
    prefers ``application/json`` to ``text/html``. A request that says neither (no ``Accept``, or
    ``*/*``) is not counted, so that a login redirect stays the answer a browser gets."""
    if not has_request_context():
        return False
    if is_api_client():
        return True
    accept = request.accept_mimetypes
    return accept["application/json"] > accept["text/html"]


def is_api_client() -> bool:
    """Signs, besides ``Accept``, of a request sent by code rather than a page navigation: a JSON
    body (a form cannot send one), credentials in ``Authorization`` (a token, or Basic sent by a
    script; browsers navigating send cookies), or ``X-Requested-With: XMLHttpRequest`` (jQuery's
    and many front ends' marker for background requests)."""
    if not has_request_context():
        return False
    headers = request.headers
    return (
        request.is_json
        or bool(headers.get("Authorization"))
        or headers.get("X-Requested-With", "").lower() == "xmlhttprequest"
    )


@contextmanager
def refusals_noted() -> Iterator[None]:
    """Keep a refusal raised inside on the request (``flask.g``) and let it go on: a host's own
    ``@app.errorhandler`` for it then still gets its headers (``keep_refusal_headers``). The faces
    that can refuse (the guards, the extension's checks) run inside it; the services know nothing
    of requests."""
    try:
        yield
    except (QuotaExceeded, FeatureNotAvailable) as refusal:
        if has_request_context():
            setattr(g, REFUSAL_ATTRIBUTE, refusal)
        raise


def keep_refusal_headers(response: Response) -> Response:
    """After every request of the app: a refusal of this request (``QuotaExceeded``,
    ``FeatureNotAvailable``) that a host's ``@app.errorhandler`` answered keeps its headers
    (``Retry-After``, the quota headers) when the host's response lacks them. Only a response with
    the refusal's own status gets them: a host that caught the refusal and answered otherwise
    (a 200 with a fallback) meant another answer."""
    refusal = g.pop(REFUSAL_ATTRIBUTE, None)
    if isinstance(refusal, (QuotaExceeded, FeatureNotAvailable)) and (
        response.status_code == refusal.code
    ):
        for name, value in refusal.headers().items():
            if name not in response.headers:
                response.headers[name] = value
    return response


def with_security_headers(response: Response) -> Response:
    """Add the security headers of the response's kind (a page, or any other answer), keeping
    every one the host already set: a host with its own policy knows its pages better.

    A page's Content-Security-Policy is ``BILLING_CONTENT_SECURITY_POLICY``'s, with the nonce of
    ``csp_nonce()`` in the directives of ``BILLING_CONTENT_SECURITY_POLICY_NONCE_IN`` when a
    template used it. Flask-Talisman, when the host uses it, sets its own policy after this (an
    ``after_request`` of the app runs after the blueprints'), with the same nonce."""
    if response.mimetype != "text/html":
        wanted: Mapping[str, str] = ANSWER_SECURITY_HEADERS
    else:
        security = _page_security()
        headers = dict(PAGE_SECURITY_HEADERS)
        if security.policy is not None:
            headers[CSP_HEADER] = policy_header(security.policy, security.nonce_in, _nonce())
            if security.policy.get("frame-ancestors") != ("'none'",):
                del headers["X-Frame-Options"]  # the host allowed framing in its policy
        wanted = headers
    for name, value in wanted.items():
        if name not in response.headers:
            response.headers[name] = value
    return response


def policy_header(
    policy: Mapping[str, tuple[str, ...]], nonce_in: tuple[str, ...], nonce: str | None
) -> str:
    """The header value of ``policy``, with ``'nonce-<nonce>'`` in the ``nonce_in`` directives."""
    directives = dict(policy)
    if nonce:
        for directive in nonce_in:
            directives[directive] = with_sources(directives, directive, (f"'nonce-{nonce}'",))
    return "; ".join(f"{name} {' '.join(sources)}" for name, sources in directives.items())


def csp_nonce() -> str:
    """The request's nonce for inline ``<script nonce="{{ csp_nonce() }}">`` and ``<style>`` of a
    host's layout: made on first use and kept on ``request.csp_nonce``, where Flask-Talisman
    keeps its own, so both name one nonce whichever of them a template calls. '' outside a
    request."""
    if not has_request_context():
        return ""
    nonce = getattr(request, "csp_nonce", None)
    if not nonce:
        nonce = secrets.token_urlsafe(18)
        request.csp_nonce = nonce  # type: ignore[attr-defined]
    return str(nonce)


def _nonce() -> str | None:
    # Only a nonce that a template used (or Flask-Talisman made): a nonce in style-src or
    # script-src turns a host's 'unsafe-inline' there off, so none is added without need.
    nonce = getattr(request, "csp_nonce", None) if has_request_context() else None
    return str(nonce) if nonce else None


def _page_security() -> PageSecuritySettings:
    state = _state() if has_app_context() else None
    if state is not None:
        return state.runtime.settings.page_security
    # An app without the extension initialised (a host calling error_response itself).
    get: Callable[[str], Any] = (
        (lambda key: current_app.config.get(key, DEFAULTS[key]))
        if has_app_context()
        else DEFAULTS.__getitem__
    )
    return PageSecuritySettings.read(get, get("BILLING_BASE_TEMPLATE"))


def error_response(
    error: BillingError, status: int | None = None, *, page: bool = True
) -> Response:
    """The one renderer of errors: the error shape as JSON, or (``page``, for a client that
    prefers ``text/html``) the HTML error page, with the error's own headers and the security
    headers. ``status`` defaults to the code's, from ``STATUS_BY_ERROR_CODE``."""
    error = _naming_missing_tables(error)
    status = status_of(error) if status is None else status
    if page and wants_html():
        body = _unavailable_page(error, status) if status == 503 else _error_page(error, status)
        response = current_app.make_response(body)
        response.content_type = "text/html; charset=utf-8"
    else:
        response = jsonify(error_body(error))
    response.status_code = status
    # A refusal tells how much is left, like any charge: QuotaExceeded's headers() has the quota
    # headers besides Retry-After.
    response.headers.update(error.headers())
    return with_security_headers(response)


def database_unavailable_error(error: BaseException) -> BillingUnavailable:
    """The 503 (``Retry-After`` from ``BILLING_UNAVAILABLE_RETRY_AFTER``) that answers the
    database fault ``error``, logged; the one adapter of database faults every face uses."""
    state = _state()
    retry_after = (
        state.runtime.settings.unavailable_retry_after
        if state is not None
        else int(DEFAULTS["BILLING_UNAVAILABLE_RETRY_AFTER"])
    )
    return database_unavailable(error, retry_after_seconds=retry_after)


@contextmanager
def database_faults_as_503() -> Iterator[None]:
    """The database failing inside the block is raised as a 503 with ``Retry-After``; any other
    error (a bug) is raised as it is."""
    try:
        yield
    except DATABASE_FAULTS as error:
        if not is_database_fault(error):
            raise
        raise database_unavailable_error(error) from error


def database_fault_response(error: Exception, *, page: bool = True) -> Response:
    """An error handler for the host's own views: a database fault they raise (the database
    down, restarting, locked, out of pooled connections; the extension's tables missing) is
    answered like the extension's own, 503 with ``Retry-After`` in the client's format (always
    JSON unless ``page``), and any other error is raised again (a bug stays a 500). Registered by
    ``answer_database_faults``."""
    if not is_database_fault(error):
        raise error
    return error_response(database_unavailable_error(error), page=page)


def answer_database_faults(target: Flask | Blueprint, *, page: bool = True) -> None:
    """Answer the database faults of every view of ``target`` (an app, or one blueprint) with
    ``database_fault_response``: 503 with ``Retry-After``, never a bare 500, also when the fault
    came from the host's user loader while Flask-Login loaded ``current_user``. Without ``page``
    the answer is always JSON."""

    def unavailable(error: Exception) -> Response:
        return database_fault_response(error, page=page)

    for fault in DATABASE_FAULTS:
        target.register_error_handler(fault, unavailable)


def register_face(
    app: Flask,
    settings: BlueprintSettings,
    build: Callable[[str], Blueprint],
    *,
    name_key: str,
    page: bool,
) -> Blueprint | None:
    """Build and register one blueprint of the extension's faces (the API's, the page's) when
    ``settings.enabled``: under ``settings.name`` (refused when the app has a blueprint of that
    name; ``name_key`` is the setting to change) and ``settings.prefix``, its errors answered in
    the error shape (always JSON unless ``page``; an HTTP error of an API view as JSON too), its
    database faults as 503, every answer with the security headers. The registered blueprint, or
    ``None`` when disabled."""
    if not settings.enabled:
        return None
    if settings.name in app.blueprints:
        raise BillingConfigError(
            f"a blueprint named {settings.name!r} is already registered: "
            f"set {name_key} to another name"
        )
    blueprint = build(settings.name)

    def billing_error(error: BillingError) -> Response:
        return error_response(error, page=page)

    def http_error(error: HTTPException) -> Response:
        return error_response(from_http_exception(error), error.code or 500, page=False)

    blueprint.register_error_handler(BillingError, billing_error)
    if not page:
        blueprint.register_error_handler(HTTPException, http_error)
    answer_database_faults(blueprint, page=page)
    # After the error handlers too: Flask runs a blueprint's after_request on handled errors.
    blueprint.after_request(with_security_headers)
    app.register_blueprint(blueprint, url_prefix=settings.prefix)
    return blueprint


def _naming_missing_tables(error: BillingError) -> BillingError:
    """A 503 that a face answered for a database fault, as ``MIGRATIONS_PENDING`` (logged with
    the command to run) when the fault was a missing table of the extension.

    The faces answer every fault with a ``BillingUnavailable`` of their own: raised ``from`` the
    database's error (the guards), or built in the error handler Flask runs while it handles the
    database's error (the JSON API). Either way the database's error is at hand here.
    """
    if not isinstance(error, BillingUnavailable) or error.error_code != "SERVICE_UNAVAILABLE":
        return error
    table = missing_table_behind(error) or missing_table_behind(sys.exception())
    if table is None:
        return error
    state = _state()
    cli_group = state.runtime.settings.cli_group if state else str(DEFAULTS["BILLING_CLI_GROUP"])
    return migrations_pending(
        table, retry_after_seconds=error.retry_after_seconds, cli_group=cli_group
    )


# -- the HTML page -------------------------------------------------------------------------------

ERROR_TEMPLATE = "profile_billing/error.html"
_UTC = ZoneInfo("UTC")


def _error_page(error: BillingError, status: int) -> str:
    context = error_page_context(error, status)
    try:
        return render_template(ERROR_TEMPLATE, **context)
    except TemplateNotFound as missing:
        if missing.name != ERROR_TEMPLATE:
            # BILLING_BASE_TEMPLATE names a template the app does not have: a configuration
            # mistake to fix, answered meanwhile with the bare page below.
            log.error("the refusal page cannot extend %r: no such template", missing.name)
        # Or the host disabled the extension's templates.
        status_name = escape(context["status_name"])
        return f"<!doctype html><title>{status_name}</title><p>{escape(error.message)}</p>"


UNAVAILABLE_TEMPLATE = "profile_billing/unavailable.html"


def _unavailable_page(error: BillingError, status: int) -> str:
    """The page of a 503, drawn from what is at hand without the database.

    The database may be the reason for the 503, and so may the host's user loader that reads it:
    the page touches neither. It is rendered without the app's context processors (Flask-Login's
    loads ``current_user`` to offer it to templates) and does not extend the host's layout (which
    usually shows the user); it names no user, no time zone and no profile link.
    """
    context = {
        "error": error,
        "body": error_body(error),
        "status": status,
        "status_name": HTTP_STATUS_CODES.get(status, "Error"),
        "message": error.message,
        "retry_after": error.headers().get("Retry-After"),
    }
    try:
        template = current_app.jinja_env.get_template(UNAVAILABLE_TEMPLATE)
    except TemplateNotFound:  # a host that disabled the extension's templates
        status_name = escape(context["status_name"])
        return f"<!doctype html><title>{status_name}</title><p>{escape(error.message)}</p>"
    return template.render(context)


def error_page_context(error: BillingError, status: int) -> dict[str, Any]:
    """What ``profile_billing/error.html`` (and a host's override of it) is rendered with; the
    guide lists each name."""
    page = _refusal_page_settings()
    resets_at = _resets_at(error)
    if resets_at is not None:
        resets_at = resets_at.astimezone(_viewer_zone())
    state = _state()
    # The page speaks the profile page's language: BILLING_LOCALE, else the host's Flask-Babel
    # locale, else English (and then writes the reset date in a plain English form).
    chosen = request_locale(None if state is None else state.runtime.settings.page.locale)
    t = Translator("en", ENGLISH) if chosen is None else Translator(*chosen)
    return {
        "_pb": t.gettext,
        "_pbn": t.ngettext,
        "t": t,
        "billing_locale": t.language,
        "error": error,
        "body": error_body(error),
        "status": status,
        "status_name": t.gettext(HTTP_STATUS_CODES.get(status, "Error")),
        "message": _translated_message(error, t, state),
        "base_template": page.base_template,
        "back_url": _back_url(page.back_url),
        # The profile page when it is registered; a host's template may link its own.
        "profile_url": _profile_url(),
        "resets_at": resets_at,
        "resets_at_text": (
            None
            if resets_at is None
            else moment_in_zone(None if chosen is None else chosen[0], resets_at)
        ),
        # A team member's refusal: the pool's numbers and the member's (``scope`` says which
        # refused); None for anyone else.
        "team_limits": _team_limits(error),
    }


def _team_limits(error: BillingError) -> dict[str, Any] | None:
    if not isinstance(error, QuotaExceeded) or error.scope is None:
        return None
    return {"scope": error.scope, "pool": error.pool, "member": error.member}


# The statuses of the extension's refusals, for its catalog (the page shows their names).
REFUSAL_STATUS_NAMES = (
    translatable("Bad Request"),
    translatable("Unauthorized"),
    translatable("Payment Required"),
    translatable("Forbidden"),
    translatable("Not Found"),
    translatable("Conflict"),
    translatable("Unprocessable Entity"),
    translatable("Too Many Requests"),
    translatable("Error"),
)


def _translated_message(error: BillingError, t: Translator, state: BillingState | None) -> str:
    """The error's message in the page's language: a quota's from its metric's message in the
    catalog (the limit counted in the metric's unit), any other through the extension's catalog
    (unchanged when the catalog has no translation of it)."""
    if isinstance(error, QuotaExceeded) and state is not None:
        metric = state.runtime.catalog.metrics.get(error.metric)
        limit = error.allowance.limit
        if error.scope == "member" and metric is not None and limit is not None:
            return t.gettext(render(MEMBER_CAP_MESSAGE)).format(amount=counted(t, metric, limit))
        if metric is not None and limit is not None:
            source = render(metric.message)
            template = t.gettext(source)
            if template != source:  # else the message as the guards worded it, unchanged
                return template.format(limit=t.number(limit), amount=counted(t, metric, limit))
    return t.gettext(error.message)


def _resets_at(error: BillingError) -> datetime | None:
    """When the refused quota resets: a ``QuotaExceeded``'s allowance, or an aware ``resets_at``
    in the details of another error (a datetime or ISO 8601 text)."""
    if isinstance(error, QuotaExceeded):
        return error.allowance.resets_at
    value = error.details().get("resets_at")
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value
    return None


def _viewer_zone() -> tzinfo:
    """The logged-in user's time zone from their profile; UTC for anyone else, or when it cannot
    be read (the page must not fail for a date)."""
    state = _state()
    if state is None or getattr(current_app, "login_manager", None) is None:
        return _UTC
    try:
        # Loading the user may read the host's database too.
        if not getattr(current_user, "is_authenticated", False):
            return _UTC
        user_id = current_user.get_id()
        if user_id is None:
            return _UTC
        return state.profiles.timezone_of(str(user_id))
    except DATABASE_FAULTS:
        log.warning("the refusal page shows UTC: the user's time zone is unreadable", exc_info=True)
        return _UTC


def _back_url(fallback: str) -> str:
    """The page the user came from when it is one of the app's own (same scheme and host), else
    ``fallback`` (``BILLING_REFUSAL_BACK_URL``): a link back never leads to another site."""
    referrer = request.referrer
    if not referrer:
        return fallback
    parts = urlsplit(referrer)
    own = urlsplit(request.host_url)
    same_origin = (
        parts.scheme in ("http", "https")
        and parts.scheme == own.scheme
        and parts.netloc.lower() == own.netloc.lower()
    )
    return referrer if same_origin else fallback


def _profile_url() -> str | None:
    state = _state()
    if state is None or not state.runtime.settings.page.blueprint.enabled:
        return None
    try:
        return url_for(f"{state.runtime.settings.page.blueprint.name}.profile")
    except BuildError:  # an app whose page failed to register, or a request of another app
        return None


def _refusal_page_settings() -> RefusalPageSettings:
    state = _state()
    if state is not None:
        return state.runtime.settings.refusal_page
    # An app without the extension initialised (a host calling error_response itself).
    return RefusalPageSettings.read(lambda key: current_app.config.get(key, DEFAULTS[key]))


def _state() -> BillingState | None:
    try:
        return get_state()
    except BillingError:  # not initialised for this app
        return None
