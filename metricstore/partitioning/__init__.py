"""Monthly range partitions on PostgreSQL: strategy -> plan -> apply.

On SQLite every function here is a no-op (the dialect is not partitioned).
"""

import logging
import time

from ..dialects import dialect_for
from ..errors import PartitionConflictError
from ..timeutil import month_start, utcnow
from .catalog import LivePartition, live_partitions
from .manager import RAW_TABLES, SERIES_TABLES, PartitionManager
from .operations import create_month, ensure_default
from .plan import Conflict, Creation, Plan, Result
from .strategy import MARKER, MonthlyStrategy

log = logging.getLogger(__name__)
# The write path re-reads the catalog for a month it saw covered after this
# long (another process may have dropped or detached the partition; rows
# routed to the default meanwhile are moved out when it is re-created), and
# re-tries a blocked month after BLOCKED_RECHECK_S.
MONTH_CACHE_TTL_S = 1.0
BLOCKED_RECHECK_S = 60.0

__all__ = ["MARKER", "RAW_TABLES", "SERIES_TABLES", "Conflict", "Creation", "LivePartition",
           "MonthlyStrategy",
           "PartitionManager", "Plan", "Result", "ensure_months",
           "ensure_partitions_ahead", "forget_months", "live_partitions"]


def ensure_months(db, table, months, strategy=None):
    """Make sure each month start in ``months`` has a partition of ``table``.

    The write path calls this before inserting a batch, so the default
    partition stays empty. Months are cached on ``db`` for
    :data:`MONTH_CACHE_TTL_S`; a miss reads the catalog, and creating one
    takes the partition lock and re-checks. A month blocked by a foreign
    table (:class:`Conflict`) is logged, not raised: its rows land in the
    default partition and maintenance reports it. Returns created names.
    """
    dialect = dialect_for(db)
    if not dialect.partitioned:
        return []
    known = db.__dict__.setdefault("_metricstore_months", {})   # (table, month) -> valid until
    now = time.monotonic()
    due = sorted(m for m in {month_start(m) for m in months}
                 if known.get((table, m), 0) <= now)
    if not due:
        return []
    strategy = strategy or MonthlyStrategy()
    live = live_partitions(db, dialect, table, sizes=False)
    created = []
    for start in due:
        valid_for = MONTH_CACHE_TTL_S
        if not any(p.covers(*strategy.bounds(start)) for p in live):
            try:
                name, _ = create_month(db, dialect, strategy, table, start)
            except PartitionConflictError as exc:
                log.warning("%s (rows go to the default partition)", exc)
                valid_for = BLOCKED_RECHECK_S
            else:
                if name:
                    created.append(name)
        known[(table, start)] = now + valid_for
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
