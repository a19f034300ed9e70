"""The snapshot columns in the rollup tiers.

Each numeric column of ``server_snapshots`` (cpu_percent, memory_percent,
connection_count) is rolled up like a gauge metric, as a series of its own
in the same tier tables under a negative ``metric_type_id`` (never a metric
type's id), so expiry, rebuild, status and the read planner treat it like
any series. Rows whose column is NULL add nothing to that column's series.
"""

from ..errors import QueryError
from .tiers import SNAPSHOT_COLUMN, SNAPSHOT_SERIES
from .update import TierUpdater

SERIES_ID = dict(SNAPSHOT_SERIES)
COLUMN = SNAPSHOT_COLUMN


def series_id(column):
    """The tier series id of a snapshot column; QueryError for another name."""
    try:
        return SERIES_ID[column]
    except KeyError:
        raise QueryError("no rolled-up snapshot column %r: use one of %s" % (
            column, ", ".join(c for c, _ in SNAPSHOT_SERIES))) from None


def series_rows(rows):
    """Staged snapshot rows as ``(sid, series id, value, us)`` rows, one per
    non-NULL column; of rows repeating (server, time) the first wins, as in
    the raw insert. Returns ``(rows, distinct snapshots)``."""
    out, seen = [], set()
    for sid, cpu, mem, conns, _status, us in rows:
        if (sid, us) in seen:
            continue
        seen.add((sid, us))
        if cpu is not None:
            out.append((sid, -1, float(cpu), us))
        if mem is not None:
            out.append((sid, -2, float(mem), us))
        if conns is not None:
            out.append((sid, -3, float(conns), us))
    return out, len(seen)


class SnapshotTierUpdater(TierUpdater):
    """Keeps the snapshot columns' tiers in step with one ``record_snapshots``
    call (same rules as the metrics: only rows actually inserted count)."""

    def __init__(self, db):
        super().__init__(db, ())
        self.staged = 0

    def add(self, rows):
        series, distinct = series_rows(rows)
        self.staged += distinct
        super().add(series)

    def flushed(self, inserted):
        staged, self.staged = self.staged, 0
        super().flushed(inserted, staged)
