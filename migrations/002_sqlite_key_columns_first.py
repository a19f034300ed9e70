"""002: on SQLite, declare the series tables' key columns first (a no-op on PostgreSQL).

Why: SQLite 3.40.0-3.41.0 ``PRAGMA integrity_check`` / ``quick_check``
report ``NULL value in metrics.value`` (and ``server_snapshots.status``) on
every healthy tenant. A WITHOUT ROWID table stores its primary-key columns
first, then the others; 001 declared ``value`` before ``collected_at`` (a key
column), so declaration order and storage order differ, and those versions'
NOT NULL check reads the column at its *declared* position in the *stored*
record - a column past the end of a shorter record, which reads as NULL.
The data was never wrong. Declaring the key columns first, in key order,
makes the two orders the same, so every version checks the right column.

How: each table is rebuilt (create the new layout, copy every row in key
order, drop the old table, rename, re-create its index) inside the
migration's transaction. A large SQLite tenant needs free disk for a second
copy of the two tables while it runs. PostgreSQL keeps no such quirk and is
left untouched. Columns are read by name everywhere, so nothing else changes.
"""

from dataclasses import replace

from metricstore.dialects import Column, Table, dialect_for

STATUSES = "('online', 'warning', 'critical', 'offline', 'unknown')"

# The 001 tables with the key columns declared first, in key order.
TABLES = (
    Table("metrics", (
        Column("server_id", "int"),
        Column("metric_type_id", "smallint"),
        Column("collected_at", "timestamp"),
        Column("value", "float"),
    ), primary_key=("server_id", "metric_type_id", "collected_at"), include=("value",),
        indexes=(("metrics_server_time", ("server_id", "collected_at")),), series=True),
    Table("server_snapshots", (
        Column("server_id", "int"),
        Column("collected_at", "timestamp"),
        Column("cpu_percent", "float", null=True, check="cpu_percent BETWEEN 0 AND 100"),
        Column("memory_percent", "float", null=True,
               check="memory_percent BETWEEN 0 AND 100"),
        Column("connection_count", "int", null=True, check="connection_count >= 0"),
        Column("status", "text", check="status IN %s" % STATUSES),
    ), primary_key=("server_id", "collected_at"), series=True),
)


def rebuild(database, dialect, table):
    """Re-create ``table`` in the layout ``table`` describes, keeping its rows."""
    q = dialect.quote
    new = replace(table, name=table.name + "_rebuild_002", indexes=())
    for statement in dialect.create_table_sql(new):
        database.execute_sql(statement)
    names = dialect.cols(c.name for c in table.columns)
    database.execute_sql("INSERT INTO %s (%s) SELECT %s FROM %s ORDER BY %s" % (
        q(new.name), names, names, q(table.name), dialect.cols(table.primary_key)))
    database.execute_sql("DROP TABLE %s" % q(table.name))     # drops its indexes too
    database.execute_sql("ALTER TABLE %s RENAME TO %s" % (q(new.name), q(table.name)))
    for statement in dialect.create_table_sql(table)[1:]:     # the indexes
        database.execute_sql(statement)


def migrate(migrator, database, *, fake=False):
    dialect = dialect_for(database)
    if dialect.name != "sqlite":
        return                  # PostgreSQL: declaration order is storage order already
    for table in TABLES:
        rebuild(database, dialect, table)


def rollback(migrator, database, *, fake=False):
    """Nothing to undo: the 001 layout held the same columns in another order."""
