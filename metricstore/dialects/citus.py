"""Citus: PostgreSQL with the ``citus`` extension (coordinator or worker).

Chosen by :func:`~metricstore.dialects.dialect_for` when the extension is
installed. Everything single-node PostgreSQL does still holds; what differs:

- query shapes: Citus refuses a LATERAL ``LIMIT 1`` probe, an aggregate
  without GROUP BY or a correlated subquery whose outer side is a reference
  table (``servers``); the same per-server index probes are written as
  LATERAL subqueries grouped by ``server_id`` (see :func:`probe`), which
  Citus pushes down to every shard in parallel;
- tier reads filter the distribution column with ``server_id = ANY(:ids)``
  instead of a LATERAL over ``unnest(:ids)`` (see :data:`PER_SERVER`): a
  one-server read is a router query to the server's shard;
- insert counts come from ``RETURNING`` (Citus's row count of a
  distributed ``INSERT ... SELECT`` is the rows sent, not the rows stored);
- sizes and row counts come from the shards (``citus_total_relation_size``,
  a distributed ``count(*)``), not from the coordinator's empty shell tables;
- a partition filled on the coordinator and then attached to a distributed
  table is distributed by Citus; its coordinator copy is truncated at once;
- provisioning a tenant schema makes it a distributed schema
  (schema-based sharding: the whole tenant lives on one worker); such a
  tenant gets :class:`CitusSchemaDialect`, which keeps the single node's
  query shapes (all its queries are router queries).
"""

from .. import queries as Q
from ..errors import ConfigurationError
from .base import Dialect
from .postgres import AGGREGATES, PostgresDialect, PostgresWriter


def probe(table, columns, where, order="collected_at DESC"):
    """A LATERAL subquery: ``table``'s first row for server ``s.id`` in
    ``order`` (one backward/forward index probe, LIMIT 1), wrapped in a GROUP BY
    of the distribution column. Citus refuses the bare LIMIT 1 probe once its
    outer side is a reference table; grouped by ``server_id`` it pushes the
    whole join down, and every shard probes each server (at most one row, so
    ``max(c)`` is that row's ``c``)."""
    picked = ", ".join("max(%s) AS %s" % (c, c) for c in columns)
    return ("(SELECT server_id, %s FROM (SELECT server_id, %s FROM %s WHERE server_id = s.id"
            "%s ORDER BY %s LIMIT 1) probe GROUP BY server_id)"
            % (picked, ", ".join(columns), table, where and " AND " + where, order))


SNAPSHOT_COLUMNS = ("collected_at", "cpu_percent", "memory_percent", "connection_count",
                    "status")
LATEST = ("SELECT s.id, s.name, m.collected_at, m.value FROM servers s CROSS JOIN LATERAL "
          + probe("metrics", ("collected_at", "value"), "metric_type_id = :mid")
          + " m {filter} ORDER BY s.id")
# Citus refuses a LEFT JOIN LATERAL to a reference table: the probes join
# inside, then every server (with or without a snapshot) joins outside.
LATEST_SNAPSHOTS = (
    "SELECT s.id, s.name, x.collected_at, x.cpu_percent, x.memory_percent, "
    "x.connection_count, x.status FROM servers s LEFT JOIN (SELECT p.* FROM servers s "
    "CROSS JOIN LATERAL " + probe("server_snapshots", SNAPSHOT_COLUMNS, "")
    + " p {filter}) x ON x.server_id = s.id {filter} ORDER BY s.id")
# The active servers (one probe per server and shard) come back as an
# intermediate result; the reference table is filtered with them.
ACTIVE = "SELECT p.server_id FROM servers s CROSS JOIN LATERAL %s p"
SILENT = ("SELECT s.id, s.name FROM servers s WHERE s.id NOT IN (%s) AND s.id NOT IN (%s) "
          "ORDER BY s.id" % tuple(
              ACTIVE % probe(t, ("collected_at",), "collected_at >= :since")
              for t in ("metrics", "server_snapshots")))
# Two probes per server (first and last row): two scalar subqueries, each
# one pushed-down query (a LATERAL holding both is refused).
TIME_SPAN = ("SELECT (SELECT min(p.collected_at) FROM servers s CROSS JOIN LATERAL %s p), "
             "(SELECT max(p.collected_at) FROM servers s CROSS JOIN LATERAL %s p)" % (
                 probe("{table}", ("collected_at",), "", "collected_at"),
                 probe("{table}", ("collected_at",), "")))
# Rollup tier status: the same per-series probes (every server x every metric
# type), each a pushed-down LATERAL grouped by server_id; one scalar
# subquery per probe direction, as for TIME_SPAN. {t}: the tier table.
SERIES_PROBE = "SELECT %s(p.{column}) FROM servers s CROSS JOIN metric_types m CROSS JOIN LATERAL %s p"


def series_probe(aggregate, table, column, order):
    return SERIES_PROBE.replace("{column}", column) % (
        aggregate, probe(table, (column,), "metric_type_id = m.id", order))


TIER_SPAN = "SELECT (%s), (%s)" % (series_probe("min", "{t}", "bucket", "bucket"),
                                   series_probe("max", "{t}", "bucket", "bucket DESC"))
TIER_NEWEST = series_probe("max", "{t}", "last_at", "bucket DESC")
RAW_NEWEST = series_probe("max", "metrics", "collected_at", "collected_at DESC")
# top(): the single node's per-server aggregates, grouped by server_id.
TOP_PER_SERVER = (
    "SELECT s.id, a.stat FROM servers s CROSS JOIN LATERAL (SELECT server_id, {aggregate} "
    "AS stat FROM (SELECT server_id, collected_at AS t, value AS v FROM metrics "
    "WHERE server_id = s.id AND metric_type_id = :mid AND collected_at >= :start "
    "AND collected_at < :end) src GROUP BY server_id) a "
    "WHERE a.stat IS NOT NULL ORDER BY a.stat {direction}, s.id LIMIT :n")

# Tier reads (rollups/columns.py): the server ids as a filter on the
# distribution column, not a LATERAL over unnest(): Citus prunes to the
# shards of the ids it is given (one server: a router query, one task) and
# pushes a GROUP BY server_id down whole; the LATERAL form ran one task per
# shard and its HAVING (partial aggregates) was refused.
PER_SERVER = ("SELECT t.server_id AS s, {select} FROM {table} t "
              "WHERE t.server_id = ANY(:ids::int[]) AND {where}")

# Tables whose rows every per-series probe crosses (see CitusDialect.analyze).
SMALL_TABLES = ("servers", "metric_types")
ON_COORDINATOR = "SELECT success, result FROM run_command_on_coordinator(%s)"
SCHEMA_EXISTS = "SELECT 1 FROM pg_namespace WHERE nspname = %s"
IS_DISTRIBUTED = "SELECT 1 FROM pg_dist_partition WHERE logicalrelid = %s::regclass"
# 'n' + replication model 't': a reference table; 'h': hash-distributed;
# 'n' + colocation of a distributed schema: a single-shard table.
CITUS_KIND = ("SELECT CASE WHEN partmethod = 'h' THEN 'distributed' "
              "WHEN repmodel = 't' THEN 'reference' ELSE 'single shard' END "
              "FROM pg_dist_partition WHERE logicalrelid = %s::regclass")
DISTRIBUTED_SCHEMA = ("SELECT 1 FROM pg_dist_schema s JOIN pg_namespace n ON n.oid = s.schemaid "
                      "WHERE n.nspname = %s")
TOTAL_SIZE = ("SELECT COALESCE(SUM(CASE WHEN p.logicalrelid IS NULL "
              "THEN pg_total_relation_size(c.oid) "
              "ELSE citus_total_relation_size(c.oid) END), 0) FROM pg_class c "
              "LEFT JOIN pg_dist_partition p ON p.logicalrelid = c.oid "
              "WHERE c.relkind = 'r' AND c.oid IN "
              "(SELECT relid FROM pg_partition_tree(%s::regclass))")


class CitusDialect(PostgresDialect):
    name = "citus"

    latest = LATEST
    latest_snapshots = LATEST_SNAPSHOTS
    silent = SILENT
    time_span = TIME_SPAN
    tier_span = TIER_SPAN
    tier_newest = TIER_NEWEST
    raw_newest = RAW_NEWEST

    def __init__(self, schema=None, version=None):
        super().__init__(schema)
        self.version = version

    def top(self, stat, direction):
        return self.sql(TOP_PER_SERVER.format(aggregate=AGGREGATES[stat],
                                              direction=direction))

    def ranges_prune(self, column):
        """The ranges' server ids as a filter Citus prunes shards on (the
        join with the unnest alone fanned out to every shard: rate() 22x)."""
        return " AND %s = ANY(:rs::int[])" % column

    def per_server_sql(self, select, table, where, grouped=False, single=False):
        """As :meth:`PostgresDialect.per_server_sql`, as ``server_id =
        ANY(:ids)`` (see :data:`PER_SERVER`); with ``grouped`` a GROUP BY of
        the distribution column, which leaves out servers with no row. One
        server (``single``): ``server_id = :sid``, a router query."""
        if single:
            return Dialect.per_server_sql(self, select, table, where, grouped, single)
        sql = PER_SERVER.format(select=select, table=table, where=where)
        return sql + " GROUP BY t.server_id" if grouped else sql

    def prepare(self, db):
        """The tenant schema: one this creates is a Citus distributed schema
        (schema-based sharding: the tenant's tables form one co-located group
        on one worker). An existing schema is left as it is."""
        if self.schema:
            if not db.execute_sql(SCHEMA_EXISTS, (self.schema,)).fetchone():
                with db.atomic():
                    db.execute_sql("SET LOCAL citus.enable_schema_based_sharding TO on")
                    db.execute_sql("CREATE SCHEMA IF NOT EXISTS %s" % self.quote(self.schema))
                # The tenant is a distributed schema now: later calls on this
                # database get that tenant's dialect (router queries).
                db._metricstore_dialect = CitusSchemaDialect(self.schema, self.version)
            # Never CREATE SCHEMA IF NOT EXISTS for an existing schema here: on
            # Citus 13.2 it makes a serial column created later in the same
            # transaction fail on the workers ("..._id_seq does not exist").
            db.execute_sql("SET search_path TO %s" % self.quote(self.schema))

    def provisioned(self, db):
        self.analyze(db, SMALL_TABLES)

    def analyze(self, db, tables):
        """ANALYZE ``tables`` (Citus runs it on every shard placement). The
        small tables are never analysed by autovacuum (fewer than 50 rows
        change), and without statistics a worker plans each per-series probe
        over 1,130 servers x 510 metric types: past ``jit_above_cost``, so every
        shard task of ``status`` spent ~3 s compiling (measured: 28.7 s ->
        0.9 s for ``rollups status`` on an empty 32-shard tenant)."""
        for table in tables:
            db.execute_sql("ANALYZE %s" % self.quote(table))

    def prepare_distribution(self, db):
        """Before row-based sharding: on the coordinator, in a plain schema
        (created here if missing, so provisioning does not distribute it)."""
        if not self.is_coordinator(db):
            raise ConfigurationError("distribute runs on the Citus coordinator; this URL "
                                     "names a worker node: use the coordinator's URL")
        if not self.schema:
            return
        if db.execute_sql(DISTRIBUTED_SCHEMA, (self.schema,)).fetchone():
            raise ConfigurationError(
                "tenant schema %s is a Citus distributed schema (schema-based sharding: "
                "the whole tenant on one worker) and cannot be sharded by server in "
                "place (Citus cannot undistribute its identity columns); provision the "
                "large tenant under a new schema with `metricstore distribute URL`, "
                "which creates it as a plain schema, and copy its rows there" % self.schema)
        db.execute_sql("CREATE SCHEMA IF NOT EXISTS %s" % self.quote(self.schema))

    def is_coordinator(self, db):
        """Whether this session is on the coordinator (group 0), read-only."""
        (group,) = db.execute_sql("SELECT groupid FROM pg_dist_local_group").fetchone()
        return group == 0

    def insert_drawing_id(self, db, query):
        """On a worker the insert runs on the coordinator: Citus lets workers
        draw only bigint sequence values (from the range ``(group + 1) << 48``,
        which no ``int`` id could hold), and ``servers.id`` is an ``int``
        identity. The row is in the reference (or single-shard) table when
        this returns; the id is read back through this node."""
        if self.is_coordinator(db):
            return super().insert_drawing_id(db, query)
        sql, params = query.bind(db).sql()
        (schema,) = db.execute_sql("SELECT current_schema()").fetchone()
        with db.cursor() as cursor:
            insert = cursor.mogrify(sql, params).decode()
        command = "SET search_path TO %s; %s" % (self.quote(schema), insert)
        rows = db.execute_sql(ON_COORDINATOR, (command,)).fetchall()
        if not rows or not rows[0][0]:
            raise ConfigurationError(
                "cannot register through this worker node: the coordinator, which draws "
                "the ids, refused or could not be reached (%s); check that the "
                "coordinator is in the Citus metadata (citus_set_coordinator_host) and "
                "reachable from the workers, or use the coordinator's URL"
                % (rows[0][1] if rows else "no answer"))

    def is_distributed(self, db, table):
        """Whether ``table`` is a Citus table (distributed, reference or in a
        distributed schema), read-only."""
        return bool(db.execute_sql(IS_DISTRIBUTED, (self.quote(table),)).fetchone())

    def citus_kind(self, db, table):
        """'reference', 'distributed', 'single shard' or None (a local table)."""
        row = db.execute_sql(CITUS_KIND, (self.quote(table),)).fetchone()
        return row[0] if row else None

    def distribute(self, db, reference, distributed, column, shard_count=None):
        """Turn the tenant into reference tables plus co-located hash-distributed
        tables (by ``column``; ``shard_count`` None: citus.shard_count, 32 by
        default); idempotent. Rows already in a table are copied to its shards
        and the coordinator's copy truncated. Returns the tables changed."""
        changed = []
        for table in reference:
            if self.citus_kind(db, table) != "reference":
                db.execute_sql("SELECT create_reference_table(%s::regclass)",
                               (self.quote(table),))
                self._drop_local_copy(db, table)
                changed.append("%s (reference)" % table)
        colocate = "default"
        for table in distributed:
            if self.citus_kind(db, table) != "distributed":
                if colocate == "default" and shard_count:
                    db.execute_sql("SELECT create_distributed_table(%s::regclass, %s, "
                                   "shard_count => %s)", (self.quote(table), column,
                                                          shard_count))
                else:
                    db.execute_sql("SELECT create_distributed_table(%s::regclass, %s, "
                                   "colocate_with => %s)",
                                   (self.quote(table), column, colocate))
                self._drop_local_copy(db, table)
                changed.append("%s (distributed by %s)" % (table, column))
            colocate = self.quote(table) if colocate == "default" else colocate
        return changed

    def _drop_local_copy(self, db, table):
        """Truncate what Citus left of ``table``'s rows on the coordinator."""
        db.execute_sql("SELECT truncate_local_data_after_distributing_table(%s::regclass)",
                       (self.quote(table),))

    def row_count(self, db, table, exact_below=None):
        """Exact: a distributed ``count(*)`` runs on every shard in parallel
        (the coordinator's own statistics describe empty shell tables)."""
        return db.execute_sql("SELECT count(*) FROM %s" % self.quote(table)).fetchone()[0], True

    def table_bytes(self, db, table):
        """Bytes of ``table`` and its indexes on every node holding it."""
        (size,) = db.execute_sql(TOTAL_SIZE, (self.quote(table),)).fetchone()
        return int(size)

    def partition_figures(self, db, partition):
        """``(rows, bytes)`` of a LivePartition, read from its shards (exact)."""
        return (self.row_count(db, partition.name)[0],
                self.table_bytes(db, partition.name))

    def attached(self, db, partition):
        """After ATTACH of a partition filled on the coordinator: Citus has
        copied its rows to the shards; drop the coordinator's hidden copy."""
        if self.is_distributed(db, partition):
            self._drop_local_copy(db, partition)

    def writer(self, db, target, tiers=None):
        return CitusWriter(db, self, target, tiers)


class CitusSchemaDialect(CitusDialect):
    """A tenant in a Citus distributed schema: all its tables are one shard
    each, co-located on one worker, so every query is a router query and the
    single node's per-server index probes stand unchanged."""

    latest = PostgresDialect.latest
    latest_snapshots = PostgresDialect.latest_snapshots
    silent = Q.SILENT
    time_span = Q.TIME_SPAN
    tier_span = Q.TIER_SPAN
    tier_newest = Q.TIER_NEWEST
    raw_newest = Q.RAW_NEWEST

    def top(self, stat, direction):
        return PostgresDialect.top(self, stat, direction)

    def per_server_sql(self, select, table, where, grouped=False, single=False):
        """The single node's LATERAL (one shard: a router query already)."""
        return PostgresDialect.per_server_sql(self, select, table, where, grouped, single)


class CitusWriter(PostgresWriter):
    """Counts the rows stored with RETURNING: on Citus the row count of an
    ``INSERT ... SELECT ... ON CONFLICT DO NOTHING`` is the rows sent."""

    COUNT = "WITH ins AS ({insert} RETURNING 1) SELECT count(*) FROM ins"

    def insert(self, sql):
        self.cursor.execute(self.COUNT.format(insert=sql))
        return self.cursor.fetchone()[0]
