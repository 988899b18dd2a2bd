"""Compiled gettext catalogs for host apps under test, written as ``pybabel compile`` writes them."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from babel.messages.catalog import Catalog as MessageCatalog
from babel.messages.mofile import write_mo


def write_translations(root: Path, locale: str, messages: Mapping[str, str]) -> None:
    """A compiled gettext catalog ``root/<locale>/LC_MESSAGES/messages.mo``."""
    catalog = MessageCatalog(locale=locale)
    for source, translation in messages.items():
        catalog.add(source, translation)
    folder = root / locale / "LC_MESSAGES"
    folder.mkdir(parents=True)
    with (folder / "messages.mo").open("wb") as file:
        write_mo(file, catalog)
