"""005: the outbox carries each metric row's value; compacted 5-minute states wait to be forwarded.

- ``forward_outbox.value``: a copy of the metric row's value, written by the
  outbox trigger, so reading a batch needs no join to ``metrics`` (snapshot
  entries keep NULL and are still read from ``server_snapshots``). Entries
  already queued get their value here; a spool's triggers are recreated.
- ``forward_compacted``: 5-minute states (the columns of a rollup tier row)
  of buckets the spool cap compacted before dropping their raw rows, in
  order (``seq``), until the forwarder has shipped them.
"""

from metricstore.dialects import Column, Table, dialect_for
from metricstore.forwarding.outbox import TRIGGERS

VALUE = Column("value", "float", null=True)
COMPACTED = Table("forward_compacted", (
    Column("seq", "bigserial"),
    Column("server_id", "int"),
    Column("metric_type_id", "smallint"),
    Column("bucket", "timestamp"),
    Column("n", "int"),
    Column("total", "float"),
    Column("low", "float"),
    Column("high", "float"),
    Column("first_at", "bigint"),          # epoch microseconds (UTC)
    Column("first_v", "float"),
    Column("last_at", "bigint"),
    Column("last_v", "float"),
    Column("increase", "float", null=True),  # counters only
    Column("elapsed", "float", null=True),
    Column("pairs", "int", null=True),
    Column("sketch", "blob"),
))
BACKFILL = ("UPDATE forward_outbox SET value = (SELECT m.value FROM metrics m "
            "WHERE m.server_id = forward_outbox.server_id "
            "AND m.metric_type_id = forward_outbox.metric_type_id "
            "AND m.collected_at = forward_outbox.collected_at) "
            "WHERE metric_type_id IS NOT NULL")


def migrate(migrator, database, *, fake=False):
    d = dialect_for(database)
    for statement in d.add_column_sql("forward_outbox", VALUE):
        database.execute_sql(statement)
    d.create_tables(database, (COMPACTED,))
    if fake:
        return
    database.execute_sql(BACKFILL)
    for trigger, table, mapping in TRIGGERS:        # a spool: its triggers copy the value
        if d.trigger_exists(database, trigger):
            for sql in d.drop_trigger_sql(trigger, table) + d.outbox_trigger_sql(
                    trigger, table, "forward_outbox", mapping):
                database.execute_sql(sql)


def rollback(migrator, database, *, fake=False):
    d = dialect_for(database)
    d.drop_tables(database, (COMPACTED,))
    for trigger, table, mapping in TRIGGERS:
        if d.trigger_exists(database, trigger):
            old = tuple(m for m in mapping if m[0] != "value")
            for sql in d.drop_trigger_sql(trigger, table) + d.outbox_trigger_sql(
                    trigger, table, "forward_outbox", old):
                database.execute_sql(sql)
    database.execute_sql("ALTER TABLE forward_outbox DROP COLUMN value")
