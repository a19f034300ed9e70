"""The one seam where SQLite and PostgreSQL differ.

:func:`dialect_for` picks a :class:`~metricstore.dialects.base.Dialect` once per
database; everything engine-specific (types, DDL, time encoding, bulk paths,
query shapes, locks) is a method on it, never an ``if`` elsewhere.
"""

import peewee as pw

from ..errors import ConfigurationError
from .base import Column, Dialect, Table
from .postgres import PostgresDialect
from .sqlite import SqliteDialect

__all__ = ["Column", "Dialect", "Table", "dialect_for"]


def dialect_for(db):
    """The dialect for peewee database ``db`` (cached on the database)."""
    dialect = getattr(db, "_metricstore_dialect", None)
    if dialect is None:
        if isinstance(db, pw.PostgresqlDatabase):
            dialect = PostgresDialect(getattr(db, "schema", None))
        elif isinstance(db, pw.SqliteDatabase):
            dialect = SqliteDialect()
        else:
            raise ConfigurationError("metricstore supports SQLite and PostgreSQL, not %s; "
                                     "open the database with metricstore.connect(url)"
                                     % type(db).__name__)
        db._metricstore_dialect = dialect
    return dialect
