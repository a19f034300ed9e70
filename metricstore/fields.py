"""A peewee field for UTC instants that works on both engines unbound.

``db_value`` refuses naive datetimes, converts aware ones to UTC and wraps
them in :class:`UTCInstant`; each driver gets an adapter for that private
type only (epoch microseconds for sqlite3, ``timestamptz`` for psycopg2), so
one model class serves every tenant database without rebinding.
"""

import sqlite3

import peewee as pw

from .timeutil import UTC, from_micros, to_micros, to_utc


class UTCInstant:
    """An aware UTC datetime on its way to a driver."""
    __slots__ = ("dt",)

    def __init__(self, dt):
        self.dt = dt


sqlite3.register_adapter(UTCInstant, lambda v: to_micros(v.dt))
try:  # psycopg2 is an optional extra
    from psycopg2.extensions import adapt, register_adapter
    register_adapter(UTCInstant, lambda v: adapt(v.dt))
except ImportError:  # pragma: no cover - SQLite-only install
    pass


class UTCTimestampField(pw.Field):
    """Aware UTC datetime; BIGINT epoch microseconds on SQLite, timestamptz on PostgreSQL."""
    field_type = "UTCTIMESTAMP"

    def db_value(self, value):
        if value is None or isinstance(value, UTCInstant):
            return value
        return UTCInstant(to_utc(value, self.name))

    def python_value(self, value):
        if value is None:
            return None
        if isinstance(value, int):
            return from_micros(value)
        return value.astimezone(UTC)
