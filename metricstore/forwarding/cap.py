"""A bounded spool: local retention of forwarded rows, and a size cap.

Run between batches (the forwarder does, every ``maintain_every_s``), or by
the agent itself; each call is a few short write transactions. In order:

1. forwarded rows older than the local retention are deleted (``pruned``);
2. over the cap, forwarded rows go first, oldest day first (``pruned``:
   they are safe in the central database);
3. still over, the oldest unforwarded metric rows are compacted: each
   5-minute bucket none of whose rows was forwarded becomes one 5-minute
   state waiting in ``forward_compacted`` and its raw rows go
   (``compacted``; see :mod:`.compaction`);
4. still over (snapshots, buckets partly forwarded), the oldest unforwarded
   rows are thinned to one sample per series per 5 minutes, counted as
   ``dropped:thinned``;
5. still over, the oldest unforwarded rows are dropped, then the oldest
   waiting states (``dropped:cap``, the raw rows they held).

The cap counts metric and snapshot rows plus waiting states (one row
each). Nothing leaves the spool uncounted; a batch in flight is never touched.
"""

from dataclasses import dataclass
from datetime import timedelta

from ..dialects import dialect_for
from ..errors import ConfigurationError
from ..timeutil import EPOCH, to_micros, to_utc
from . import compaction, outbox, state

SERIES = ("metrics", "server_snapshots")
THIN_WINDOW_US = 300_000_000            # 5 minutes
SCAN_ROWS = 50_000
DAY = timedelta(days=1)
NOT_QUEUED = {
    "metrics": ("(server_id, metric_type_id, collected_at) NOT IN (SELECT server_id, "
                "metric_type_id, collected_at FROM forward_outbox WHERE server_id = :sid "
                "AND metric_type_id IS NOT NULL)"),
    "server_snapshots": ("(server_id, collected_at) NOT IN (SELECT server_id, collected_at "
                         "FROM forward_outbox WHERE server_id = :sid "
                         "AND metric_type_id IS NULL)"),
}
DELETE_ROW = {
    "metrics": ("DELETE FROM metrics WHERE server_id = :sid AND metric_type_id = :mid "
                "AND collected_at = :t"),
    "server_snapshots": "DELETE FROM server_snapshots WHERE server_id = :sid AND collected_at = :t",
}


@dataclass(frozen=True)
class SpoolCap:
    """At most ``max_rows`` metric + snapshot rows, and/or ``max_bytes`` used
    by the local database (None: no limit of that kind)."""
    max_rows: int = None
    max_bytes: int = None

    def __post_init__(self):
        for name in ("max_rows", "max_bytes"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 1):
                raise ConfigurationError("spool %s must be a whole number >= 1, got %r"
                                         % (name, value))


def usage(db):
    """``(rows, bytes)`` held by the spool's series tables and waiting
    compacted states (read-only)."""
    d = dialect_for(db)
    tables = SERIES + (compaction.TABLE,)
    rows = sum(db.execute_sql("SELECT count(*) FROM %s" % t).fetchone()[0] for t in tables)
    return rows, d.used_bytes(db, tables + (outbox.OUTBOX,))


def rows_over(db, cap):
    """Rows to remove to get under ``cap`` (0 when under)."""
    if cap is None or (cap.max_rows is None and cap.max_bytes is None):
        return 0
    rows, used = usage(db)
    need = rows - cap.max_rows if cap.max_rows else 0
    if cap.max_bytes and used > cap.max_bytes and rows:
        need = max(need, -(-(used - cap.max_bytes) * rows // used))
    return max(need, 0)


def enforce(db, cap, local_retention, now):
    """Apply local retention and ``cap`` (see the module doc); return the
    ``{counter: rows}`` it added."""
    now = to_utc(now, "now")
    counts = {}
    forwarded = forwarded_rows(db)         # none during an outage: nothing to prune
    if local_retention is not None and forwarded:
        counts[state.PRUNED] = prune_forwarded(db, now - local_retention)
        forwarded -= counts[state.PRUNED]
    need = rows_over(db, cap)
    if need and forwarded > 0:
        freed = prune_oldest_forwarded(db, min(need, forwarded), now)
        counts[state.PRUNED] = counts.get(state.PRUNED, 0) + freed
        need -= freed
    if need > 0:                           # counted in its own transactions
        counts[state.COMPACTED] = compaction.compact(db, need)
        need = rows_over(db, cap)
    if need > 0:
        counts[state.DROPPED + "thinned"] = thin(db, need)
        need = rows_over(db, cap)
    if need > 0:
        counts[state.DROPPED + "cap"] = drop_oldest(db, need)
    with dialect_for(db).write_transaction(db):
        state.add_counts(db, {k: v for k, v in counts.items() if k != state.COMPACTED})
    return counts


def forwarded_rows(db):
    """Rows held locally that are already forwarded (read-only)."""
    rows = sum(db.execute_sql("SELECT count(*) FROM %s" % t).fetchone()[0] for t in SERIES)
    return max(rows - outbox.pending(db), 0)


def _server_ids(db):
    return [sid for (sid,) in db.execute_sql(
        "SELECT DISTINCT server_id FROM forward_outbox UNION SELECT id FROM servers")]


def prune_forwarded(db, cutoff):
    """Delete forwarded rows collected before ``cutoff``; return how many.

    One server and at most one day per write transaction, so the agent's
    writes never wait long behind it.
    """
    d = dialect_for(db)
    deleted = 0
    for table in SERIES:
        oldest = d.sql("SELECT MIN(collected_at) FROM %s WHERE server_id = :sid "
                       "AND collected_at >= :lo AND collected_at < :cutoff" % table)
        sql = d.sql("DELETE FROM %s WHERE server_id = :sid AND collected_at >= :lo "
                    "AND collected_at < :hi AND %s" % (table, NOT_QUEUED[table]))
        for sid in _server_ids(db):
            lo = d.time_param(EPOCH)
            while True:
                (first,) = db.execute_sql(oldest, {"sid": sid, "lo": lo,
                                                   "cutoff": d.time_param(cutoff)}).fetchone()
                if first is None:
                    break
                first = d.time_result(first)
                hi = min(first + DAY, cutoff)
                with d.write_transaction(db):
                    deleted += db.execute_sql(sql, {"sid": sid, "lo": d.time_param(first),
                                                    "hi": d.time_param(hi)}).rowcount
                lo = d.time_param(hi)
    return deleted


def prune_oldest_forwarded(db, need, now):
    """Delete forwarded rows a day at a time from the oldest until ``need``
    rows are gone or none is left; return how many."""
    d = dialect_for(db)
    oldest = None
    for table in SERIES:
        for sid in _server_ids(db):
            (first,) = db.execute_sql(d.sql("SELECT MIN(collected_at) FROM %s WHERE "
                                            "server_id = :sid" % table), {"sid": sid}).fetchone()
            if first is not None:
                first = d.time_result(first)
                oldest = first if oldest is None else min(oldest, first)
    freed, cutoff = 0, oldest
    while oldest is not None and freed < need and cutoff <= now + DAY:
        cutoff += DAY
        freed += prune_forwarded(db, cutoff)
    return freed


def _protected(db):
    inflight = state.get(db)["inflight"]
    ranges = inflight["ranges"] if inflight else []
    return lambda seq: any(lo <= seq <= hi for lo, hi in ranges)


def _delete_entries(db, entries):
    """Delete outbox ``entries`` (seq, server_id, metric_type_id, raw time) and their rows."""
    d = dialect_for(db)
    metric = d.sql(DELETE_ROW["metrics"])
    snapshot = d.sql(DELETE_ROW["server_snapshots"])
    for seq, sid, mid, t in entries:
        if mid is None:
            db.execute_sql(snapshot, {"sid": sid, "t": t})
        else:
            db.execute_sql(metric, {"sid": sid, "mid": mid, "t": t})
    outbox.delete_ranges(db, outbox.ranges(sorted(e[0] for e in entries)))
    return len(entries)


def thin(db, need):
    """Keep one unforwarded row per series per 5 minutes, oldest first, until
    ``need`` rows are gone or every unforwarded row is thinned; return how many."""
    d = dialect_for(db)
    removed = 0
    while removed < need:
        with d.write_transaction(db), d.lock(db, outbox.LOCK):
            after = state.get(db)["thinned_through"] or 0
            protected = _protected(db)
            scan = db.execute_sql(d.sql(
                "SELECT seq, server_id, metric_type_id, collected_at FROM forward_outbox "
                "WHERE seq > :after ORDER BY seq LIMIT :n"),
                {"after": after, "n": max(SCAN_ROWS, need - removed)}).fetchall()
            if not scan:
                return removed
            seen, drop = set(), []
            for entry in scan:
                seq, sid, mid, t = entry
                window = (sid, mid, to_micros(d.time_result(t)) // THIN_WINDOW_US)
                if window in seen and not protected(seq):
                    drop.append(entry)
                seen.add(window)
            removed += _delete_entries(db, drop)
            state.update(db, thinned_through=scan[-1][0])
    return removed


def drop_oldest(db, need):
    """Drop the ``need`` oldest unforwarded rows (by arrival), then, if the
    spool still holds too many, the oldest waiting compacted states; return
    the raw rows dropped."""
    d = dialect_for(db)
    with d.write_transaction(db), d.lock(db, outbox.LOCK):
        protected = _protected(db)
        scan = db.execute_sql(d.sql(
            "SELECT seq, server_id, metric_type_id, collected_at FROM forward_outbox "
            "ORDER BY seq LIMIT :n"), {"n": need}).fetchall()
        dropped = _delete_entries(db, [e for e in scan if not protected(e[0])])
        if dropped < need:
            dropped += compaction.drop_oldest(db, need - dropped)
        return dropped
