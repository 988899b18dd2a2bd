"""The extension's translation domain and the locale of a request.

The texts are in the domain ``flask_profile_billing`` (Russian shipped); the locale is:

- ``BILLING_LOCALE`` when set ("ru"), given by the caller;
- else the host's Flask-Babel locale (its ``locale_selector``, often ``Accept-Language``), through a
  ``flask_babel.Domain`` of the extension's own, so the host's ``messages`` catalog is never read
  nor replaced;
- else English.

Babel and Flask-Babel are optional dependencies: they are imported here, by name and only when
first needed, and nowhere else in the package.
"""

from __future__ import annotations

import gettext as stdlib_gettext
import importlib
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

from flask import current_app, has_app_context

from ..domain.catalog import english_plural_category
from ..domain.catalog import translatable as translatable

DOMAIN = "flask_profile_billing"
"""The extension's translation domain: ``translations/<locale>/LC_MESSAGES/<DOMAIN>.mo``."""
TRANSLATIONS_DIRECTORY = Path(__file__).resolve().parent.parent / "translations"


class Catalog(Protocol):
    def gettext(self, message: str, /) -> str: ...

    def ngettext(self, singular: str, plural: str, n: int, /) -> str: ...


ENGLISH: Catalog = stdlib_gettext.NullTranslations()
"""The source texts, untranslated."""


@cache
def file_catalog(locale: str) -> Catalog:
    """The extension's catalog for ``locale`` (English when there is none), read once."""
    return stdlib_gettext.translation(
        DOMAIN, str(TRANSLATIONS_DIRECTORY), languages=[locale], fallback=True
    )


def request_locale(configured: str | None) -> tuple[str, Catalog] | None:
    """The locale of the current request and its catalog: ``configured`` (BILLING_LOCALE), else
    the host's Flask-Babel locale; None when neither chose one (then English)."""
    if configured is not None:
        return configured, file_catalog(configured)
    if not has_app_context() or "babel" not in current_app.extensions:
        return None
    flask_babel = babel_module("flask_babel")
    if flask_babel is None:
        return None
    locale = flask_babel.get_locale()
    if locale is None:
        return None
    return str(locale), _flask_babel_domain(flask_babel).get_translations()


@cache
def _flask_babel_domain(flask_babel: ModuleType) -> Any:
    # One Domain for the process: it caches each locale's catalog itself.
    return flask_babel.Domain(translation_directories=[str(TRANSLATIONS_DIRECTORY)], domain=DOMAIN)


# -- Babel -------------------------------------------------------------------------------------


@cache
def babel_module(name: str) -> ModuleType | None:
    """``babel.core``, ``babel.dates``, ``babel.numbers`` or ``flask_babel``, imported once, or
    None without the package (the ``babel`` extra)."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


@cache
def cldr_locale(locale: str) -> Any:
    """Babel's ``Locale``, parsed once per locale: a page formats a hundred numbers and dates, and
    each call would otherwise parse the locale's name again. Only with Babel installed."""
    core = babel_module("babel.core")
    assert core is not None, "cldr_locale needs the babel package"
    return core.Locale.parse(locale)


def plural_category(locale: str, n: int) -> str:
    """The CLDR plural category of ``n`` in ``locale`` ("one", "few", "many", "other"), by
    Babel's rules; English's without the ``babel`` package."""
    core = babel_module("babel.core")
    if core is None:
        return english_plural_category(n)
    try:
        category: str = cldr_locale(locale).plural_form(n)
    except (ValueError, core.UnknownLocaleError):  # a locale CLDR does not know
        return english_plural_category(n)
    return category


def territory_names(locale: str) -> Mapping[str, str]:
    """The countries' names in ``locale`` by ISO code; empty without Babel or for a locale CLDR
    does not know (the callers keep their English names)."""
    core = babel_module("babel.core")
    if core is None:
        return {}
    try:
        names: Mapping[str, str] = cldr_locale(locale).territories
    except (ValueError, LookupError, core.UnknownLocaleError):
        return {}
    return names
