"""Provisioning a tenant database: schema, seeds, settings, partitions."""

from contextlib import nullcontext
from dataclasses import dataclass, field

from .dialects import dialect_for
from .guard import guarded
from .partitioning import ensure_partitions_ahead
from .schema import migrate
from .seed import seed_metric_types
from .settings import check_retention_days, ensure_settings


@dataclass
class ProvisionReport:
    """What :func:`provision` found or did."""
    engine: str
    partitioned: bool
    migrations_applied: list = field(default_factory=list)
    metric_types_written: int = 0
    retention_days: int = 0
    partitions_created: list = field(default_factory=list)

    def lines(self):
        yield "engine: %s" % self.engine
        yield "migrations applied: %s" % (", ".join(self.migrations_applied) or "none (up to date)")
        yield "metric types written: %d" % self.metric_types_written
        yield "retention_days: %d" % self.retention_days
        if self.partitioned:
            yield "partitions created: %s" % (", ".join(self.partitions_created) or "none")


@guarded("provision", atomic=False)
def provision(db, retention_days=None, now=None):
    """Migrate, seed and configure a tenant database; idempotent.

    ``retention_days``: None keeps an existing tenant's setting (30 for a new
    one). On PostgreSQL also creates the default partitions and the monthly
    partitions from the current UTC month (``now``) to three months ahead.
    Safe to run from several processes at once (an advisory lock on
    PostgreSQL, BEGIN IMMEDIATE on SQLite). Returns a :class:`ProvisionReport`.
    """
    if retention_days is not None:
        check_retention_days(retention_days)
    with db.connection_context() if db.is_closed() else nullcontext():
        dialect = dialect_for(db)
        report = ProvisionReport(engine=dialect.name, partitioned=dialect.partitioned)
        # The schema first, committed: on Citus a distributed schema created in
        # the transaction that then creates a serial column fails on the workers.
        with dialect.write_transaction(db):
            with dialect.lock(db, "provision"):
                dialect.prepare(db)
        with dialect.write_transaction(db):
            with dialect.lock(db, "provision"):
                report.migrations_applied = migrate(db)
                report.metric_types_written = seed_metric_types(db)
                report.retention_days = ensure_settings(db, retention_days).retention_days
        report.partitions_created = ensure_partitions_ahead(db, now=now)
        dialect.provisioned(db)
    return report

