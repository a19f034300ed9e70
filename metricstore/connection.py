"""Open a tenant database from a URL.

    sqlite:///relative/path.db      sqlite:////absolute/path.db
    postgresql://user@host:5432/dbname[?schema=tenant_a]

The URL comes from the argument, else ``DATABASE_URL``, else
:data:`DEFAULT_URL` (a SQLite file in the working directory).
"""

import os
import re
from urllib.parse import parse_qsl, urlparse

import peewee as pw
from playhouse import db_url

from .errors import ConfigurationError

DEFAULT_URL = "sqlite:///metricstore.db"
IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
FORMS = ("expected sqlite:///relative/path.db, sqlite:////absolute/path.db or "
         "postgresql://user[:password]@host[:port]/dbname[?schema=name]")
SQLITE_BUSY_TIMEOUT_S = 30


class SqliteTenantDatabase(pw.SqliteDatabase):
    """SQLite in WAL mode, foreign keys on, a busy timeout; times as epoch us."""
    field_types = {**pw.SqliteDatabase.field_types, "UTCTIMESTAMP": "BIGINT"}


class PostgresTenantDatabase(pw.PostgresqlDatabase):
    """PostgreSQL with the session time zone pinned to UTC."""
    field_types = {**pw.PostgresqlDatabase.field_types, "UTCTIMESTAMP": "TIMESTAMPTZ"}

    def __init__(self, database, schema=None, **kwargs):
        self.schema = schema
        super().__init__(database, **kwargs)

    def _initialize_connection(self, conn):
        # libpq's PGTZ / PGDATESTYLE override the startup options, so pin
        # the zone and the date style again once connected (lasts the session).
        with conn.cursor() as cursor:
            cursor.execute("SET TIME ZONE 'UTC'; SET DateStyle TO ISO")


def default_url():
    """``DATABASE_URL`` if set and not empty, else :data:`DEFAULT_URL`."""
    return os.environ.get("DATABASE_URL") or DEFAULT_URL


def check_identifier(name, what="identifier"):
    """Return ``name`` if it is a safe lower-case SQL identifier, else raise."""
    if not isinstance(name, str) or not IDENTIFIER.match(name):
        raise ConfigurationError(
            "%s %r is not allowed: use 1-63 lower-case letters, digits and "
            "underscores, starting with a letter or underscore" % (what, name))
    return name


def connect(url=None):
    """Return an (unopened) peewee database for ``url``; see the module doc.

    Raises :class:`ConfigurationError` for a malformed URL or unknown scheme.
    """
    url = url or default_url()
    if not isinstance(url, str) or "://" not in url:
        raise ConfigurationError("database URL %r is malformed; %s" % (url, FORMS))
    parsed = urlparse(url)
    scheme = parsed.scheme.lower()
    if scheme == "sqlite":
        return _sqlite(url, parsed)
    if scheme in ("postgres", "postgresql"):
        return _postgres(url, parsed)
    raise ConfigurationError("database URL %r has unknown scheme %r; %s"
                             % (_redact(url), parsed.scheme, FORMS))


def _sqlite(url, parsed):
    if parsed.netloc:
        raise ConfigurationError(
            "database URL %r names a host %r; local databases take three slashes "
            "(sqlite:///tenant.db) or four for an absolute path "
            "(sqlite:////var/lib/tenant.db)" % (url, parsed.netloc))
    path = parsed.path[1:]
    if not path:
        raise ConfigurationError("database URL %r has no file name; %s" % (url, FORMS))
    if parsed.query:
        raise ConfigurationError("database URL %r: SQLite URLs take no options (%r)"
                                 % (url, parsed.query))
    if path != ":memory:":
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            raise ConfigurationError("database URL %r: folder %s does not exist; "
                                     "create it first" % (url, parent))
    return SqliteTenantDatabase(
        path, timeout=SQLITE_BUSY_TIMEOUT_S,
        pragmas={"journal_mode": "wal", "synchronous": "normal",
                 "foreign_keys": 1, "busy_timeout": SQLITE_BUSY_TIMEOUT_S * 1000})


def _postgres(url, parsed):
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
    options = dict(parse_qsl(parsed.query, keep_blank_values=True))
    schema = options.pop("schema", None)
    if options:
        raise ConfigurationError("database URL %r has unknown option(s) %s; the only "
                                 "one is ?schema=name" % (_redact(url), sorted(options)))
    pg_options = "-c TimeZone=UTC -c DateStyle=ISO"
    if schema is not None:
        check_identifier(schema, "schema")
        pg_options += " -c search_path=%s" % schema
    return PostgresTenantDatabase(kwargs.pop("database"), schema=schema,
                                  options=pg_options, application_name="metricstore",
                                  **kwargs)


def _redact(url):
    parsed = urlparse(url)
    if parsed.password:
        return url.replace(":" + parsed.password + "@", ":***@", 1)
    return url
