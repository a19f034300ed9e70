"""Open a tenant database from a URL.

    sqlite:///relative/path.db      sqlite:////absolute/path.db
    postgresql://user@host:5432/dbname[?schema=tenant_a]
    postgresql+pool://... and sqlite+pool:///...   (a connection pool per process)

Options (query string, each at most once):

=====================  ==========  ===============================================
option                 engines     meaning
=====================  ==========  ===============================================
``schema``             PostgreSQL  the tenant's schema; the search path is exactly
                                   it (``public`` only when omitted)
``connect_timeout``    PostgreSQL  seconds to wait for the server (default 10)
``statement_timeout``  PostgreSQL  seconds a statement may run (default: none)
``busy_timeout``       SQLite      seconds to wait for another writer (default 30)
``max_connections``    ``+pool``   most connections open at once (default 20)
``stale_timeout``      ``+pool``   seconds after which an idle one is closed (300)
``pool_timeout``       ``+pool``   seconds to wait for a free connection (10)
``sslmode`` ...        PostgreSQL  libpq's sslmode, sslrootcert, sslcert, sslkey
=====================  ==========  ===============================================

The URL comes from the argument, else ``DATABASE_URL``, else
:data:`DEFAULT_URL` (a SQLite file in the working directory).

Connections heal: a PostgreSQL connection that the server dropped (restart,
``pg_terminate_backend``, crash) is closed for real and a new one is opened
on the next call outside a transaction; one idle for more than a second is
checked with a round trip before use. A call that was in flight when the
connection died raises :class:`~metricstore.errors.ConnectionLostError`
(see :mod:`metricstore.guard`); nothing is ever retried inside a caller's
transaction.
"""

import os
import re
import time
from urllib.parse import parse_qsl, urlparse

import peewee as pw
from playhouse import db_url
from playhouse.pool import (MaxConnectionsExceeded, _PooledPostgresqlDatabase,
                            _PooledSqliteDatabase)

from .errors import ConfigurationError, MetricstoreError
from .guard import cause, translate

DEFAULT_URL = "sqlite:///metricstore.db"
IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")
SYSTEM_SCHEMA = re.compile(r"pg_.*|information_schema")
FORMS = ("expected sqlite:///relative/path.db, sqlite:////absolute/path.db or "
         "postgresql://user[:password]@host[:port]/dbname[?schema=name] "
         "(add +pool to the scheme for a connection pool)")
SQLITE_BUSY_TIMEOUT_S = 30
CONNECT_TIMEOUT_S = 10
PROBE_AFTER_IDLE_S = 1.0
POOL_DEFAULTS = {"max_connections": 20, "stale_timeout": 300, "pool_timeout": 10}
SQLITE_OPTIONS = ("busy_timeout",)
LIBPQ_OPTIONS = ("sslmode", "sslrootcert", "sslcert", "sslkey")     # passed to libpq as given
POSTGRES_OPTIONS = ("schema", "connect_timeout", "statement_timeout") + LIBPQ_OPTIONS


def _connect_or_raise(db, connect, reuse_if_open, passthrough=()):
    """``connect(reuse_if_open)`` with driver failures raised as metricstore's."""
    try:
        return connect(reuse_if_open)
    except (MetricstoreError,) + passthrough:
        raise
    except Exception as exc:
        raise translate(db, exc, "connecting", connecting=True) from cause(exc)


class TenantDatabase:
    """What every metricstore database adds to peewee's: the URL it was
    opened from (password hidden) for error messages, and driver errors on
    connect translated into metricstore's (see :mod:`metricstore.guard`)."""

    url = None

    def connect(self, reuse_if_open=False):
        # A full pool is the pool's to wait on (PoolMixin translates it last).
        return _connect_or_raise(self, super().connect, reuse_if_open,
                                 passthrough=(MaxConnectionsExceeded,))

    def execute_sql(self, sql, params=None):
        try:
            return super().execute_sql(sql, params)
        except pw.PeeweeException as exc:
            # peewee re-wraps what connect() raised inside its wrapper (our
            # DatabaseError shares a name with its own): unwrap it.
            inner = cause(exc)
            if isinstance(inner, MetricstoreError):
                raise inner from inner.__cause__
            raise

    def connection_lost(self):
        """True if the driver knows this thread's connection is dead."""
        return False

    def discard_connection(self):
        """Close this thread's connection for real (never back to a pool)
        and forget it; the next call opens a new one. Leaves any transaction."""
        with self._lock:
            conn = self._state.conn
            self._state.reset()
        if conn is not None:
            self._close_dead(conn)

    def _close_dead(self, conn):
        try:
            conn.close()
        except Exception:       # a dead connection may fail to close: it is gone anyway
            pass


class PoolMixin:
    """A process-wide pool (peewee's ``playhouse.pool``): each thread checks
    out a connection on its first call and returns it with ``db.close()``
    (or ``with db.connection_context():``) at the end of a request."""

    def connect(self, reuse_if_open=False):
        return _connect_or_raise(self, super().connect, reuse_if_open)

    def _close_dead(self, conn):
        with self._pool_lock:
            self._in_use.pop(self.conn_key(conn), None)
        super()._close_dead(conn)


def _alive(conn):
    """One round trip on an idle psycopg2 connection: does the server answer?"""
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except Exception:
        return False


class HealingMixin:
    """PostgreSQL connections that heal (see the module docstring)."""

    def cursor(self, named_cursor=None):
        state = self._state
        if not state.closed and not state.transactions:
            conn, now = state.conn, time.monotonic()
            idle = now - getattr(state, "used_at", now)
            if conn.closed or (idle > PROBE_AFTER_IDLE_S and not _alive(conn)):
                self.discard_connection()
        cursor = super().cursor(named_cursor)
        self._state.used_at = time.monotonic()
        return cursor

    def connection_lost(self):
        conn = self._state.conn
        return conn is not None and bool(conn.closed)

    def rollback(self):
        # The server already ended a transaction whose connection died.
        if self.connection_lost():
            return None
        return super().rollback()

    def commit(self):
        # What a lost connection means for the caller's data depends on
        # whether a COMMIT was in flight or done (see guard.translate).
        self._state.commit_failed = False
        try:
            done = super().commit()
        except Exception:
            self._state.commit_failed = True
            raise
        self._state.commits = getattr(self._state, "commits", 0) + 1
        return done


class SqliteTenantDatabase(TenantDatabase, pw.SqliteDatabase):
    """SQLite in WAL mode, foreign keys on, a busy timeout; times as epoch us."""
    field_types = {**pw.SqliteDatabase.field_types, "UTCTIMESTAMP": "BIGINT"}

    def rollback(self):
        # SQLite rolls a transaction back by itself on SQLITE_FULL, IOERR,
        # NOMEM...: a second ROLLBACK would hide that error behind
        # "cannot rollback - no transaction is active".
        conn = self._state.conn
        if conn is not None and not conn.in_transaction:
            return None
        return super().rollback()


class PooledSqliteTenantDatabase(PoolMixin, _PooledSqliteDatabase, SqliteTenantDatabase):
    """SQLite with a pool of connections shared by a process's threads."""


class PostgresTenantDatabase(HealingMixin, TenantDatabase, pw.PostgresqlDatabase):
    """PostgreSQL with the session pinned to UTC, ISO dates and the tenant's
    search path (exactly its schema, or ``public``)."""
    field_types = {**pw.PostgresqlDatabase.field_types, "UTCTIMESTAMP": "TIMESTAMPTZ"}

    def __init__(self, database, schema=None, **kwargs):
        self.schema = schema
        super().__init__(database, **kwargs)

    def _initialize_connection(self, conn):
        # libpq's PGTZ / PGDATESTYLE / PGOPTIONS and role settings may
        # override the startup options: pin the session again once connected.
        with conn.cursor() as cursor:
            cursor.execute("SET TIME ZONE 'UTC'; SET DateStyle TO ISO; "
                           "SET search_path TO %s" % _quote(self.schema or "public"))


class PooledPostgresTenantDatabase(PoolMixin, _PooledPostgresqlDatabase,
                                  PostgresTenantDatabase):
    """PostgreSQL with a pool of connections shared by a process's threads."""


def _quote(identifier):
    return '"%s"' % identifier.replace('"', '""')


def default_url():
    """``DATABASE_URL`` if set and not empty, else :data:`DEFAULT_URL`."""
    return os.environ.get("DATABASE_URL") or DEFAULT_URL


def check_identifier(name, what="identifier"):
    """Return ``name`` if it is a safe lower-case SQL identifier, else raise."""
    if not isinstance(name, str) or not IDENTIFIER.fullmatch(name):
        raise ConfigurationError(
            "%s %r is not allowed: use 1-63 lower-case letters, digits and "
            "underscores, starting with a letter or underscore" % (what, name))
    return name


def check_tenant_schema(name):
    """Return ``name`` if it may hold a tenant: an identifier that is not a
    system schema (``pg_*``, ``information_schema``) nor ``public``."""
    check_identifier(name, "schema")
    if SYSTEM_SCHEMA.fullmatch(name):
        raise ConfigurationError("schema %r is a PostgreSQL system schema and cannot hold "
                                 "a tenant; name the tenant's own schema" % name)
    if name == "public":
        raise ConfigurationError("schema 'public' is used when the URL gives no ?schema=; "
                                 "drop the option to use it, or name the tenant's schema")
    return name


def connect(url=None):
    """Return an (unopened) peewee database for ``url``; see the module doc.

    Raises :class:`ConfigurationError` for a malformed URL, an unknown
    scheme or option, or a bad option value. Opens no connection.
    """
    url = url or default_url()
    if not isinstance(url, str) or "://" not in url:
        raise ConfigurationError("database URL %r is malformed; %s" % (url, FORMS))
    parsed = urlparse(url)
    scheme, _, flavour = parsed.scheme.lower().partition("+")
    if flavour not in ("", "pool"):
        raise ConfigurationError("database URL %r has unknown scheme %r; %s"
                                 % (_redact(url), parsed.scheme, FORMS))
    options = _options(url, parsed, pooled=bool(flavour))
    if scheme == "sqlite":
        db = _sqlite(url, parsed, options, pooled=bool(flavour))
    elif scheme in ("postgres", "postgresql"):
        db = _postgres(url, parsed, options, pooled=bool(flavour))
    else:
        raise ConfigurationError("database URL %r has unknown scheme %r; %s"
                                 % (_redact(url), parsed.scheme, FORMS))
    db.url = _redact(url)
    return db


def _options(url, parsed, pooled):
    pairs = parse_qsl(parsed.query, keep_blank_values=True)
    options = {}
    for key, value in pairs:
        if key in options:
            raise ConfigurationError("database URL %r gives option %r twice; give it once"
                                     % (_redact(url), key))
        options[key] = value
    engine = SQLITE_OPTIONS if parsed.scheme.lower().startswith("sqlite") else POSTGRES_OPTIONS
    allowed = engine + (tuple(POOL_DEFAULTS) if pooled else ())
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigurationError("database URL %r has unknown option(s) %s; this form takes "
                                 "%s" % (_redact(url), unknown, ", ".join(n + "=" for n in allowed)))
    return options


def _seconds(url, options, name, default, whole=False, zero_ok=False):
    """Option ``name`` as a number of seconds (``default`` when absent)."""
    if name not in options:
        return default
    text = options[name]
    try:
        value = int(text) if whole else float(text)
    except ValueError:
        value = None
    if value is None or value < 0 or (value == 0 and not zero_ok) or value > 86_400:
        raise ConfigurationError("database URL %r: %s=%r must be a %snumber of seconds "
                                 "from %s to 86400" % (_redact(url), name, text,
                                                       "whole " if whole else "",
                                                       0 if zero_ok else 1))
    return value


def _pool_kwargs(url, options):
    return {"max_connections": _seconds(url, options, "max_connections",
                                        POOL_DEFAULTS["max_connections"], whole=True),
            "stale_timeout": _seconds(url, options, "stale_timeout",
                                      POOL_DEFAULTS["stale_timeout"]),
            "timeout": _seconds(url, options, "pool_timeout", POOL_DEFAULTS["pool_timeout"])}


def _sqlite(url, parsed, options, pooled):
    if parsed.netloc:
        raise ConfigurationError(
            "database URL %r names a host %r; local databases take three slashes "
            "(sqlite:///tenant.db) or four for an absolute path "
            "(sqlite:////var/lib/tenant.db)" % (url, parsed.netloc))
    path = parsed.path[1:]
    if not path:
        raise ConfigurationError("database URL %r has no file name; %s" % (url, FORMS))
    if path != ":memory:":
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            raise ConfigurationError("database URL %r: folder %s does not exist; "
                                     "create it first" % (url, parent))
    busy = _seconds(url, options, "busy_timeout", SQLITE_BUSY_TIMEOUT_S, zero_ok=True)
    kwargs = dict(timeout=busy, pragmas={"journal_mode": "wal", "synchronous": "normal",
                                         "foreign_keys": 1, "busy_timeout": int(busy * 1000)})
    if pooled:     # the pool's ``timeout`` is its wait; the busy_timeout pragma stays
        del kwargs["timeout"]
        kwargs["check_same_thread"] = False      # a connection serves one thread at a time
        return PooledSqliteTenantDatabase(path, **kwargs, **_pool_kwargs(url, options))
    return SqliteTenantDatabase(path, **kwargs)


def _postgres(url, parsed, options, pooled):
    try:
        kwargs = db_url.parseresult_to_dict(parsed._replace(query=""),
                                            unquote_password=True, unquote_user=True)
        parsed.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise ConfigurationError("database URL %r is malformed (%s); %s"
                                 % (_redact(url), exc, FORMS)) from exc
    if not kwargs.get("database") or "/" in kwargs["database"]:
        raise ConfigurationError("database URL %r names no database; %s"
                                 % (_redact(url), FORMS))
    schema = options.get("schema")
    if schema is not None:
        check_tenant_schema(schema)
    pg_options = "-c TimeZone=UTC -c DateStyle=ISO -c search_path=%s" % (schema or "public")
    statement = _seconds(url, options, "statement_timeout", None)
    if statement is not None:
        pg_options += " -c statement_timeout=%d" % max(1, round(statement * 1000))
    kwargs["connect_timeout"] = _seconds(url, options, "connect_timeout", CONNECT_TIMEOUT_S,
                                         whole=True)
    kwargs.update({name: options[name] for name in LIBPQ_OPTIONS if name in options})
    cls = PostgresTenantDatabase
    if pooled:
        cls = PooledPostgresTenantDatabase
        kwargs.update(_pool_kwargs(url, options))
    return cls(kwargs.pop("database"), schema=schema, options=pg_options,
               application_name="metricstore", **kwargs)


def _redact(url):
    parsed = urlparse(url)
    if parsed.password:
        return url.replace(":" + parsed.password + "@", ":***@", 1)
    return url
