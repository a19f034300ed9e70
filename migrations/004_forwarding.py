"""004: store and forward bookkeeping (metricstore.forwarding).

Created on every tenant, whatever the engine; a database only acts as a
spool once ``metricstore.forwarding.enable_spool`` installs the outbox
triggers, and ``forward_acks`` is only written on the receiving side.

- ``forward_outbox``: one entry per stored row not yet forwarded, in arrival
  order (``seq``); ``metric_type_id`` NULL means a server snapshot.
- ``forward_state``: one row: spool id, destination, the batch in flight,
  last success and last error.
- ``forward_counts``: rows per outcome (forwarded, duplicate, expired,
  quarantined, compacted, dropped:<reason>, pruned).
- ``forward_servers``: local server id -> central server id (by name).
- ``forward_quarantine``: rows the central database refused, with the reason.
- ``forward_acks`` (central side): the last batch each spool committed, in
  the same transaction as its rows, so a forwarder killed between the
  central commit and its local bookkeeping learns the outcome on restart.
"""

from metricstore.dialects import Column, Table, dialect_for

TABLES = (
    Table("forward_outbox", (
        Column("seq", "bigserial"),
        Column("server_id", "int"),
        Column("metric_type_id", "smallint", null=True),
        Column("collected_at", "timestamp"),
    )),
    Table("forward_state", (
        Column("id", "int", default="1", check="id = 1"),
        Column("spool_id", "text", null=True),
        Column("destination", "text", null=True),
        Column("enabled_at", "timestamp", null=True),
        Column("batch", "bigint", default="0"),
        Column("inflight", "text", null=True),
        Column("thinned_through", "bigint", default="0"),
        Column("last_success_at", "timestamp", null=True),
        Column("last_error_at", "timestamp", null=True),
        Column("last_error", "text", null=True),
    ), primary_key=("id",)),
    Table("forward_counts", (
        Column("name", "text"),
        Column("rows", "bigint", default="0"),
    ), primary_key=("name",)),
    Table("forward_servers", (
        Column("local_id", "int"),
        Column("central_id", "int"),
        Column("name", "text"),
    ), primary_key=("local_id",)),
    Table("forward_quarantine", (
        Column("id", "bigserial"),
        Column("quarantined_at", "timestamp"),
        Column("server_name", "text"),
        Column("metric", "text", null=True),
        Column("collected_at", "timestamp"),
        Column("row", "text"),
        Column("field", "text"),
        Column("reason", "text"),
    )),
    Table("forward_acks", (
        Column("spool_id", "text"),
        Column("batch", "bigint"),
        Column("outcome", "text"),
        Column("acked_at", "timestamp"),
    ), primary_key=("spool_id",)),
)


def migrate(migrator, database, *, fake=False):
    dialect_for(database).create_tables(database, TABLES)


def rollback(migrator, database, *, fake=False):
    dialect_for(database).drop_tables(database, TABLES)
