"""Peewee models of a tenant's metrics database.

The models are not bound to a database: each tenant has its own. Bind a
query with ``query.bind(db)`` or a block with ``db.bind_ctx(MODELS)``. Tables
are created by the migrations (``migrations/``), not by ``create_table``,
because the series tables are partitioned on PostgreSQL.

``metrics`` and ``server_snapshots`` have natural primary keys that include
``server_id`` and ``collected_at`` (PostgreSQL requires the partition key in
every unique key; Citus requires the distribution key). There is no
surrogate id: it would cost an index and 8 bytes a row, and could not stop a
re-sent batch from duplicating rows.
"""

import peewee as pw

from .fields import UTCTimestampField
from .timeutil import utcnow

GAUGE, COUNTER = "gauge", "counter"
KINDS = (GAUGE, COUNTER)
STATUSES = ("online", "warning", "critical", "offline", "unknown")
RETENTION_DAYS_DEFAULT = 30
RETENTION_DAYS_RANGE = (1, 3660)


class BaseModel(pw.Model):
    class Meta:
        database = None
        legacy_table_names = False


class Server(BaseModel):
    """A monitored SQL Server instance."""
    id = pw.AutoField()
    name = pw.CharField(unique=True)
    created_at = UTCTimestampField(default=utcnow)

    class Meta:
        table_name = "servers"


class MetricType(BaseModel):
    """A kind of measurement: name, unit, description and gauge/counter."""
    id = pw.AutoField()
    name = pw.CharField(max_length=50, unique=True)
    unit = pw.CharField(max_length=20, null=True)
    description = pw.TextField(null=True)
    kind = pw.CharField(max_length=10, default=GAUGE)

    class Meta:
        table_name = "metric_types"


class Metric(BaseModel):
    """One sample: a metric of a server at an instant (UTC). Key: all but value."""
    server = pw.ForeignKeyField(Server, column_name="server_id", backref="metrics")
    metric_type = pw.ForeignKeyField(MetricType, column_name="metric_type_id")
    value = pw.DoubleField()
    collected_at = UTCTimestampField()

    class Meta:
        table_name = "metrics"
        primary_key = pw.CompositeKey("server", "metric_type", "collected_at")


class ServerSnapshot(BaseModel):
    """A server's headline state at an instant (UTC). Key: (server_id, collected_at)."""
    server = pw.ForeignKeyField(Server, column_name="server_id", backref="snapshots")
    cpu_percent = pw.DoubleField(null=True)
    memory_percent = pw.DoubleField(null=True)
    connection_count = pw.IntegerField(null=True)
    status = pw.CharField(max_length=16)
    collected_at = UTCTimestampField()

    class Meta:
        table_name = "server_snapshots"
        primary_key = pw.CompositeKey("server", "collected_at")


class TenantSettings(BaseModel):
    """The tenant's settings: a single row (id = 1)."""
    id = pw.IntegerField(primary_key=True, default=1)
    retention_days = pw.IntegerField(default=RETENTION_DAYS_DEFAULT)
    retention_5m_days = pw.IntegerField(default=180)      # rollup tiers (migration 003)
    retention_1h_days = pw.IntegerField(default=730)
    retention_1d_days = pw.IntegerField(default=3650)
    updated_at = UTCTimestampField(default=utcnow)

    class Meta:
        table_name = "tenant_settings"


class MaintenanceRun(BaseModel):
    """One maintenance run: when, what it planned and what it did."""
    id = pw.AutoField()
    started_at = UTCTimestampField()
    finished_at = UTCTimestampField(null=True)
    dry_run = pw.BooleanField(default=False)
    created = pw.IntegerField(default=0)
    moved = pw.IntegerField(default=0)
    dropped = pw.IntegerField(default=0)
    deleted = pw.IntegerField(default=0)
    detail = pw.TextField(default="")
    error = pw.TextField(null=True)

    class Meta:
        table_name = "maintenance_runs"


MODELS = (Server, MetricType, Metric, ServerSnapshot, TenantSettings, MaintenanceRun)
