"""Monthly range partitions on PostgreSQL: strategy -> plan -> apply.

On SQLite every function here is a no-op (the dialect is not partitioned).
"""

from ..dialects import dialect_for
from ..timeutil import month_start, utcnow
from .catalog import LivePartition, live_partitions
from .manager import RAW_TABLES, SERIES_TABLES, PartitionManager
from .operations import create_month, ensure_default
from .plan import Creation, Plan, Result
from .strategy import MARKER, MonthlyStrategy

__all__ = ["MARKER", "RAW_TABLES", "SERIES_TABLES", "Creation", "LivePartition", "MonthlyStrategy",
           "PartitionManager", "Plan", "Result", "ensure_months",
           "ensure_partitions_ahead", "forget_months", "live_partitions"]


def ensure_months(db, table, months, strategy=None):
    """Make sure each month start in ``months`` has a partition of ``table``.

    The write path calls this before inserting a batch, so the default
    partition stays empty. Known months are cached on ``db``; a miss takes
    the partition lock and re-checks the catalog. Returns created names.
    """
    dialect = dialect_for(db)
    if not dialect.partitioned:
        return []
    known = db.__dict__.setdefault("_metricstore_months", set())
    missing = sorted({month_start(m) for m in months} - {m for t, m in known if t == table})
    if not missing:
        return []
    strategy = strategy or MonthlyStrategy()
    live = live_partitions(db, dialect, table)
    created = []
    for start in missing:
        bounds = strategy.bounds(start)
        if not any(p.covers(*bounds) for p in live):
            name, _ = create_month(db, dialect, strategy, table, start)
            if name:
                created.append(name)
        known.add((table, start))
    return created


def forget_months(db):
    """Drop ``db``'s cache of months known to have partitions (after drops)."""
    db.__dict__.pop("_metricstore_months", None)


def ensure_partitions_ahead(db, now=None, strategy=None, tables=SERIES_TABLES):
    """Default partitions plus the current UTC month and ``strategy.ahead`` more."""
    dialect = dialect_for(db)
    if not dialect.partitioned:
        return []
    strategy = strategy or MonthlyStrategy()
    created = []
    for table in tables:
        name = ensure_default(db, dialect, table)
        if name:
            created.append(name)
        created += ensure_months(db, table, strategy.wanted(now or utcnow()), strategy)
    return created
