"""Applying the migration history (peewee-migrate) to a tenant database."""

import logging
import threading
from importlib import resources

from peewee_migrate import Router

from .dialects import dialect_for

MIGRATIONS_PACKAGE = "metricstore.migrations"
HISTORY_TABLE = "migratehistory"
# peewee-migrate points its one MigrateHistory model at the database of the
# router in use: serialise routers so that threads serving different tenants
# never record history in each other's database.
_ROUTER_LOCK = threading.RLock()


def migrations_dir():
    """Folder of the shipped migrations (works from a wheel or a checkout)."""
    return resources.files(MIGRATIONS_PACKAGE)


def _router(db):
    logger = logging.getLogger("metricstore.migrations")
    return Router(db, migrate_dir=migrations_dir(), migrate_table=HISTORY_TABLE,
                  logger=logger)


def migrate(db):
    """Apply pending migrations in order, each in a transaction; return their names.

    Creates the tenant's PostgreSQL schema first if the URL names one. A
    no-op (returns []) when the schema is current.
    """
    dialect_for(db).prepare(db)
    with _ROUTER_LOCK:
        return _router(db).run()


def applied(db):
    """Names of the applied migrations, oldest first (read-only)."""
    # Router.done creates the history table, which fails on a PostgreSQL
    # tenant whose schema does not exist yet: an unprovisioned tenant has none.
    if not db.table_exists(HISTORY_TABLE):
        return []
    with _ROUTER_LOCK:
        return _router(db).done


def pending(db):
    """Names of the migrations not yet applied (read-only)."""
    done = set(applied(db))
    return [name for name in _router(db).todo if name not in done]
