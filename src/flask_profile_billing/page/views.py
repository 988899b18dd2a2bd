"""The profile page's views: one page (GET) and the forms it posts.

Every action is a plain form that works without JavaScript: it posts with the CSRF token, the
view calls the same service as the JSON API, then redirects (303) back to the page with a flashed
message. Dialogs open by a query parameter (``?dialog=buy|edit|cancel|checkout``), rendered open
by the server; ``profile.js`` opens the same dialogs without a reload.
"""

from __future__ import annotations

import csv
import io
import logging
from datetime import UTC
from typing import Any

from flask import (
    Response,
    current_app,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_login import current_user
from flask_wtf.csrf import generate_csrf
from marshmallow import ValidationError
from werkzeug.wrappers import Response as AnyResponse

from .. import csrf, signals
from .._version import __version__
from ..account_context import request_account_id
from ..domain.catalog import render
from ..errors import BillingError, PaymentRequired
from ..presentation.i18n import translatable
from ..presentation.translator import Translator, translator
from ..presenters import package_dict
from ..profile_fields import ProfileUpdateSchema
from ..services.faults import DATABASE_FAULTS, is_database_fault
from ..services.profiles import EDITABLE_FIELDS
from ..state import BillingState, get_state
from . import forms, model, team_model

log = logging.getLogger(__name__)

DIALOGS = ("buy", "edit", "cancel", "checkout")
CHECKOUT_SESSION_KEY = "profile_billing_checkout"
FLASH_SUCCESS = "profile_billing.success"
FLASH_ERROR = "profile_billing.error"
CANCEL_REASONS = (
    "too_expensive",
    "missing_features",
    "switched_service",
    "unused",
    "customer_service",
    "too_complex",
    "low_quality",
    "other",
)


def user_id() -> str:
    return str(current_user.get_id())


def page_url(**query: Any) -> str:
    return url_for(f"{request.blueprint}.profile", **query)


def after(message: str, category: str = FLASH_SUCCESS, **query: Any) -> AnyResponse:
    """Back to the page with ``message`` flashed: 303, so a reload never posts again."""
    flash(message, category)
    return redirect(page_url(**query), code=303)


def check_csrf() -> None:
    """Every form of the page carries the token; a post without it, or over HTTPS from another
    site, is refused (400)."""
    csrf.check_csrf(
        csrf.token_from_form(),
        refusal="The form expired or did not come from this site: reload the page",
    )


# -- the page --------------------------------------------------------------------------------


def _translator() -> Translator:
    """The page's translator: BILLING_LOCALE, else the host's Flask-Babel locale, else English."""
    return translator(get_state().runtime.settings.page.locale)


def profile() -> Any:
    state = get_state()
    t = _translator()
    dialog = request.args.get("dialog")
    if dialog == "buy" and state.runtime.settings.payments_ui_enabled:
        # Without JavaScript the Buy button asks for the page with its dialog open: the click.
        signals.buy_cta_clicked.send(
            state.runtime.app,
            user_id=user_id(),
            properties={"plan": request.args.get("plan", "")},
            source="page",
        )
    signals.profile_viewed.send(state.runtime.app, user_id=user_id(), source="page")
    return render_page(state, t, dialog=dialog)


def render_page(
    state: BillingState,
    t: Translator,
    *,
    dialog: str | None = None,
    form_values: dict[str, str] | None = None,
    field_errors: dict[str, list[str]] | None = None,
    form_errors: dict[str, list[str]] | None = None,
    status: int = 200,
) -> AnyResponse:
    runtime = state.runtime
    settings = runtime.settings
    uid = user_id()
    snapshot = state.profiles.read(uid)
    account_id = request_account_id(state, uid)
    subscription, plan, allowances = state.quotas.snapshot(account_id)
    gauges = state.quotas.gauges(account_id, plan)
    zone = state.profiles.timezone_of(uid)
    now = runtime.now()
    days = _choice(request.args.get("days"), model.PERIODS, model.DEFAULT_PERIOD)
    billing = "yearly" if request.args.get("billing") == "yearly" else "monthly"
    usage = state.usage.usage(account_id, days)
    metrics = runtime.catalog.periodic_metric_names
    primary = settings.primary_metric
    payments_ui = settings.payments_ui_enabled
    provider = state.payments.provider
    activity = _activity(state, t, uid, zone)
    view = model.ProfileView(
        snapshot=snapshot,
        zone=zone,
        plan=model.plan_status(t, subscription, plan, now, zone),
        quotas=model.quota_rows(
            t, runtime.catalog, allowances, gauges, settings.quota_low_threshold, zone
        ),
        banner=model.low_quota_banner(
            t,
            allowances.get(primary),
            settings.page.banner_percent,
            settings.page.banner_remaining,
            zone,
            runtime.catalog,
        ),
        usage=model.usage_view(
            t,
            days,
            now.astimezone(UTC).date(),
            usage.daily,
            metrics,
            allowances,
            now,
            zone,
            runtime.catalog,
        ),
        plans=model.plan_options(t, runtime.catalog, plan.code, gauges, billing),
        billing=billing,
        packages=model.packages(
            t,
            [
                package_dict(item, primary, provider is not None)
                for item in runtime.catalog.plans.values()
                if not item.is_free
            ],
            runtime.catalog.metric(primary),
        )
        if payments_ui
        else [],
        payments=model.payment_rows(t, state.payments.history(account_id), runtime.catalog, zone),
        activity=activity,
    )
    if dialog not in DIALOGS or (dialog == "buy" and not payments_ui):
        dialog = None
    checkout = session.get(CHECKOUT_SESSION_KEY) if dialog == "checkout" else None
    if dialog == "checkout" and not checkout:
        dialog = None
    email = settings.payments_cta_email
    name = request.blueprint
    values = form_values if form_values is not None else forms.initial_values(snapshot)
    # The country and time zone lists are a third of the page: they are rendered when the edit
    # dialog is asked for (?dialog=edit, and after a refused edit), and otherwise fetched by the
    # script from choices.json on the dialog's first opening. Until then each select holds the
    # current value, so the form's state is right either way.
    all_choices = dialog == "edit"
    countries = forms.countries(t)
    timezones = forms.timezones()
    if not all_choices:
        countries = [pair for pair in countries if pair[0] == values.get("country")]
        timezones = [name for name in timezones if name == values.get("timezone")]
    context = {
        "base_template": settings.refusal_page.base_template,
        "billing_locale": t.language,
        "_pb": t.gettext,
        "_pbn": t.ngettext,
        "t": t,
        "view": view,
        "profile": snapshot,
        "avatar_url": forms.safe_avatar(snapshot.profile.avatar_url),
        "display_name": snapshot.first_name or snapshot.host.email or "",
        "member_since": forms.member_since(t, snapshot.created_at, zone),
        "country_name": forms.country_name(t, snapshot.profile.country),
        "dialog": dialog,
        "form_values": values,
        "field_errors": field_errors or {},
        "accounts": team_model.accounts_view(state, t, uid),
        "form_errors": form_errors or {},
        "editable_fields": EDITABLE_FIELDS,
        "countries": countries,
        "timezones": timezones,
        "all_choices": all_choices,
        "cancel_reasons": _cancel_reasons(t),
        "checkout": checkout,
        "payments_ui": payments_ui,
        "payments_available": provider is not None,
        "contact_email": email,
        "contact_url": f"mailto:{email}" if email else None,
        "csrf_token": generate_csrf() if settings.csrf_enabled else "",
        "csrf_field": current_app.config.get("WTF_CSRF_FIELD_NAME", "csrf_token"),
        "page_endpoint": f"{name}.profile",
        "endpoints": {
            "edit": f"{name}.edit",
            "cancel": f"{name}.cancel",
            "resume": f"{name}.resume",
            "plan": f"{name}.change_plan",
            "csv": f"{name}.usage_csv",
            "choices": f"{name}.choices",
            "static": f"{name}.static",
            "account": f"{name}.choose_account",
            "create_team": f"{name}.create_team",
            "invite": f"{name}.invite",
            "revoke": f"{name}.revoke_invitation",
            "role": f"{name}.change_role",
            "remove": f"{name}.remove_member",
            "cap": f"{name}.set_cap",
            "transfer": f"{name}.transfer_ownership",
            "leave": f"{name}.leave_team",
        },
        "api": _api_urls(settings),
        "asset_version": __version__,
        "periods": model.PERIODS,
    }
    response = current_app.make_response(
        (render_template(settings.page.template, **context), status)
    )
    response.headers["Cache-Control"] = "no-store"
    return response


# -- the forms -------------------------------------------------------------------------------


def edit() -> AnyResponse:
    check_csrf()
    state = get_state()
    t = _translator()
    submitted = forms.submitted_values(request.form)
    try:
        changes = ProfileUpdateSchema().load(forms.as_changes(submitted))
    except ValidationError as error:
        messages = error.messages if isinstance(error.messages, dict) else {"_": error.messages}
        field_errors = {
            name: [t.gettext(str(text)) for text in (texts if isinstance(texts, list) else [texts])]
            for name, texts in messages.items()
        }
        flash(t.gettext("Some fields are invalid: nothing was saved."), FLASH_ERROR)
        return render_page(
            state, t, dialog="edit", form_values=submitted, field_errors=field_errors, status=422
        )
    changed = state.profiles.update(user_id(), changes, source="page")
    if not changed:
        return after(t.gettext("Nothing to save: the profile is as it was."))
    return after(t.gettext("Profile saved."))


def cancel() -> AnyResponse:
    check_csrf()
    state = get_state()
    t = _translator()
    uid = user_id()
    try:
        subscription = state.subscriptions.cancel(request_account_id(state, uid))
    except BillingError as error:
        if error.error_code != "NOT_CANCELLABLE":
            raise
        return after(
            t.gettext("Your plan does not lapse: there is nothing to cancel."), FLASH_ERROR
        )
    reason = request.form.get("reason", "")
    comment = request.form.get("comment", "").strip()[:500]
    if reason in CANCEL_REASONS or comment:
        # Kept with the user's own activity, where the host finds it (type, reason, comment).
        state.activity.record(
            uid,
            "subscription.cancel_reason",
            translatable("Cancellation feedback"),
            {"reason": reason if reason in CANCEL_REASONS else "other", "comment": comment},
        )
    assert subscription.expires_at is not None  # cancel refuses plans that never lapse
    until = t.day(subscription.expires_at.astimezone(state.profiles.timezone_of(uid)))
    return after(t.gettext("Subscription cancelled. Access is kept until %(date)s.", date=until))


def resume() -> AnyResponse:
    check_csrf()
    state = get_state()
    t = _translator()
    try:
        state.subscriptions.resume(request_account_id(state, user_id()))
    except BillingError as error:
        if error.error_code != "NOT_RESUMABLE":
            raise
        return after(t.gettext("Only a cancelled subscription can be resumed."), FLASH_ERROR)
    return after(t.gettext("Subscription resumed."))


def change_plan() -> AnyResponse:
    """A plan chosen on the page, through the payment seam: the default plan at the end of the
    period; a paid plan starts checkout with a provider, else the purchase dialog opens."""
    check_csrf()
    state = get_state()
    t = _translator()
    code = request.form.get("plan_type", "")
    months = 12 if request.form.get("duration_months") == "12" else 1
    if code not in state.runtime.catalog.plans:
        return after(t.gettext("Unknown plan."), FLASH_ERROR)
    try:
        # The provider sends the user back here once they paid (or gave up).
        back = url_for(f"{request.blueprint}.profile", _external=True)
        outcome = state.plan_changes.request_change(
            request_account_id(state, user_id()), code, months, back
        )
    except PaymentRequired:
        if not state.runtime.settings.payments_ui_enabled:
            return after(t.gettext("Contact us to change to this plan."), FLASH_ERROR)
        return redirect(page_url(dialog="buy", plan=code), code=303)
    if outcome.payment is not None:
        # The provider's page is on another site, and the page's policy (form-action 'self')
        # forbids a form to redirect there: the checkout dialog links to it instead.
        session[CHECKOUT_SESSION_KEY] = {
            "url": outcome.payment["confirmation_url"],
            "plan": render(state.runtime.catalog.plan(code).name),
        }
        return redirect(page_url(dialog="checkout"), code=303)
    plan_name = render(state.runtime.catalog.plan(code).name)
    subscription = outcome.subscription
    if subscription.plan_code == code:
        return after(t.gettext("You are on the %(plan)s plan.", plan=plan_name))
    assert subscription.expires_at is not None
    until = t.day(subscription.expires_at.astimezone(state.profiles.timezone_of(user_id())))
    return after(
        t.gettext("Your plan changes to %(plan)s after %(date)s.", plan=plan_name, date=until)
    )


def choices() -> AnyResponse:
    """The edit dialog's long lists, in the reader's language, as [value, label] pairs."""
    t = _translator()
    response = jsonify(
        countries=[list(pair) for pair in forms.countries(t)],
        timezones=[[name, name] for name in forms.timezones()],
    )
    response.headers["Cache-Control"] = "private, max-age=3600"
    response.vary.add("Accept-Language")
    return response


def usage_csv() -> AnyResponse:
    """The usage chart's numbers: one row per UTC day, one column per periodic metric."""
    state = get_state()
    days = _choice(request.args.get("days"), (*model.PERIODS, 365), model.DEFAULT_PERIOD)
    stats = state.usage.usage(request_account_id(state, user_id()), days)
    metrics = state.runtime.catalog.periodic_metric_names
    today = state.runtime.now().astimezone(UTC).date()
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(["date", *metrics])
    for offset in range(days - 1, -1, -1):
        day = today.fromordinal(today.toordinal() - offset)
        writer.writerow([day.isoformat(), *(stats.daily.get(day, {}).get(m, 0) for m in metrics)])
    response = Response(buffer.getvalue(), mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="usage-{days}-days.csv"'
    response.headers["Cache-Control"] = "no-store"
    return response


# -- helpers ---------------------------------------------------------------------------------


def _choice(value: str | None, allowed: tuple[int, ...], default: int) -> int:
    try:
        number = int(value or "")
    except ValueError:
        return default
    return number if number in allowed else default


def _activity(
    state: BillingState, t: Translator, uid: str, zone: Any
) -> list[model.ActivityRow] | None:
    """The latest 10 events; None (the card's error state) when the feed cannot be read: the
    rest of the page still shows."""
    try:
        feed = state.activity.feed(uid, 10)
    except DATABASE_FAULTS as error:
        if not is_database_fault(error):
            raise
        log.warning("the profile page shows no activity: the feed is unreadable", exc_info=True)
        return None
    return model.activity_rows(t, feed.events, zone, state.runtime.catalog)


def _cancel_reasons(t: Translator) -> list[tuple[str, str]]:
    labels = {
        "too_expensive": t.gettext("It's too expensive"),
        "missing_features": t.gettext("It lacks features I need"),
        "switched_service": t.gettext("I found an alternative"),
        "unused": t.gettext("I no longer need it"),
        "customer_service": t.gettext("Customer service was not good enough"),
        "too_complex": t.gettext("It is too hard to use"),
        "low_quality": t.gettext("The quality was not good enough"),
        "other": t.gettext("Another reason"),
    }
    return [(code, labels[code]) for code in CANCEL_REASONS]


def _api_urls(settings: Any) -> dict[str, str | None]:
    """The JSON endpoints ``profile.js`` calls; None for a blueprint the host switched off
    (the script then leaves the forms to post)."""
    api = settings.api.profile
    if not api.enabled:
        return {"profile": None, "events": None}
    return {
        "profile": url_for(f"{api.name}.update_me"),
        "events": url_for(f"{api.name}.track_event"),
    }
