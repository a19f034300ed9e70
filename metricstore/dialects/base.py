"""What every engine provides; subclasses fill in the engine's SQL."""

from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from .. import queries as Q
from ..errors import ConfigurationError, DatabaseError


@dataclass(frozen=True)
class Column:
    """A column in engine-neutral terms; ``type`` is a key of ``Dialect.types``."""
    name: str
    type: str
    null: bool = False
    default: str = None
    check: str = None


@dataclass(frozen=True)
class Table:
    """A table in engine-neutral terms.

    ``series`` tables are keyed by time: partitioned by month of ``time_column``
    on PostgreSQL, clustered on their primary key (WITHOUT ROWID) on SQLite.
    ``include`` columns ride in the primary key's index where the engine can.
    """
    name: str
    columns: tuple
    primary_key: tuple = ()
    include: tuple = ()
    unique: tuple = ()
    indexes: tuple = ()          # (index_name, (columns...))
    checks: tuple = ()
    series: bool = False
    time_column: str = "collected_at"
    references: dict = field(default_factory=dict)   # column -> "table(column)"


class Dialect:
    """Base class: engine-neutral helpers plus the methods engines override."""

    name = None
    partitioned = False
    types = {}

    # -- identifiers and DDL -------------------------------------------------
    @staticmethod
    def quote(identifier):
        """Quote an identifier (double quotes doubled)."""
        return '"%s"' % identifier.replace('"', '""')

    def column_sql(self, column):
        parts = [self.quote(column.name), self.types[column.type]]
        if not column.null and column.type != "serial":
            parts.append("NOT NULL")
        if column.default is not None:
            parts.append("DEFAULT " + column.default)
        if column.check:
            parts.append("CHECK (%s)" % column.check)
        return " ".join(parts)

    def add_column_sql(self, table, column):
        """Statements adding ``column`` to an existing ``table``."""
        return ["ALTER TABLE %s ADD COLUMN %s" % (self.quote(table), self.column_sql(column))]

    def cols(self, names):
        return ", ".join(self.quote(n) for n in names)

    def table_body(self, table):
        lines = [self.column_sql(c) for c in table.columns]
        if table.primary_key:
            lines.append(self.primary_key_sql(table))
        for cols in table.unique:
            lines.append("UNIQUE (%s)" % self.cols(cols))
        for col, target in table.references.items():
            lines.append("FOREIGN KEY (%s) REFERENCES %s" % (self.quote(col), target))
        for check in table.checks:
            lines.append("CHECK (%s)" % check)
        return "(\n    " + ",\n    ".join(lines) + "\n)"

    def primary_key_sql(self, table):
        return "PRIMARY KEY (%s)" % self.cols(table.primary_key)

    def create_table_sql(self, table):
        """Statements creating ``table`` and its indexes (idempotent)."""
        out = ["CREATE TABLE IF NOT EXISTS %s %s%s" % (
            self.quote(table.name), self.table_body(table), self.table_suffix(table))]
        for index_name, cols in table.indexes:
            out.append("CREATE INDEX IF NOT EXISTS %s ON %s (%s)" % (
                self.quote(index_name), self.quote(table.name), self.cols(cols)))
        return out

    def table_suffix(self, table):
        return ""

    def create_tables(self, db, tables):
        """Run :meth:`create_table_sql` for each of ``tables``, in order (idempotent)."""
        for table in tables:
            for statement in self.create_table_sql(table):
                db.execute_sql(statement)

    def drop_tables(self, db, tables):
        """Drop ``tables`` if they exist, last first (what a migration's rollback does)."""
        for table in reversed(tables):
            db.execute_sql("DROP TABLE IF EXISTS %s" % self.quote(table.name))

    def prepare(self, db):
        """Create what must exist before migrations (e.g. the tenant schema)."""

    def provisioned(self, db):
        """Called at the end of every provisioning (and distributing) run, outside
        its transactions (idempotent)."""

    # -- time ------------------------------------------------------------------
    def time_param(self, dt):
        """Aware UTC datetime -> the value bound for a time column."""
        raise NotImplementedError

    def time_result(self, value):
        """A time column's value as read -> aware UTC datetime."""
        raise NotImplementedError

    def time_results(self, values):
        """An iterator decoding a sequence of time column values (no NULLs)."""
        return map(self.time_result, values)

    # -- transactions and locks -------------------------------------------------
    def write_transaction(self, db):
        """A transaction that takes the write lock up front."""
        return db.atomic()

    @contextmanager
    def lock(self, db, name, timeout_s=None):
        """Serialise ``name`` across processes for the current transaction."""
        yield

    # -- queries ----------------------------------------------------------------
    # Shared templates (metricstore.queries) use :name parameters and these
    # fragments; sql() turns them into the driver's parameter style.
    latest = None              # latest metric row per server: :mid, {filter}
    latest_snapshots = None    # latest snapshot per server (LEFT JOIN): {filter}
    silent = Q.SILENT          # servers with no row since :since
    time_span = Q.TIME_SPAN    # first and last collected_at of {table}
    tier_span = Q.TIER_SPAN    # first and last bucket of tier table {t}
    tier_newest = Q.TIER_NEWEST  # newest sample (epoch us) in tier table {t}
    raw_newest = Q.RAW_NEWEST  # newest raw collected_at

    def sql(self, template, **fragments):
        """A template with its fragments filled in, in the driver's style."""
        return template.format(**fragments) if fragments else template

    def bucket(self, column):
        """Start of the UTC-aligned bucket (width :every) holding ``column``."""
        raise NotImplementedError

    def seconds(self, later, earlier):
        """Seconds (float) between two time expressions."""
        raise NotImplementedError

    def interval_param(self, delta):
        """A timedelta as bound for comparison with time differences."""
        raise NotImplementedError

    def id_filter(self, column):
        """``WHERE column`` is one of the :ids list parameter."""
        raise NotImplementedError

    def ids_param(self, ids):
        raise NotImplementedError

    def top(self, stat, direction):
        """SQL ranking servers by ``stat`` over :mid, [:start, :end), LIMIT :n."""
        grouped = self.grouped_stats(Q.TOP_SOURCE, (stat,))
        return self.sql(Q.TOP.format(grouped=grouped, stat=stat, direction=direction))

    def grouped_stats(self, source, stats):
        """``SELECT g, <stat>...`` over ``source`` rows (g, t, v) grouped by g."""
        raise NotImplementedError

    # -- errors ---------------------------------------------------------------------
    def classify(self, exc, connecting=False, lost=False, db=None):
        """``(error class, what happened, the fix)`` for driver error ``exc``.

        ``connecting``: raised while opening the connection. ``lost``: the
        driver reports the connection dead. ``db``: the database it came
        from. Read-only. See :mod:`metricstore.guard`.
        """
        return DatabaseError, "the database failed", "see the chained driver error"

    # -- introspection -----------------------------------------------------------
    def table_columns(self, db, table):
        raise NotImplementedError

    def table_indexes(self, db, table):
        """``{index_name: (unique, (columns...))}`` for ``table``, keys included."""
        raise NotImplementedError

    def row_count(self, db, table):
        """``(rows, exact)``: the row count of ``table`` (an estimate where
        counting would scan a large table)."""
        return db.execute_sql("SELECT count(*) FROM %s" % self.quote(table)).fetchone()[0], True

    def table_bytes(self, db, table):
        """Bytes used by ``table`` and its indexes (all partitions)."""
        raise NotImplementedError

    # -- rollup tiers ----------------------------------------------------------
    def micros_sql(self, expr):
        """SQL for a time expression as integer epoch microseconds (UTC)."""
        raise NotImplementedError

    def time_from_micros_sql(self, expr):
        """SQL for epoch microseconds ``expr`` as a time column value."""
        raise NotImplementedError

    def read_time_sql(self, expr):
        """SQL for time ``expr`` as the second column of :meth:`fetch_numbers`
        and :meth:`fetch_blobs` rows (which return it as epoch microseconds)."""
        return self.micros_sql(expr)

    ranges_source = None      # rows (s, m, lo, hi) of the :ranges parameter (lo, hi in us)
    ids_source = None         # rows (s) of the :ids parameter (see ids_param)

    def ranges_prune(self, column):
        """An extra ``AND ...`` on ``column`` (a server id) for a join with
        :attr:`ranges_source`, letting a sharded engine route it; '' here."""
        return ""
    nan_sql = "NULL"          # a float the array readers return as NaN
    packed_blobs = None       # aggregates: blobs concatenated and their sizes (or None)
    packed_values = None      # aggregate: an array of values (or None)

    def fetch_numbers(self, db, sql, params, width, timed=True):
        """The rows of ``sql`` (``width`` columns, all non-NULL numbers) as
        arrays: the first two int64 (server id, time us), the rest float64.
        The time column is :meth:`read_time_sql` (``timed``) or the integer 0."""
        rows = db.execute_sql(sql, params).fetchall()
        if not rows:
            return [np.zeros(0, np.int64)] * 2 + [np.zeros(0)] * (width - 2)
        # One float64 matrix in one C call (~2x zip + a conversion a column):
        # ids and epoch microseconds below 2**53 (year 2255) stay exact.
        matrix = np.array(rows, dtype=np.float64)
        return [matrix[:, i].astype(np.int64) if i < 2 else matrix[:, i]
                for i in range(width)]

    def fetch_blobs(self, db, sql, params, width):
        """The rows of ``sql`` (``width`` columns: server id, time as
        :meth:`read_time_sql`, non-NULL numbers, then a blob or NULL) as
        arrays (int64, int64 us, float64...) and, last, the blobs: a list
        (None for NULL) or :class:`Spans`."""
        rows = db.execute_sql(sql, params).fetchall()
        if not rows:
            return [np.zeros(0, np.int64)] * 2 + [np.zeros(0)] * (width - 3) + [[]]
        cols = list(zip(*rows))
        return [np.asarray(c, dtype=np.int64 if i < 2 else np.float64)
                for i, c in enumerate(cols[:-1])] + [list(cols[-1])]

    def fetch_packed(self, db, sql, params, width, raw):
        """Rows of ``sql``, one a server: server id, 0, ``width - 1``
        aggregates, then the packed sketches (as :class:`Spans`, their
        sizes) or, with ``raw``, the array of values. Returned as columns:
        ``(numbers, spans, sizes, count)`` or ``(numbers, values, count)``,
        ``numbers`` the fixed columns' arrays and ``count`` the sketches
        (values) of each row, in order."""
        return packed_rows(db.execute_sql(sql, params).fetchall(), width, raw)

    def per_server_sql(self, select, table, where, grouped=False, single=False):
        """``SELECT server id, <select>`` over the rows (alias ``t``) of
        ``table`` matching ``where`` of each server in ``:ids`` (``single``:
        of the one server ``:sid``, a plain index range scan); with
        ``grouped`` one row a server holding the aggregates of ``select``
        (servers with no row left out)."""
        if single:
            sql = "SELECT t.server_id AS s, %s FROM %s t WHERE t.server_id = :sid AND %s" % (
                select, table, where)
            return sql + " GROUP BY t.server_id" if grouped else sql
        sql = "SELECT r.s, %s FROM %s JOIN %s t ON t.server_id = r.s AND %s" % (
            select, self.ids_source, table, where)
        return sql + " GROUP BY r.s" if grouped else sql

    def ranges_param(self, ranges):
        """Parameters for :attr:`ranges_source` from ``[(sid, mid, lo_us, hi_us)]``."""
        raise NotImplementedError

    def upsert_rows(self, db, table, columns, rows):
        """Insert ``rows`` (server_id, metric_type_id, bucket us, then ``columns``)
        into a tier table, replacing rows with the same key."""
        raise NotImplementedError

    def upsert_sql(self, table, columns, source):
        """INSERT of ``source`` (``VALUES ...`` or a ``SELECT``) into a tier
        table, replacing the rows of the same (server, metric, bucket)."""
        names = ("server_id", "metric_type_id", "bucket") + tuple(columns)
        return ("INSERT INTO %s (%s) %s ON CONFLICT (server_id, metric_type_id, bucket) "
                "DO UPDATE SET %s" % (self.quote(table), self.cols(names), source,
                                      ", ".join("%s = excluded.%s" % (self.quote(c), self.quote(c))
                                                for c in columns)))
    # -- store and forward (metricstore.forwarding) --------------------------------
    def outbox_trigger_sql(self, trigger, table, outbox, mapping):
        """Statements creating ``trigger``: every row really inserted into
        ``table`` (not one ignored as a duplicate) adds a row to ``outbox`` in
        the same transaction. ``mapping``: (outbox column, column of ``table``
        or None for NULL) pairs. Idempotent."""
        raise NotImplementedError

    def drop_trigger_sql(self, trigger, table):
        raise NotImplementedError

    def trigger_exists(self, db, trigger):
        raise NotImplementedError

    def process_lock(self, db, name):
        """A lock on ``name`` held by this process until ``release()``, or None
        if another process holds it. It dies with the process (kill -9 too)."""
        raise NotImplementedError

    def used_bytes(self, db, tables):
        """Bytes the database uses for ``tables`` (cheap enough to poll)."""
        return sum(self.table_bytes(db, t) for t in tables)

    # -- scale-out (Citus) ---------------------------------------------------------
    def partition_figures(self, db, partition):
        """``(rows or None, bytes)`` of a LivePartition, as shown to people:
        the catalog's estimate and size where they describe the data."""
        return partition.rows_estimate, partition.bytes

    def prepare_distribution(self, db):
        """Check that this database can shard tables (only a Citus coordinator can)."""
        raise ConfigurationError(
            "%s cannot distribute tables: `metricstore distribute` needs the coordinator "
            "of a Citus cluster (PostgreSQL with CREATE EXTENSION citus)" % self.name)

    def distribute(self, db, reference, distributed, column, shard_count=None):
        """Make ``reference`` tables reference tables and shard ``distributed``
        tables by ``column``, co-located (after :meth:`prepare_distribution`)."""
        raise NotImplementedError

    def insert_drawing_id(self, db, query):
        """Run peewee insert ``query`` into a table whose ``id`` its identity
        draws (registering a server). Writes."""
        query.execute(db)

    def attached(self, db, partition):
        """Called after a partition filled on this node was attached."""


class Spans:
    """Blobs left inside one buffer (what a binary read returns): ``buffer``
    (a uint8 array), each blob's ``starts`` and ``sizes`` in it (int64
    arrays; size -1 for NULL)."""

    def __init__(self, buffer, starts, sizes):
        self.buffer, self.starts, self.sizes = buffer, starts, sizes

    def __len__(self):
        return len(self.sizes)


def packed_rows(rows, width, raw):
    """Per-server packed rows (see :meth:`Dialect.fetch_packed`) as columns."""
    numbers = [np.asarray([r[i] for r in rows], dtype=np.int64 if i < 2 else np.float64)
               for i in range(1 + width)]
    packs = [np.asarray(r[-1] if r[-1] is not None else (), dtype=np.float64 if raw else np.int64)
             for r in rows]
    count = np.fromiter(map(len, packs), dtype=np.int64, count=len(packs))
    flat = np.concatenate(packs + [np.zeros(0, dtype=np.float64 if raw else np.int64)])
    if raw:
        return numbers, flat, count
    data = np.frombuffer(b"".join(bytes(r[-2] or b"") for r in rows), dtype=np.uint8)
    return numbers, Spans(data, np.cumsum(flat) - flat, flat), flat, count
