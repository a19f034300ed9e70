"""The outbox: which stored rows are not yet forwarded, in arrival order.

A trigger on ``metrics`` and one on ``server_snapshots`` add an entry
(``seq``, key of the row; for a metric row also a copy of its value, so a
batch is read from the outbox alone) for every row the write path really
inserts, in the same transaction; a duplicate the writer ignores adds nothing. The
outbox is ordered by arrival (``seq``), not by ``collected_at``, so late
and out-of-order samples are never skipped. Forwarded entries are deleted
by ``seq`` in the local transaction that records the central commit.
"""

import uuid
from dataclasses import dataclass, field

from ..dialects import dialect_for
from ..guard import guarded
from ..timeutil import utcnow
from . import state

OUTBOX = "forward_outbox"
COLUMNS = ("server_id", "metric_type_id", "collected_at", "value")
TRIGGERS = (
    ("forward_outbox_metrics", "metrics",
     (("server_id", "server_id"), ("metric_type_id", "metric_type_id"),
      ("collected_at", "collected_at"), ("value", "value"))),
    ("forward_outbox_snapshots", "server_snapshots",
     (("server_id", "server_id"), ("metric_type_id", None), ("collected_at", "collected_at"),
      ("value", None))),
)
SEED = ("INSERT INTO forward_outbox (server_id, metric_type_id, collected_at, value) "
        "SELECT server_id, {mid}, collected_at, {value} FROM {table} ORDER BY collected_at")
SNAPSHOT_COLUMNS = ("cpu_percent", "memory_percent", "connection_count", "status")
# Metric entries carry their value (migration 005): a batch is read from
# the outbox alone; only snapshot entries look their row up (SNAPSHOTS).
READ = ("SELECT o.seq, o.server_id, o.metric_type_id, o.collected_at, o.value "
        "FROM forward_outbox o {where} ORDER BY o.seq {direction} LIMIT :limit")
SNAPSHOTS = ("SELECT o.seq, s.cpu_percent, s.memory_percent, s.connection_count, s.status "
             "FROM forward_outbox o JOIN server_snapshots s ON s.server_id = o.server_id "
             "AND s.collected_at = o.collected_at "
             "WHERE o.metric_type_id IS NULL AND o.seq BETWEEN :lo AND :hi")
LOCK = "forward-spool"


@guarded("enable_spool")
def enable_spool(db):
    """Make ``db`` a spool (idempotent): on first call, every row already
    stored enters the outbox and the triggers are created, in one write
    transaction, so no row is missed. Returns the spool id."""
    d = dialect_for(db)
    with d.write_transaction(db), d.lock(db, LOCK):
        state.ensure_row(db)
        current = state.get(db)
        if current["spool_id"] is None:
            for _, table, mapping in TRIGGERS:
                metric = table == "metrics"
                db.execute_sql(SEED.format(mid="metric_type_id" if metric else "NULL",
                                           value="value" if metric else "NULL",
                                           table=d.quote(table)))
        for trigger, table, mapping in TRIGGERS:
            if current["spool_id"] is None or not d.trigger_exists(db, trigger):
                for sql in d.outbox_trigger_sql(trigger, table, OUTBOX, mapping):
                    db.execute_sql(sql)
        if current["spool_id"] is None:
            spool_id = uuid.uuid4().hex
            state.update(db, spool_id=spool_id, enabled_at=utcnow())
            return spool_id
        return current["spool_id"]


@guarded("disable_spool")
def disable_spool(db):
    """Drop the triggers: new rows are no longer tracked (the outbox stays)."""
    d = dialect_for(db)
    with d.write_transaction(db):
        for trigger, table, _ in TRIGGERS:
            for sql in d.drop_trigger_sql(trigger, table):
                db.execute_sql(sql)


@dataclass
class Batch:
    """Outbox entries read together: ``metrics`` rows
    ``(local server id, metric_type_id, value, collected_at)``, ``snapshots``
    rows ``(local server id, collected_at, cpu, mem, conns, status)`` with
    aware UTC times, the ``ranges`` of seq they cover, and ``missing``:
    snapshot entries whose row was deleted locally before it could be
    forwarded, and metric entries queued before migration 005 whose row was
    already gone then (a metric entry carries its value: the row it copies
    is forwarded even if the local maintenance deleted it meanwhile)."""
    ranges: list
    metrics: list = field(default_factory=list)
    snapshots: list = field(default_factory=list)
    missing: int = 0
    entries: int = 0

    def __len__(self):
        return self.entries

    @property
    def last_seq(self):
        return self.ranges[-1][1] if self.ranges else None


def read(db, limit, newest_first=False, above=None):
    """Up to ``limit`` entries, oldest (or newest) first, with seq > ``above``."""
    d = dialect_for(db)
    where = "WHERE o.seq > :above" if above is not None else ""
    sql = d.sql(READ, where=where, direction="DESC" if newest_first else "ASC")
    rows = db.execute_sql(sql, {"limit": limit, "above": above}).fetchall()
    if newest_first:                         # ship a lane's rows in arrival order
        rows.reverse()
    return _batch(db, d, rows)


def read_ranges(db, ranges):
    """The entries in ``ranges`` (as recorded for a batch in flight)."""
    d = dialect_for(db)
    out = []
    for lo, hi in ranges:
        out += db.execute_sql(d.sql(READ, where="WHERE o.seq BETWEEN :lo AND :hi",
                                    direction="ASC"),
                              {"lo": lo, "hi": hi, "limit": hi - lo + 1}).fetchall()
    return _batch(db, d, out)


def _batch(db, d, rows):
    """A :class:`Batch` of outbox ``rows`` (seq, sid, mid, raw time, value) in seq order."""
    seqs = [r[0] for r in rows]
    batch = Batch(ranges(seqs), entries=len(rows))
    decode = d.time_result                   # many rows share a time: decode each once
    times = {raw: decode(raw) for raw in {r[3] for r in rows}}
    batch.metrics = [(sid, mid, value, times[raw]) for _, sid, mid, raw, value in rows
                     if mid is not None and value is not None]
    metric_entries = sum(1 for r in rows if r[2] is not None)
    batch.missing = metric_entries - len(batch.metrics)
    if metric_entries < len(rows):           # snapshot entries: their rows
        found = dict((r[0], r[1:]) for r in db.execute_sql(d.sql(SNAPSHOTS), {
            "lo": min(seqs), "hi": max(seqs)}))
        for seq, sid, mid, raw, _ in rows:
            if mid is None:
                row = found.get(seq)
                if row is None:
                    batch.missing += 1
                else:
                    batch.snapshots.append((sid, times[raw]) + tuple(row))
    return batch


def still_there(db, batch):
    """True if every entry of ``batch`` (read earlier) is still in the outbox."""
    sql = dialect_for(db).sql("SELECT count(*) FROM forward_outbox WHERE seq BETWEEN :lo AND :hi")
    return batch.entries == sum(db.execute_sql(sql, {"lo": lo, "hi": hi}).fetchone()[0]
                                for lo, hi in batch.ranges)


def ranges(seqs):
    """Distinct integers in ascending order -> ``[[lo, hi], ...]`` runs of
    consecutive values."""
    if not seqs:
        return []
    if seqs[-1] - seqs[0] == len(seqs) - 1:    # one run (the usual batch)
        return [[seqs[0], seqs[-1]]]
    out = []
    for s in seqs:
        if out and s == out[-1][1] + 1:
            out[-1][1] = s
        else:
            out.append([s, s])
    return out


def delete_ranges(db, seq_ranges):
    """Delete the outbox entries in ``seq_ranges`` (one range delete each,
    sent as one ``executemany``: a thinned spool's batch has many)."""
    if seq_ranges:
        sql = dialect_for(db).sql("DELETE FROM forward_outbox WHERE seq BETWEEN :lo AND :hi")
        db.cursor().executemany(sql, [{"lo": lo, "hi": hi} for lo, hi in seq_ranges])


def pending(db):
    """Entries waiting to be forwarded (read-only)."""
    return db.execute_sql("SELECT count(*) FROM forward_outbox").fetchone()[0]
