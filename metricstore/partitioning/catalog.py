"""Reading a partitioned table's live partitions from the PostgreSQL catalog.

Bounds come from ``pg_get_expr(relpartbound)``, never from names.
"""

import re
from dataclasses import dataclass
from datetime import datetime

from ..timeutil import to_utc
from .strategy import MARKER

LIVE_PARTITIONS = """
SELECT c.relname, pg_get_expr(c.relpartbound, c.oid),
       obj_description(c.oid, 'pg_class'), c.reltuples::bigint,
       pg_total_relation_size(c.oid)
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = %s::regclass
ORDER BY c.relname
"""
BOUND = re.compile(r"FOR VALUES FROM \('([^']+)'\) TO \('([^']+)'\)")


@dataclass(frozen=True)
class LivePartition:
    """A partition as the catalog reports it. ``start``/``end`` None: DEFAULT."""
    table: str
    name: str
    start: datetime
    end: datetime
    owned: bool
    rows_estimate: int         # the planner's estimate; None if never analysed
    bytes: int

    @property
    def is_default(self):
        return self.start is None and self.end is None

    def overlaps(self, start, end):
        return not self.is_default and self.start < end and start < self.end

    def covers(self, start, end):
        return not self.is_default and self.start <= start and end <= self.end


def parse_timestamptz(text):
    """Parse a timestamptz literal as PostgreSQL prints it (any session zone)."""
    text = text.replace(" ", "T", 1)
    if re.search(r"[+-]\d\d$", text):
        text += ":00"
    return to_utc(datetime.fromisoformat(text), "partition bound")


def parse_bound(expr):
    """``(start, end)`` of a range bound expression; ``(None, None)`` for DEFAULT."""
    if expr.strip() == "DEFAULT":
        return None, None
    match = BOUND.search(expr)
    if not match:
        return False
    return parse_timestamptz(match.group(1)), parse_timestamptz(match.group(2))


def live_partitions(db, dialect, table):
    """Partitions of ``table`` with bounds, ownership, row estimate and size."""
    out = []
    for name, expr, comment, rows, size in db.execute_sql(
            LIVE_PARTITIONS, (dialect.quote(table),)).fetchall():
        bounds = parse_bound(expr or "")
        if bounds is False:      # not a range-by-time partition: leave it alone
            continue
        out.append(LivePartition(table, name, bounds[0], bounds[1], comment == MARKER,
                                 int(rows) if rows >= 0 else None, int(size)))
    return out
