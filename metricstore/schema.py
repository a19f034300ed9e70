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
    """Names of the applied migrations, oldest first (read-only once created)."""
    return _router(db).done


def pending(db):
    """Names of the migrations not yet applied."""
    return _router(db).diff
