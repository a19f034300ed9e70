"""Applying the migration history (peewee-migrate) to a tenant database."""

import logging
from importlib import resources

from peewee_migrate import Router

from . import migrations as _migrations_package  # noqa: F401 - shipped with the package

MIGRATIONS_PACKAGE = "metricstore.migrations"
HISTORY_TABLE = "migratehistory"


def migrations_dir():
    """Folder of the shipped migrations (works from a wheel or a checkout)."""
    return resources.files(MIGRATIONS_PACKAGE)


def _router(db):
    logger = logging.getLogger("metricstore.migrations")
    return Router(db, migrate_dir=migrations_dir(), migrate_table=HISTORY_TABLE,
                  logger=logger)


def migrate(db):
    """Apply pending migrations in order, each in a transaction; return their names.

    A no-op (returns []) when the schema is current.
    """
    return _router(db).run()


def applied(db):
    """Names of the applied migrations, oldest first (read-only)."""
    # Router.done creates the history table, which fails on a PostgreSQL
    # tenant whose schema does not exist yet: an unprovisioned tenant has none.
    if not db.table_exists(HISTORY_TABLE):
        return []
    return _router(db).done


def pending(db):
    """Names of the migrations not yet applied (read-only)."""
    done = set(applied(db))
    return [name for name in _router(db).todo if name not in done]
