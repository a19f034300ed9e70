"""SQLite: the embedded default.

Times are INTEGER microseconds since the Unix epoch (UTC): exact, ordered,
8 bytes, and measured 1.08x faster and 1.18x smaller than ISO-8601 text.
Series tables are WITHOUT ROWID, clustered on their natural key, so a
series' points sit together and the key is also the covering index.
"""

import fcntl
import json
import os
from datetime import timedelta
from itertools import repeat
from operator import add, itemgetter

import peewee as pw

from .. import errors as E
from ..queries import PERCENTILES
from ..timeutil import EPOCH, ONE_US, from_micros, to_micros
from .base import Dialect

PLAIN = {"avg": "AVG(v)", "min": "MIN(v)", "max": "MAX(v)", "sum": "SUM(v)",
         "count": "COUNT(*)"}
# Window columns for grouped_stats, each computed only when a stat needs it
# (every window is a sort of the whole range).
ORDER_WINDOWS = ("ROW_NUMBER() OVER (PARTITION BY g ORDER BY v) - 1 AS rn, "
                 "COUNT(*) OVER (PARTITION BY g) AS n")
LAST_WINDOW = "ROW_NUMBER() OVER (PARTITION BY g ORDER BY t DESC) AS recent"


READ_ONLY = (E.ReadOnlyError, "the file (or its folder, or its file system) is read-only",
             "make the file and its folder writable (SQLite writes -wal/-shm files beside it)")
# (message fragment, class, what happened, the fix); first match wins.
SQLITE_ERRORS = (
    ("database is locked", E.LockTimeoutError,
     "another connection held the write lock longer than busy_timeout",
     "retry, or raise ?busy_timeout= (seconds) in the URL"),
    ("database table is locked", E.LockTimeoutError, "a table is locked by this connection",
     "finish the open statement or transaction first"),
    ("disk is full", E.DiskFullError, "the disk holding the file is full",
     "free space on that disk; nothing of the failed call was kept"),
    ("readonly database",) + READ_ONLY,
    ("unable to open database", E.DatabaseMissingError, "the file cannot be opened",
     "check the path in the URL and the folder's permissions"),
    ("no such table", E.SchemaError, "the tenant is not provisioned",
     "run `metricstore init URL` or metricstore.provision(db) first"),
    ("not a database", E.DatabaseError, "the file is not an SQLite database",
     "point the URL at a metricstore SQLite file"),
    ("malformed", E.DatabaseError, "the file is corrupt",
     "restore it from a backup; `sqlite3 FILE .recover` may save rows"),
    ("disk i/o error", E.DatabaseError, "the operating system failed a read or write",
     "check the disk and the file system"),
)


class SqliteDialect(Dialect):
    name = "sqlite"
    partitioned = False
    types = {
        "serial": "INTEGER PRIMARY KEY", "bigserial": "INTEGER PRIMARY KEY",
        "int": "INTEGER", "smallint": "INTEGER", "bigint": "INTEGER",
        "float": "REAL", "text": "TEXT", "bool": "INTEGER",
        "timestamp": "INTEGER", "blob": "BLOB",
    }

    def table_suffix(self, table):
        return " WITHOUT ROWID" if table.series else ""

    def classify(self, exc, connecting=False, lost=False, db=None):
        message = str(exc).lower()
        path = getattr(db, "database", None)
        if "unable to open" in message and path and os.path.isfile(path) \
                and not os.access(os.path.dirname(os.path.abspath(path)), os.W_OK):
            # WAL mode must create FILE-shm beside the file: a read-only
            # folder or file system fails to "open" an existing file.
            return READ_ONLY
        for fragment, cls, reason, fix in SQLITE_ERRORS:
            if fragment in message:
                return cls, reason, fix
        return super().classify(exc, connecting, lost, db)

    def time_param(self, dt):
        return to_micros(dt)

    def time_result(self, value):
        return None if value is None else from_micros(value)

    def time_results(self, values):
        # EPOCH + timedelta(0, 0, us) for each value, iterated in C.
        return map(add, repeat(EPOCH), map(timedelta, repeat(0), repeat(0), values))

    # One index probe per server: MAX() on the key prefix, then the row.
    latest = ("SELECT s.id, s.name, m.collected_at, m.value FROM servers s "
              "JOIN metrics m ON m.server_id = s.id AND m.metric_type_id = :mid "
              "AND m.collected_at = (SELECT MAX(collected_at) FROM metrics "
              "WHERE server_id = s.id AND metric_type_id = :mid) {filter} ORDER BY s.id")
    latest_snapshots = (
        "SELECT s.id, s.name, x.collected_at, x.cpu_percent, x.memory_percent, "
        "x.connection_count, x.status FROM servers s LEFT JOIN server_snapshots x "
        "ON x.server_id = s.id AND x.collected_at = (SELECT MAX(collected_at) "
        "FROM server_snapshots WHERE server_id = s.id) {filter} ORDER BY s.id")

    def bucket(self, column):
        return "({0} - {0} % :every)".format(column)

    def seconds(self, later, earlier):
        return "(({0} - {1}) / 1000000.0)".format(later, earlier)

    def interval_param(self, delta):
        return delta // ONE_US

    def id_filter(self, column):
        return "WHERE %s IN (SELECT value FROM json_each(:ids))" % column

    def ids_param(self, ids):
        return json.dumps(list(ids))

    ids_source = "(SELECT value AS s FROM json_each(:ids)) r"   # server ids as a relation

    def grouped_stats(self, source, stats):
        """Plain aggregates; ``last`` and percentiles through window functions
        (SQLite has no percentile aggregate): the two order statistics around
        p*(n-1), interpolated as PostgreSQL's percentile_cont does."""
        if not any(s == "last" or s in PERCENTILES for s in stats):
            cols = ", ".join('%s AS "%s"' % (PLAIN[s], s) for s in stats)
            return "SELECT g, %s FROM (%s) src GROUP BY g" % (cols, source)
        percentiles = any(s in PERCENTILES for s in stats)
        windows = ([ORDER_WINDOWS] if percentiles else []) + (
            [LAST_WINDOW] if "last" in stats else [])
        middle, outer = (["MAX(n) AS n"] if percentiles else []), []
        for s in stats:
            if s in PLAIN:
                middle.append('%s AS "%s"' % (PLAIN[s], s))
                outer.append('"%s"' % s)
            elif s == "last":
                middle.append('MAX(CASE WHEN recent = 1 THEN v END) AS "last"')
                outer.append('"last"')
            else:
                pos = "%r * (n - 1)" % PERCENTILES[s]
                middle.append('MAX(CASE WHEN rn = CAST(%s AS INTEGER) THEN v END) AS "%s_lo"'
                              % (pos, s))
                middle.append('MAX(CASE WHEN rn = CAST(%s AS INTEGER) + 1 THEN v END) '
                              'AS "%s_hi"' % (pos, s))
                outer.append('"{0}_lo" + (COALESCE("{0}_hi", "{0}_lo") - "{0}_lo") * '
                             '({1} - CAST({1} AS INTEGER)) AS "{0}"'.format(s, pos))
        ranked = "SELECT g, t, v, %s FROM (%s) src" % (", ".join(windows), source)
        return "SELECT g, %s FROM (SELECT g, %s FROM (%s) r GROUP BY g) agg" % (
            ", ".join(outer), ", ".join(middle), ranked)

    def write_transaction(self, db):
        # BEGIN IMMEDIATE takes the write lock first: two writers queue on the
        # busy timeout instead of failing to upgrade a read lock.
        return db.atomic("IMMEDIATE")

    def table_columns(self, db, table):
        rows = db.execute_sql("SELECT name, type, \"notnull\" FROM pragma_table_info(?)",
                              (table,)).fetchall()
        return {name: (type_, bool(notnull)) for name, type_, notnull in rows}

    def table_indexes(self, db, table):
        out = {}
        for _, name, unique, origin, _ in db.execute_sql(
                "SELECT * FROM pragma_index_list(?)", (table,)).fetchall():
            cols = [r[0] for r in db.execute_sql(
                "SELECT name FROM pragma_index_xinfo(?) WHERE key = 1 ORDER BY seqno",
                (name,)).fetchall()]
            out[name] = (bool(unique), tuple(cols))
        return out

    def table_bytes(self, db, table):
        names = [table] + list(self.table_indexes(db, table))
        marks = ", ".join("?" for _ in names)
        (size,) = db.execute_sql(
            "SELECT COALESCE(SUM(pgsize), 0) FROM dbstat WHERE name IN (%s)" % marks,
            names).fetchone()
        return size

    def micros_sql(self, expr):
        return expr

    def time_from_micros_sql(self, expr):
        return expr

    ranges_source = ("(SELECT json_extract(value, '$[0]') AS s, json_extract(value, '$[1]') AS m, "
                     "json_extract(value, '$[2]') AS lo, json_extract(value, '$[3]') AS hi "
                     "FROM json_each(:ranges)) r")

    def ranges_param(self, ranges):
        return {"ranges": json.dumps(ranges)}

    def upsert_rows(self, db, table, columns, rows):
        sql = self.upsert_sql(table, columns,
                              "VALUES (%s)" % ", ".join("?" * (len(columns) + 3)))
        db.cursor().executemany(sql, rows)

    def outbox_trigger_sql(self, trigger, table, outbox, mapping):
        # INSERT OR IGNORE does not fire the trigger for a row it ignores.
        values = ", ".join("NEW.%s" % self.quote(src) if src else "NULL" for _, src in mapping)
        return ["CREATE TRIGGER IF NOT EXISTS %s AFTER INSERT ON %s BEGIN "
                "INSERT INTO %s (%s) VALUES (%s); END" % (
                    self.quote(trigger), self.quote(table), self.quote(outbox),
                    self.cols([c for c, _ in mapping]), values)]

    def drop_trigger_sql(self, trigger, table):
        return ["DROP TRIGGER IF EXISTS %s" % self.quote(trigger)]

    def trigger_exists(self, db, trigger):
        return db.execute_sql("SELECT 1 FROM sqlite_master WHERE type = 'trigger' "
                              "AND name = ?", (trigger,)).fetchone() is not None

    def process_lock(self, db, name):
        """An exclusive ``flock`` on ``<database file>.<name>.lock``."""
        path = "%s.%s.lock" % (os.path.abspath(db.database), name)
        handle = open(path, "a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return None
        return handle.close

    def used_bytes(self, db, tables):
        """The whole file's pages in use (page_count - freelist_count) x page_size."""
        (pages,), (free,), (size,) = (db.execute_sql("PRAGMA %s" % p).fetchone()
                                      for p in ("page_count", "freelist_count", "page_size"))
        return (pages - free) * size

    def writer(self, db, target, tiers=None):
        """Bulk writer for ingest: rows staged in a TEMP table outside any lock,
        then one INSERT OR IGNORE ... SELECT per commit under BEGIN IMMEDIATE
        (with ``tiers``, the rollup update in that same transaction)."""
        return SqliteWriter(db, self, target, tiers)


def _in_transaction(db):
    """Whether SQLite (not peewee's bookkeeping) has a transaction open."""
    return not db.is_closed() and db.connection().in_transaction


class SqliteWriter:
    """See :meth:`SqliteDialect.writer`. Rows: value columns then epoch us.

    Staging: each chunk is sorted by key (stable, so of rows repeating a key
    the first still wins) and appended to ``temp.metricstore_stage_<table>``.
    TEMP tables live in the connection's temp database, so filling it takes
    no lock on the tenant file: other writers (a collector, maintenance) go
    on while the input is read and validated, however slowly it arrives.
    :meth:`flush` then takes the write lock for one
    ``INSERT OR IGNORE ... SELECT`` in staging order (key order within each
    chunk, as measured fastest: one series' rows hit the same B-tree pages
    back to back) and empties the stage. One flush is one transaction: an
    atomic batch is flushed once, at the end.
    """

    def __init__(self, db, dialect, target, tiers=None):
        q = dialect.quote
        names = dialect.cols(target.columns + ("collected_at",))
        self.tiers = tiers
        self.db, self.dialect = db, dialect
        self.stage = "temp." + q("metricstore_stage_" + target.table)
        self.create = "CREATE TEMP TABLE IF NOT EXISTS %s (%s)" % (self.stage, names)
        self.append = "INSERT INTO %s VALUES (%s)" % (
            self.stage, ", ".join("?" * (len(target.columns) + 1)))
        self.insert = ("INSERT OR IGNORE INTO main.%s (%s) SELECT %s FROM %s ORDER BY rowid"
                       % (q(target.table), names, names, self.stage))
        self.order = itemgetter(*target.key_positions)
        self.staged = 0

    def __enter__(self):
        self.cursor = self.db.cursor()
        self.cursor.execute(self.create)
        self.cursor.execute("DELETE FROM %s" % self.stage)
        return self

    def add(self, rows):
        if rows:
            rows = sorted(rows, key=self.order)
            with self.db.atomic():      # a transaction on the temp database only
                self.cursor.executemany(self.append, rows)
            self.staged += len(rows)
            if self.tiers is not None:
                self.tiers.add(rows)

    def flush(self, ensure_partitions):
        """Insert the staged rows in one transaction; return how many were new."""
        if not self.staged:
            return 0
        with self.dialect.write_transaction(self.db):
            inserted = self.cursor.execute(self.insert).rowcount
            if self.tiers is not None:
                self.tiers.flushed(inserted)
        self._clear()
        return inserted

    def _clear(self):
        self.cursor.execute("DELETE FROM %s" % self.stage)
        self.staged = 0

    def __exit__(self, exc_type, *exc):
        if exc_type is not None and self.staged and not _in_transaction(self.db):
            try:
                self._clear()               # free the staged rows now
            except pw.DatabaseError:
                pass                        # never hide the error being raised
        return False
