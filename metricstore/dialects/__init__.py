"""The one seam where SQLite and PostgreSQL differ.

:func:`dialect_for` picks a :class:`~metricstore.dialects.base.Dialect` once per
database; everything engine-specific (types, DDL, time encoding, bulk paths,
query shapes, locks) is a method on it, never an ``if`` elsewhere.
"""

import peewee as pw

from ..errors import ConfigurationError
from .base import Column, Dialect, Table
from .citus import DISTRIBUTED_SCHEMA, CitusDialect, CitusSchemaDialect
from .postgres import PostgresDialect
from .sqlite import SqliteDialect

__all__ = ["CitusDialect", "CitusSchemaDialect", "Column", "Dialect", "Table", "dialect_for"]

CITUS_VERSION = "SELECT extversion FROM pg_extension WHERE extname = 'citus'"


def dialect_for(db, detect=True):
    """The dialect for peewee database ``db``, chosen on first use and cached
    on the database. On PostgreSQL the choice reads ``pg_extension`` once
    (opening a short connection if ``db`` is closed): a database with the
    ``citus`` extension gets :class:`CitusDialect` (:class:`CitusSchemaDialect`
    for a tenant in a distributed schema). ``detect=False`` never
    touches the server (for classifying a failure to reach it): before the
    choice is made it returns a plain, uncached :class:`PostgresDialect`."""
    dialect = getattr(db, "_metricstore_dialect", None)
    if dialect is None:
        if isinstance(db, pw.PostgresqlDatabase):
            schema = getattr(db, "schema", None)
            if not detect:
                return PostgresDialect(schema)
            if db.is_closed():
                # Choosing reads the server: wait for the first real use, so
                # that building a repository (or a forwarder whose central
                # database is down) never connects.
                return _Deferred(db)
            version, in_schema = _citus(db, schema)
            if not version:
                dialect = PostgresDialect(schema)
            elif in_schema:
                dialect = CitusSchemaDialect(schema, version)
            else:
                dialect = CitusDialect(schema, version)
        elif isinstance(db, pw.SqliteDatabase):
            dialect = SqliteDialect()
        else:
            raise ConfigurationError("metricstore supports SQLite and PostgreSQL, not %s; "
                                     "open the database with metricstore.connect(url)"
                                     % type(db).__name__)
        db._metricstore_dialect = dialect
    return dialect


class _Deferred:
    """The dialect of a PostgreSQL database not connected yet: the choice is
    made (and cached on the database) on the first attribute read."""

    def __init__(self, db):
        self._db, self._dialect = db, None

    def __getattr__(self, name):
        if self._dialect is None:
            self._db.connect(reuse_if_open=True)     # the caller is about to use it
            self._dialect = dialect_for(self._db)
        return getattr(self._dialect, name)


def _citus(db, schema):
    """``(Citus version or None, whether ``schema`` is a distributed schema)``."""
    if db.is_closed():
        with db.connection_context():
            return _citus(db, schema)
    row = db.execute_sql(CITUS_VERSION).fetchone()
    if not row:
        return None, False
    return row[0], bool(schema and db.execute_sql(DISTRIBUTED_SCHEMA, (schema,)).fetchone())
