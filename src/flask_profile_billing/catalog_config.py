"""Loading a host's own plan catalog from configuration: a dict, or a JSON or YAML file.

The shape (documented in docs/configuration.md)::

    metrics:
      analysis:
        kind: periodic                 # or gauge: a level the host counts (active vacancies)
        limit_key: analyses_per_month  # the key plans publish the limit under
        message: "Analysis limit reached ({limit} per month)"
      post:
        unit:                          # "1 post", "5 posts"; per locale, its plural categories
          one: post
          other: posts
          ru: {one: пост, few: поста, many: постов, other: поста}
        title: Posts                   # the heading; the unit's plural form when left out
      gpu_minutes: {kind: periodic}
    plans:
      - code: free
        name: Free
        default: true
        limits: {analysis: 20, gpu_minutes: 60}
        features: {api_access: false}
      - {code: pro, name: Pro, price_monthly: 990, price_yearly: 9900, limits: {analysis: null}}
    feature_labels: {api_access: API access}

Plan names and descriptions, feature labels, metric titles, units' forms and limit messages may be
lazy translations (given in a dict: Flask-Babel's ``lazy_gettext("Pro")``); they stay lazy, and
are shown in the locale of the request that shows them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from decimal import Decimal
from numbers import Number
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from marshmallow import Schema, ValidationError, fields, validate

from .domain.catalog import (
    PLURAL_CATEGORIES,
    Catalog,
    LazyText,
    Metric,
    MetricKind,
    Plan,
    Unit,
    default_catalog,
)
from .errors import BillingConfigError

_CODE = validate.Regexp(
    r"^[a-z0-9][a-z0-9_\-]{0,63}$", error="use lower-case letters, digits, _ and -"
)

_CURRENCY = validate.Regexp(r"^[A-Za-z]{3}$", error="use a three-letter currency code (EUR)")


class _Text(fields.String):
    """A text shown to users: what ``fields.String`` takes, or a lazy translation, kept lazy as a
    ``LazyText``.

    A lazy translation is any object that renders itself as text: one with ``__html__`` (Flask-
    Babel's and speaklater's lazy strings) or a ``__str__`` of its own. Numbers and containers are
    mistakes here, and refused as before.
    """

    # marshmallow merges this attribute of every class of the field's hierarchy; never mutated.
    default_error_messages = {  # noqa: RUF012
        "unrenderable": "Cannot render {value!r} as text: {error}",
    }

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> str:
        if not _is_lazy_text(value):
            return super()._deserialize(value, attr, data, **kwargs)
        try:
            return LazyText(value)
        except Exception as exc:  # the host's translation machinery, not set up yet
            raise self.make_error("unrenderable", value=type(value).__name__, error=exc) from None


def _is_lazy_text(value: object) -> bool:
    if isinstance(value, str | bytes | bytearray | Number):
        return False
    return callable(getattr(value, "__html__", None)) or type(value).__str__ is not object.__str__


_LOCALE = re.compile(r"^[a-z]{2,3}(_[A-Za-z0-9]{2,8})*$")


if TYPE_CHECKING:
    _UnitFieldBase = fields.Field[Unit]
else:  # marshmallow 3 before 3.24 has no generic Field: subscripting it fails at import time
    _UnitFieldBase = fields.Field


class _UnitField(_UnitFieldBase):
    """A metric's unit: ``{one: post, other: posts}`` (the English forms), and for each other
    locale the form of each plural category its language uses: ``ru: {one: пост, few: поста,
    many: постов, other: поста}``."""

    default_error_messages = {  # noqa: RUF012
        "invalid": "Give the forms: {{one: post, other: posts, ru: {{one: ..., other: ...}}}}.",
    }

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> Unit:
        if not isinstance(value, Mapping):
            raise self.make_error("invalid")
        errors: dict[str, Any] = {}
        text = _Text(required=True, validate=validate.Length(min=1, max=120))
        english: dict[str, str] = {}
        for category in ("one", "other"):
            if value.get(category) is None:
                errors[category] = ["The English form is required."]
                continue
            try:
                english[category] = _text(text, value[category])
            except ValidationError as exc:
                errors[category] = exc.messages
        locales: dict[str, dict[str, str]] = {}
        for locale, forms in value.items():
            if locale in {"one", "other"}:
                continue
            if not isinstance(locale, str) or _LOCALE.match(locale) is None:
                errors[str(locale)] = ["Use a locale (ru, pt_BR) or one and other."]
                continue
            if not isinstance(forms, Mapping) or "other" not in forms:
                errors[locale] = ["Give the form of each plural category, other at least."]
                continue
            unknown = sorted(set(map(str, forms)) - PLURAL_CATEGORIES)
            if unknown:
                errors[locale] = [f"Unknown plural categories {unknown}: use {_CATEGORIES}."]
                continue
            try:
                locales[locale] = {
                    str(category): _text(text, form) for category, form in forms.items()
                }
            except ValidationError as exc:
                errors[locale] = exc.messages
        if errors:
            raise ValidationError(errors)
        return Unit(english["one"], english["other"], locales)


_CATEGORIES = ", ".join(sorted(PLURAL_CATEGORIES))


def _text(field: _Text, value: object) -> str:
    # Not str(): that would render a lazy text once, here, in no request's locale.
    text: str = field.deserialize(value)
    return text


class _MetricSchema(Schema):
    kind = fields.String(
        load_default="periodic", validate=validate.OneOf([k.value for k in MetricKind])
    )
    limit_key = fields.String(load_default=None)
    message = _Text(load_default=None)
    usage_key = fields.String(load_default="")
    check_key = fields.String(load_default="")
    message_key = fields.String(load_default="")
    unit = _UnitField(load_default=None)
    title = _Text(load_default="", validate=validate.Length(max=120))


class _PlanSchema(Schema):
    code = fields.String(required=True, validate=_CODE)
    name = _Text(required=True, validate=validate.Length(min=1, max=120))
    description = _Text(load_default="")
    # Decimal(0), not 0: a missing price must be the same type as a given one.
    price_monthly = fields.Decimal(
        load_default=Decimal(0), allow_none=True, validate=validate.Range(min=0)
    )
    # No default here: a missing yearly price depends on the monthly one (_yearly_price).
    price_yearly = fields.Decimal(allow_none=True, validate=validate.Range(min=0))
    # None: the catalog's currency (BILLING_CURRENCY), filled in by load_catalog.
    currency = fields.String(load_default=None, validate=_CURRENCY)
    limits = fields.Dict(
        keys=fields.String(),
        values=fields.Integer(allow_none=True, strict=True, validate=validate.Range(min=0)),
        load_default=dict,
    )
    features = fields.Dict(keys=fields.String(), values=fields.Boolean(), load_default=dict)
    default = fields.Boolean(load_default=False)
    # Members a team account on this plan may have (owner included); None: no limit.
    seats = fields.Integer(
        load_default=None, allow_none=True, strict=True, validate=validate.Range(min=1)
    )


class _CatalogSchema(Schema):
    metrics = fields.Dict(keys=fields.String(validate=_CODE), values=fields.Nested(_MetricSchema))
    plans = fields.List(fields.Nested(_PlanSchema), required=True, validate=validate.Length(min=1))
    feature_labels = fields.Dict(keys=fields.String(), values=_Text(), load_default=dict)


def _yearly_price(spec: Mapping[str, Any]) -> Decimal | None:
    """The plan's yearly price; when the catalog gives none, a free plan is free by the year too,
    and any other is not sold by the year (``None``, on request), rather than given away for 0."""
    if "price_yearly" in spec:
        return cast(Decimal | None, spec["price_yearly"])
    return Decimal(0) if spec["price_monthly"] == 0 else None


def load_catalog(source: Mapping[str, Any] | str | Path | None, currency: str) -> Catalog:
    """The catalog described by ``BILLING_PLANS``; the default catalog for None. ``currency``
    (``BILLING_CURRENCY``, already validated) prices the default catalog and every plan that names
    no currency of its own."""
    if source is None:
        return default_catalog(currency)
    raw = _read_file(Path(source)) if isinstance(source, str | Path) else source
    try:
        data = _CatalogSchema().load(raw)
    except ValidationError as exc:
        raise BillingConfigError(f"BILLING_PLANS is invalid: {exc.messages}") from None
    metrics = {
        name: Metric(
            name,
            MetricKind(spec["kind"]),
            spec["limit_key"] or name,
            spec["message"] or _default_message(name, spec["unit"]),
            usage_key=spec["usage_key"],
            check_key=spec["check_key"],
            message_key=spec["message_key"],
            unit=spec["unit"],
            title=spec["title"],
        )
        for name, spec in (data.get("metrics") or {}).items()
    }
    plans = {
        spec["code"]: Plan(
            code=spec["code"],
            name=spec["name"],
            description=spec["description"],
            price_monthly=spec["price_monthly"],
            price_yearly=_yearly_price(spec),
            currency=(spec["currency"] or currency).upper(),
            limits=spec["limits"],
            features=spec["features"],
            sort_order=index,
            is_default=spec["default"],
            seats=spec["seats"],
        )
        for index, spec in enumerate(data["plans"])
    }
    if len(plans) != len(data["plans"]):
        raise BillingConfigError("BILLING_PLANS is invalid: plan codes must be unique")
    try:
        return Catalog(metrics, plans, data["feature_labels"])
    except ValueError as exc:
        raise BillingConfigError(f"BILLING_PLANS is invalid: {exc}") from None


def _default_message(name: str, unit: Unit | None) -> str:
    if unit is None:
        return f"{name.replace('_', ' ').capitalize()} limit reached ({{limit}})"
    return "Limit reached: {amount}"  # "Limit reached: 5 posts", in the unit's words


def _read_file(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BillingConfigError(f"BILLING_PLANS: cannot read {path}: {exc}") from None
    if path.suffix.lower() in {".yaml", ".yml"}:
        try:
            import yaml  # optional extra: flask-profile-billing[yaml]
        except ImportError:
            raise BillingConfigError(
                "BILLING_PLANS points to a YAML file: install flask-profile-billing[yaml]"
            ) from None
        return yaml.safe_load(text)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise BillingConfigError(f"BILLING_PLANS: {path} is not valid JSON: {exc}") from None
