"""A tenant's health at a glance (read-only): what `metricstore status` prints."""

from dataclasses import dataclass, field
from datetime import timedelta

from .dialects import dialect_for
from .guard import guarded
from .maintenance import last_run
from .partitioning import RAW_TABLES, SERIES_TABLES, PartitionManager
from .schema import applied, pending
from .rollups.rebuild import tier_status
from .settings import effective_tier_retention, get_retention_days
from .timeutil import to_utc, utcnow

DEFAULT_MAX_MAINTENANCE_AGE = timedelta(days=2)


@dataclass
class Status:
    engine: str
    applied: list
    pending: list
    retention_days: int
    rows: dict = field(default_factory=dict)          # table -> (count, exact)
    span: dict = field(default_factory=dict)          # table -> (first, last)
    default_rows: dict = field(default_factory=dict)
    conflicts: list = field(default_factory=list)     # partitioning.Conflict
    last_run: object = None
    tier_retention: dict = field(default_factory=dict)   # tier name -> days kept
    tiers: list = field(default_factory=list)            # rollups.rebuild.TierStatus
    problems: list = field(default_factory=list)

    @property
    def ok(self):
        return not self.problems


@guarded("status", read_only=True)
def status(db, now=None, max_maintenance_age=DEFAULT_MAX_MAINTENANCE_AGE):
    """Schema version, row counts, time span, retention, last maintenance run
    and rows in default partitions; ``problems`` lists what needs attention
    (pending migrations, overdue maintenance, rows in a default partition)."""
    now = to_utc(now or utcnow(), "now")
    dialect = dialect_for(db)
    result = Status(dialect.name, applied(db), pending(db), get_retention_days(db))
    for table in RAW_TABLES:
        result.rows[table] = dialect.row_count(db, table)
        first, last = db.execute_sql(dialect.time_span.format(table=table)).fetchone()
        result.span[table] = (dialect.time_result(first), dialect.time_result(last))
    result.tier_retention = effective_tier_retention(db)
    result.tiers = tier_status(db, now=now)
    manager = PartitionManager(db)
    if dialect.partitioned:
        result.default_rows = {t: manager.default_rows(t) for t in SERIES_TABLES}
        result.conflicts = manager.plan().conflicts
    result.last_run = last_run(db)
    if result.pending:
        result.problems.append("pending migrations: %s (run `metricstore init`)"
                               % ", ".join(result.pending))
    if result.last_run is None:
        result.problems.append("maintenance has never run (run `metricstore maintain`)")
    elif result.last_run.error:
        result.problems.append("the last maintenance run failed: %s" % result.last_run.error)
    elif now - result.last_run.started_at > max_maintenance_age:
        result.problems.append("maintenance is overdue: last run %s ago (run `metricstore "
                               "maintain` daily)" % (now - result.last_run.started_at))
    for conflict in result.conflicts:
        result.problems.append("partition blocked: %s" % conflict)
    for table, rows in result.default_rows.items():
        if rows:
            result.problems.append("%d row(s) wait in %s's default partition (run "
                                   "`metricstore maintain`)" % (rows, table))
    return result
