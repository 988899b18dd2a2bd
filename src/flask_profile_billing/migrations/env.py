"""Alembic environment of the extension's migrations; run through ``flask_profile_billing.migrate``."""

from alembic import context
from sqlalchemy import MetaData, Table

from flask_profile_billing.migrate import (
    DROP_VERSION_TABLE_AT_BASE,
    VERSION_TABLE,
    only_billing_tables,
)
from flask_profile_billing.store.locks import hold_migration_lock
from flask_profile_billing.store.models import Base

engine = context.config.attributes["engine"]

# One transaction of ours around every revision, begun before Alembic sees the connection (so
# Alembic leaves it to us), and the migration lock taken first in it: processes migrating at the
# same moment take turns, and each reads the current revision only once it holds the lock, so
# the ones that waited find the database at head and do nothing. Committed when the block ends,
# rolled back (with the lock released) if a revision fails.
with engine.connect() as connection, connection.begin():
    hold_migration_lock(connection)
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        version_table=VERSION_TABLE,
        include_object=only_billing_tables,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
    # A downgrade to base leaves Alembic's version table empty; drop it with the tables it
    # versioned (an upgrade creates it again).
    if (
        context.config.attributes.get(DROP_VERSION_TABLE_AT_BASE)
        and context.get_context().get_current_revision() is None
    ):
        Table(VERSION_TABLE, MetaData()).drop(connection, checkfirst=True)
