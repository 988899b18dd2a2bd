"""Creating and dropping the extension's tables, for hosts without migrations and for tests.

A service, so that ``extension.py`` (above the services) never touches the store's models itself.
"""

from __future__ import annotations

from sqlalchemy import Engine

from ..migrate import drop_version_table
from ..store.models import Base


def create_tables(engine: Engine) -> None:
    """Create the extension's tables that are not there yet; those there are left as they are."""
    Base.metadata.create_all(engine)


def drop_tables(engine: Engine) -> None:
    """Drop the extension's tables and the version table of its migrations."""
    Base.metadata.drop_all(engine)
    drop_version_table(engine)
