"""Diffing the strategy against the live catalog, and applying the plan."""

from dataclasses import replace

from ..dialects import dialect_for
from ..errors import MaintenanceError
from ..guard import guarded
from ..settings import get_retention_days
from ..timeutil import UTC, to_utc, utcnow
from .catalog import blocker, live_partitions, names_taken
from .operations import create_month, drop_partition, ensure_default
from .plan import Creation, Plan
from .strategy import MonthlyStrategy
from ..rollups.tiers import BY_TABLE, TIER_TABLES
from ..settings import effective_tier_retention

RAW_TABLES = ("metrics", "server_snapshots")
SERIES_TABLES = RAW_TABLES + TIER_TABLES
DEFAULT_MONTHS = ("SELECT DISTINCT date_trunc('month', {time} AT TIME ZONE 'UTC') "
                  "FROM {default}")
COUNT_ROWS = "SELECT count(*) FROM {table}"
WAITING = "SELECT count(*) FROM {default} WHERE {time} >= %s AND {time} < %s"


def time_column(table):
    """The column a series table is partitioned on."""
    return "bucket" if table in TIER_TABLES else "collected_at"


class PartitionManager:
    """Plans and applies partition changes for one tenant database.

    ``clock`` returns "now" (aware); override it to walk time in tests.
    On SQLite (no partitions) plans hold only the retention cutoff.
    """

    def __init__(self, db, strategy=None, tables=SERIES_TABLES, clock=utcnow):
        self.db = db
        self.strategy = strategy or MonthlyStrategy()
        self.tables = tables
        self.clock = clock

    @property
    def dialect(self):
        """The database's dialect (chosen on first use, then cached on ``db``)."""
        return dialect_for(self.db)

    def now(self):
        return to_utc(self.clock(), "clock()")

    @guarded("reading partitions", read_only=True)
    def live(self, table):
        """Live partitions of ``table`` (read-only; [] on SQLite)."""
        if not self.dialect.partitioned:
            return []
        return live_partitions(self.db, self.dialect, table)

    def rows(self, partition):
        """Rows in ``partition``: the planner's estimate, or an exact count
        when it was never analysed (or is the default partition)."""
        return self.figures(partition)[0]

    def figures(self, partition):
        """``(rows, bytes)`` of ``partition`` as the dialect reads them (on
        Citus: from the shards); rows counted exactly where no estimate exists."""
        rows, size = self.dialect.partition_figures(self.db, partition)
        if rows is None or partition.is_default:
            q = COUNT_ROWS.format(table=self.dialect.quote(partition.name))
            rows = self.db.execute_sql(q).fetchone()[0]
        return rows, size

    def default_rows(self, table, live=None):
        """Exact number of rows waiting in ``table``'s default partition."""
        default = self._default(table, live)
        if default is None:
            return 0
        q = COUNT_ROWS.format(table=self.dialect.quote(default))
        return self.db.execute_sql(q).fetchone()[0]

    def _default(self, table, live=None):
        live = self.live(table) if live is None else live
        return next((p.name for p in live if p.is_default), None)

    def _data_months(self, table, default):
        if default is None:
            return []
        q = DEFAULT_MONTHS.format(default=self.dialect.quote(default), time=time_column(table))
        return [m.replace(tzinfo=UTC) for (m,) in self.db.execute_sql(q).fetchall()]

    @guarded("planning partitions", read_only=True)
    def plan(self, retention_days=None):
        """The :class:`Plan` at ``now()``; changes nothing."""
        now = self.now()
        if retention_days is None:
            retention_days = get_retention_days(self.db)
        cutoff = self.strategy.cutoff(now, retention_days)
        plan = Plan(self.dialect.name, now, retention_days, cutoff)
        tiers = effective_tier_retention(self.db)
        for table in self.tables:
            if table in TIER_TABLES:
                tier = BY_TABLE[table]
                plan.cutoffs[table] = self.strategy.cutoff(now, tiers[tier.name])
            else:
                plan.cutoffs[table] = cutoff
            live = self.live(table)
            plan.partitions[table] = live
            if not self.dialect.partitioned:
                continue
            default = self._default(table, live)
            plan.default_rows[table] = self.default_rows(table, live)
            table_cutoff = plan.cutoffs[table]
            wanted = self.strategy.wanted(now, self._data_months(table, default), table_cutoff)
            taken = names_taken(self.db, self.dialect, table,
                                [self.strategy.name(table, m) for m in wanted])
            for start in wanted:
                name = self.strategy.name(table, start)
                start, end = self.strategy.bounds(start)
                conflict = blocker(table, name, start, end, live, taken)
                if conflict is not None:
                    plan.conflicts.append(conflict)
                    continue
                if any(p.overlaps(start, end) for p in live):
                    continue
                waiting = 0
                if default is not None:
                    waiting = self.db.execute_sql(
                        WAITING.format(default=self.dialect.quote(default),
                                       time=time_column(table)),
                        (start, end)).fetchone()[0]
                plan.create.append(Creation(table, self.strategy.name(table, start),
                                            start, end, waiting))
            plan.drop.extend(self._shown(p) for p in live
                             if p.owned and not p.is_default and p.end <= table_cutoff)
        return plan

    def _shown(self, partition):
        """``partition`` with the figures a person should see in the plan."""
        rows, size = self.dialect.partition_figures(self.db, partition)
        if (rows, size) == (partition.rows_estimate, partition.bytes):
            return partition
        return replace(partition, rows_estimate=rows, bytes=size)

    @guarded("applying the partition plan", atomic=False)
    def apply(self, plan, errors=None):
        """Create, move and drop as planned (re-checking the catalog under the
        lock at every step). Returns ``(created names, rows moved, dropped names)``.

        With an ``errors`` list, a step that fails is appended to it and the
        rest of the plan still runs (drops are never skipped because a
        creation failed); without one, the first failure raises.
        """
        created, moved, dropped = [], 0, []
        if not self.dialect.partitioned:
            return created, moved, dropped
        for table in self.tables:
            name = ensure_default(self.db, self.dialect, table)
            if name:
                created.append(name)
        for c in plan.create:
            try:
                name, n = create_month(self.db, self.dialect, self.strategy, c.table, c.start)
            except MaintenanceError as exc:
                if errors is None:
                    raise
                errors.append(exc)
                continue
            if name:
                created.append(name)
            moved += n
        for p in plan.drop:
            try:
                if drop_partition(self.db, self.dialect, p.table, p.name):
                    dropped.append(p.name)
            except MaintenanceError as exc:
                if errors is None:
                    raise
                errors.append(exc)
        return created, moved, dropped
