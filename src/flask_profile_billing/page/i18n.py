"""The page's texts, dates and money in the reader's language: English, or a catalog of the
extension's own translation domain (``flask_profile_billing``, Russian shipped).

Which locale:

- ``BILLING_LOCALE`` when set ("ru");
- else the host's Flask-Babel locale (its ``locale_selector``, often ``Accept-Language``), through a
  ``flask_babel.Domain`` of the extension's own, so the host's ``messages`` catalog is never read
  nor replaced;
- else English.

Templates never use ``{% trans %}`` (it reads the host's domain): they call ``_pb`` and ``_pbn``,
which the page's views put into their context. The translator itself (texts, plural forms, dates
and money) is ``services.translations.Translator``, which the emails use too.
"""

from __future__ import annotations

import gettext as stdlib_gettext
import importlib
from functools import cache
from types import ModuleType
from typing import Any

from flask import current_app

from ..services.translations import (
    DOMAIN,
    TRANSLATIONS_DIRECTORY,
    Catalog,
    Translator,
    translatable,
)
from ..services.translations import file_catalog as _file_catalog

__all__ = [
    "DOMAIN",
    "TRANSLATIONS_DIRECTORY",
    "Catalog",
    "Translator",
    "_file_catalog",
    "translatable",
    "translator",
]


def translator() -> Translator:
    """The translator of the current request (see the module's docstring for the locale)."""
    from ..state import get_state

    configured = get_state().runtime.settings.page.locale
    if configured is not None:
        return Translator(configured, _file_catalog(configured))
    if "babel" in current_app.extensions:
        flask_babel = _flask_babel()
        if flask_babel is not None:
            locale = flask_babel.get_locale()
            if locale is not None:
                return Translator(str(locale), _flask_babel_domain(flask_babel).get_translations())
    return Translator("en", stdlib_gettext.NullTranslations())


@cache
def _flask_babel_domain(flask_babel: ModuleType) -> Any:
    # One Domain for the process: it caches each locale's catalog itself.
    return flask_babel.Domain(translation_directories=[str(TRANSLATIONS_DIRECTORY)], domain=DOMAIN)


def _flask_babel() -> ModuleType | None:
    try:  # an optional dependency (the ``babel`` extra), imported by name
        return importlib.import_module("flask_babel")
    except ImportError:
        return None
