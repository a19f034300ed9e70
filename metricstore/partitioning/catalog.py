"""Reading a partitioned table's live partitions from the PostgreSQL catalog.

Bounds come from ``pg_get_expr(relpartbound)``, never from names.
"""

import re
from dataclasses import dataclass
from datetime import datetime

from ..timeutil import to_utc
from .plan import Conflict
from .strategy import MARKER

LIVE_PARTITIONS = """
SELECT c.relname, pg_get_expr(c.relpartbound, c.oid),
       obj_description(c.oid, 'pg_class'), c.reltuples::bigint,
       pg_total_relation_size(c.oid)
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = %s::regclass
ORDER BY c.relname
"""
LIVE_BOUNDS = """
SELECT c.relname, pg_get_expr(c.relpartbound, c.oid),
       obj_description(c.oid, 'pg_class'), -1::bigint, 0::bigint
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = %s::regclass
ORDER BY c.relname
"""
# Tables of the tenant's schema that carry one of the names but are not
# partitions of the parent: a detached month kept by an operator, say.
NAME_TAKEN = """
SELECT c.relname FROM pg_class c
WHERE c.relnamespace = (SELECT relnamespace FROM pg_class WHERE oid = %s::regclass)
  AND c.relname = ANY(%s)
  AND NOT EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = c.oid
                  AND i.inhparent = %s::regclass)
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


def live_partitions(db, dialect, table, sizes=True):
    """Partitions of ``table`` with bounds, ownership, row estimate and size
    (``sizes=False``: a cheaper catalog read, rows None and bytes 0)."""
    out = []
    for name, expr, comment, rows, size in db.execute_sql(
            LIVE_PARTITIONS if sizes else LIVE_BOUNDS, (dialect.quote(table),)).fetchall():
        bounds = parse_bound(expr or "")
        if bounds is False:      # not a range-by-time partition: leave it alone
            continue
        out.append(LivePartition(table, name, bounds[0], bounds[1], comment == MARKER,
                                 int(rows) if rows >= 0 else None, int(size)))
    return out


def names_taken(db, dialect, table, names):
    """Which of ``names`` are tables beside ``table`` that are not its partitions."""
    parent = dialect.quote(table)
    return {name for (name,) in db.execute_sql(NAME_TAKEN, (parent, list(names), parent))}


def blocker(table, name, start, end, live, taken):
    """The :class:`Conflict` keeping month ``[start, end)`` of ``table`` from
    getting its partition ``name``, or None (covered already, or free)."""
    if any(p.covers(start, end) for p in live):
        return None
    partial = sorted(p.name for p in live if p.overlaps(start, end))
    if partial:
        return Conflict(table, start, partial[0], "overlap")
    if name in taken:
        return Conflict(table, start, name, "name")
    return None
