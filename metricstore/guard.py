"""Every failure of a public call as one of metricstore's errors.

:func:`guarded` wraps a public function, method or generator. A driver
error is classified by the database's dialect (:meth:`Dialect.classify`)
into a narrow :class:`~metricstore.errors.MetricstoreError` subclass whose
message names the call, the database URL (password hidden) and the fix; the
driver's own exception is chained as ``__cause__``.

A connection found dead is discarded at once outside a transaction (inside
one, when the caller's transaction ends), so the next call reconnects. A
read-only call made outside a transaction is retried once on a fresh
connection; a write never is: it raises
:class:`~metricstore.errors.ConnectionLostError`, and re-sending it is safe.
"""

import functools
import inspect
import sqlite3
import threading

import peewee as pw
from playhouse.pool import MaxConnectionsExceeded

from .errors import ConnectError, ConnectionLostError, DatabaseError, MetricstoreError

try:
    import psycopg2
    DRIVER_ERRORS = (pw.PeeweeException, sqlite3.Error, psycopg2.Error)
except ImportError:       # PostgreSQL support not installed
    DRIVER_ERRORS = (pw.PeeweeException, sqlite3.Error)


def cause(exc):
    """The driver's own exception behind a peewee wrapper (or ``exc``)."""
    if not isinstance(exc, pw.PeeweeException):
        return exc
    orig = getattr(exc, "orig", None)            # peewee keeps the driver's error here
    if orig is None and exc.args and isinstance(exc.args[0], BaseException):
        orig = exc.args[0]
    return orig or exc.__context__ or exc


def database_of(args):
    """The peewee database of a guarded call: its first argument, or that
    argument's ``db`` attribute (a repository, a forwarder...)."""
    first = args[0] if args else None
    return first if isinstance(first, pw.Database) else getattr(first, "db", None)


def commits(db):
    """How many COMMITs this thread's connection state has completed."""
    return getattr(getattr(db, "_state", None), "commits", 0)


def translate(db, exc, what, connecting=False, atomic=True, commits_before=None):
    """The metricstore error for driver error ``exc`` raised by call ``what``
    on ``db`` (not raised here: ``raise translate(...) from cause(exc)``).

    Side effect: a connection the driver reports dead is discarded when no
    transaction is open, so the next call opens a new one.
    """
    if isinstance(cause(exc), MetricstoreError):     # raised by our connect() in peewee's wrapper
        return cause(exc)
    where = getattr(db, "url", None) or "the database"
    if isinstance(exc, MaxConnectionsExceeded):
        return ConnectError("%s on %s: every pooled connection stayed in use for the "
                            "pool_timeout; return connections at the end of each request "
                            "(db.close() or db.connection_context()), or raise "
                            "max_connections in the URL" % (what, where))
    driver = cause(exc)
    if not isinstance(exc, DRIVER_ERRORS) and not isinstance(driver, DRIVER_ERRORS):
        return DatabaseError("%s on %s failed: %s: %s" % (what, where, type(exc).__name__,
                                                          _first_line(exc)))
    from .dialects import dialect_for
    lost = bool(db is not None and getattr(db, "connection_lost", lambda: False)())
    cls, reason, fix = dialect_for(db, detect=False).classify(
        driver, connecting=connecting, lost=lost, db=db)
    text = "%s on %s: %s (%s); %s" % (what, where, reason, _first_line(driver), fix)
    if cls is not ConnectionLostError:
        return cls(text)
    in_commit = getattr(db._state, "commit_failed", False)
    committed = commits_before is not None and commits(db) > commits_before
    if not db.in_transaction():
        db.discard_connection()
    if in_commit or not atomic:
        written = None
    else:
        written = committed and not db.in_transaction()
    outcome = {False: "nothing of it was committed",
               True: "it was committed before the connection died",
               None: "it may have been committed before the connection died"}[written]
    return ConnectionLostError("%s on %s: the connection to the server was lost (%s); %s; "
                               "retrying the same call is safe (re-sent rows are never "
                               "stored twice) and the next call opens a new connection"
                               % (what, where, _first_line(driver), outcome), written=written)


def _reraise(db, exc, name, atomic, commits_before=None):
    error = translate(db, exc, name, atomic=atomic, commits_before=commits_before)
    if error is cause(exc):                  # already metricstore's
        raise error from error.__cause__
    raise error from cause(exc)


def _first_line(exc):
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


_calls = threading.local()      # how deep this thread is in guarded calls


def guarded(what=None, read_only=False, atomic=True):
    """Decorator: translate driver errors of a public call (see the module doc).

    ``what``: the name in messages (default: the function's). ``read_only``:
    retry once on a fresh connection after a lost one, outside transactions.
    ``atomic``: the call's writes run in its own transaction, so a loss
    before the COMMIT means nothing was written.
    """
    def decorate(fn):
        name = what or fn.__name__

        if inspect.isgeneratorfunction(fn):
            @functools.wraps(fn)
            def stream(*args, **kwargs):
                db = database_of(args)
                try:
                    yield from fn(*args, **kwargs)
                except MetricstoreError:
                    raise
                except DRIVER_ERRORS as exc:
                    _reraise(db, exc, name, atomic)
            return stream

        def attempt(db, args, kwargs):
            # Only the outermost guarded call translates, so messages name
            # the call the caller made (record_many, not an inner lookup).
            outer = not getattr(_calls, "depth", 0)
            _calls.depth = getattr(_calls, "depth", 0) + 1
            before = commits(db)
            try:
                return fn(*args, **kwargs)
            except MetricstoreError:
                raise
            except DRIVER_ERRORS as exc:
                if not outer:
                    raise
                _reraise(db, exc, name, atomic, before)
            finally:
                _calls.depth -= 1

        @functools.wraps(fn)
        def call(*args, **kwargs):
            db = database_of(args)
            if not read_only or db is None or db.in_transaction():
                return attempt(db, args, kwargs)
            try:
                return attempt(db, args, kwargs)
            except ConnectionLostError:
                return attempt(db, args, kwargs)
        return call
    return decorate
