"""001: the tenant metrics schema (story 3.1).

Tables are described in engine-neutral terms; the dialect renders them
(partitioned by month on PostgreSQL, WITHOUT ROWID on SQLite). The hot
tables carry no foreign keys: ingest checks server ids and metric names
itself (to name the bad row), and a foreign key nearly halves COPY speed.
"""

from metricstore.dialects import Column, Table, dialect_for

STATUSES = "('online', 'warning', 'critical', 'offline', 'unknown')"

TABLES = (
    Table("servers", (
        Column("id", "serial"),
        Column("name", "text", check="length(name) BETWEEN 1 AND 200"),
        Column("created_at", "timestamp"),
    ), unique=(("name",),)),
    Table("metric_types", (
        Column("id", "serial"),
        Column("name", "text", check="length(name) BETWEEN 1 AND 50"),
        Column("unit", "text", null=True, check="length(unit) <= 20"),
        Column("description", "text", null=True),
        Column("kind", "text", default="'gauge'", check="kind IN ('gauge', 'counter')"),
    ), unique=(("name",),)),
    Table("metrics", (
        Column("server_id", "int"),
        Column("metric_type_id", "smallint"),
        Column("value", "float"),
        Column("collected_at", "timestamp"),
    ), primary_key=("server_id", "metric_type_id", "collected_at"), include=("value",),
        indexes=(("metrics_server_time", ("server_id", "collected_at")),), series=True),
    Table("server_snapshots", (
        Column("server_id", "int"),
        Column("cpu_percent", "float", null=True, check="cpu_percent BETWEEN 0 AND 100"),
        Column("memory_percent", "float", null=True,
               check="memory_percent BETWEEN 0 AND 100"),
        Column("connection_count", "int", null=True, check="connection_count >= 0"),
        Column("status", "text", check="status IN %s" % STATUSES),
        Column("collected_at", "timestamp"),
    ), primary_key=("server_id", "collected_at"), series=True),
    Table("tenant_settings", (
        Column("id", "int", default="1", check="id = 1"),
        Column("retention_days", "int", default="30",
               check="retention_days BETWEEN 1 AND 3660"),
        Column("updated_at", "timestamp"),
    ), primary_key=("id",)),
    Table("maintenance_runs", (
        Column("id", "serial"),
        Column("started_at", "timestamp"),
        Column("finished_at", "timestamp", null=True),
        Column("dry_run", "bool"),
        Column("created", "int", default="0"),
        Column("moved", "int", default="0"),
        Column("dropped", "int", default="0"),
        Column("deleted", "int", default="0"),
        Column("detail", "text", default="''"),
        Column("error", "text", null=True),
    ), indexes=(("maintenance_runs_started", ("started_at",)),)),
)


# Statements run directly (not queued with migrator.sql): the same code then
# works with peewee-migrate 1.x (Python 3.10) and 2.x, whose queued
# operations differ; replays in fake mode are no-ops (execute_sql is mocked).


def migrate(migrator, database, *, fake=False):
    dialect_for(database).create_tables(database, TABLES)


def rollback(migrator, database, *, fake=False):
    dialect_for(database).drop_tables(database, TABLES)
