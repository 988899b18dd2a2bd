"""Alembic environment of the extension's migrations; run through ``flask_profile_billing.migrate``."""

from alembic import context

from flask_profile_billing.migrate import VERSION_TABLE, only_billing_tables
from flask_profile_billing.store.models import Base

engine = context.config.attributes["engine"]

with engine.connect() as connection:
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
    connection.commit()
