"""Compaction before drop: the spool cap folds the oldest unforwarded metric
rows into 5-minute states, and the central side merges those states.

Local side (:func:`compact`, run by the cap before anything is thinned or
dropped). A 5-minute bucket of one series is compacted only when none of its
rows was forwarded: every row the local 5-minute tier counted for it (``n``)
still has its outbox entry, the raw rows are all there, and none is in the
batch in flight. Its state (the rollup tier's mergeable state, computed
from those raw rows) goes into ``forward_compacted`` and its raw rows and
outbox entries are deleted, in one local transaction. So every row leaves
the spool either raw or inside exactly one state, never both. The local
tiers keep the bucket (raw deletion never changes a tier).

Central side (:func:`merge_central`, in the same central transaction as the
batch's ack row). For each state, by what the central 5-minute tier holds
for that bucket:

- nothing: the state is written (``compacted:forwarded``);
- the same state (count, min, max, first and last sample, the sum up to
  float rounding): a re-send, nothing changes (``compacted:duplicate``);
- a state whose samples all lie before or after this one's (rows that
  arrived raw for the same bucket, e.g. a late sample forwarded after the
  compaction): the two are merged in time order (``compacted:forwarded``);
- samples interleaving this one's: it cannot tell shared rows from new
  ones, so it writes nothing and counts the rows (``compacted:overlap``,
  reported by ``forward status`` as a problem).

A bucket older than the central raw retention is ``compacted:expired``. The
central hourly and daily buckets touched are re-merged from their finer
rows. Counters: ``compacted`` counts raw rows folded locally; the
``compacted:<outcome>`` counters split them once shipped.
"""

from collections import defaultdict

from ..dialects import dialect_for
from ..models import COUNTER
from ..partitioning import ensure_months
from ..rollups import store
from ..rollups.state import COLUMNS, State
from ..rollups.tiers import TIER_1D, TIER_1H, TIER_5M
from ..settings import get_retention_days
from ..timeutil import from_micros, month_start, to_micros, utcnow
from ..validation import TimeBounds
from . import outbox, state

TABLE = "forward_compacted"
W5 = TIER_5M.width_us
SCAN_ROWS = 50_000
KEY = ("server_id", "metric_type_id", "bucket")
DELETE_RAW = ("DELETE FROM metrics WHERE server_id = :s AND metric_type_id = :m "
              "AND collected_at >= :lo AND collected_at < :hi")
FORWARDED, DUPLICATE = state.COMPACTED + ":forwarded", state.COMPACTED + ":duplicate"
EXPIRED, OVERLAP = state.COMPACTED + ":expired", state.COMPACTED + ":overlap"


def _counters(db):
    return {i for (i,) in db.execute_sql(
        "SELECT id FROM metric_types WHERE kind = '%s'" % COUNTER)}


def compact(db, need):
    """Compact the oldest unforwarded buckets (by arrival) until ``need`` spool
    rows are freed (a bucket's raw rows less its one state) or no bucket
    qualifies; return the raw rows compacted.
    One write transaction per scan of :data:`SCAN_ROWS` outbox entries."""
    d = dialect_for(db)
    counters = _counters(db)
    insert = d.sql("INSERT INTO %s (%s) VALUES (%s)" % (
        TABLE, d.cols(KEY + COLUMNS), ", ".join(
            d.time_from_micros_sql(":bucket") if c == "bucket" else ":" + c
            for c in KEY + COLUMNS)))
    delete_raw = d.sql(DELETE_RAW.replace(":lo", d.time_from_micros_sql(":lo")).replace(
        ":hi", d.time_from_micros_sql(":hi")))
    removed = freed = after = 0
    while freed < need:
        with d.write_transaction(db), d.lock(db, outbox.LOCK):
            inflight = state.get(db)["inflight"]
            busy = inflight["ranges"] if inflight else []
            scan = db.execute_sql(d.sql(
                "SELECT seq, server_id, metric_type_id, collected_at FROM forward_outbox "
                "WHERE seq > :after AND metric_type_id IS NOT NULL ORDER BY seq LIMIT :n"),
                {"after": after, "n": max(SCAN_ROWS, need - freed)}).fetchall()
            if not scan:
                break
            after = scan[-1][0]
            entries, blocked = defaultdict(list), set()
            for seq, sid, mid, t in scan:
                us = to_micros(d.time_result(t))
                key = (sid, mid, us - us % W5)
                entries[key].append(seq)
                if any(lo <= seq <= hi for lo, hi in busy):
                    blocked.add(key)
            keys = [k for k in entries if k not in blocked]      # oldest arrivals first
            counted = {(r[0], r[1], r[2]): r[3] for r in store.tier_rows(
                db, TIER_5M, sorted((s, m, b, b + 1) for s, m, b in keys), sketches=False)}
            points = store.raw_points(db, sorted((s, m, b, b + W5) for s, m, b in keys))
            rows, raw_keys, seqs = [], [], []
            for key in keys:
                if freed + len(seqs) - len(rows) >= need:
                    break                    # no more than the cap needs: raw is finer
                s, m, b = key
                mine = [p for p in points.get((s, m), ()) if b <= p[0] < b + W5]
                if not (counted.get(key) == len(entries[key]) == len(mine)):
                    continue                 # some of its rows were forwarded (or are gone)
                st = State.of_points(b, mine, m in counters)
                rows.append(dict(zip(KEY + COLUMNS, key + st.row())))
                raw_keys.append({"s": s, "m": m, "lo": b, "hi": b + W5})
                seqs += entries[key]
            if rows:
                cursor = db.cursor()
                cursor.executemany(insert, rows)
                cursor.executemany(delete_raw, raw_keys)
                outbox.delete_ranges(db, outbox.ranges(sorted(seqs)))
                state.add_counts(db, {state.COMPACTED: len(seqs)})
                removed += len(seqs)
                freed += len(seqs) - len(rows)
    return removed


def read(db, limit):
    """Up to ``limit`` waiting states, oldest first: ``(seq ranges,
    [(seq, local sid, mid, bucket us, State)])``."""
    d = dialect_for(db)
    rows = db.execute_sql(d.sql(
        "SELECT seq, server_id, metric_type_id, %s, %s FROM %s ORDER BY seq LIMIT :n" % (
            d.micros_sql("bucket"), d.cols(COLUMNS), TABLE)), {"n": limit}).fetchall()
    states = [(r[0], r[1], r[2], r[3], State.from_row(r[3], r[4:])) for r in rows]
    return outbox.ranges([r[0] for r in rows]), states


def delete(db, seq_ranges):
    """Forget the states in ``seq_ranges`` (shipped)."""
    if seq_ranges:
        sql = dialect_for(db).sql("DELETE FROM %s WHERE seq BETWEEN :lo AND :hi" % TABLE)
        db.cursor().executemany(sql, [{"lo": lo, "hi": hi} for lo, hi in seq_ranges])


def any_waiting(db):
    """Whether a state waits to be shipped (read-only, one probe)."""
    return db.execute_sql("SELECT 1 FROM %s LIMIT 1" % TABLE).fetchone() is not None


def waiting(db):
    """``(states, raw rows they hold)`` not yet shipped (read-only)."""
    n, rows = db.execute_sql("SELECT count(*), COALESCE(SUM(n), 0) FROM %s" % TABLE).fetchone()
    return n, int(rows)


def drop_oldest(db, need):
    """Drop the oldest waiting states until ``need`` spool rows are freed (a
    state is one row); return the raw rows they held (counted by the caller)."""
    d = dialect_for(db)
    inflight = state.get(db)["inflight"]
    busy = (inflight or {}).get("compacted") or []
    rows = db.execute_sql(d.sql("SELECT seq, n FROM %s ORDER BY seq LIMIT :n" % TABLE),
                          {"n": need + sum(hi - lo + 1 for lo, hi in busy)}).fetchall()
    gone = [(seq, n) for seq, n in rows if not any(lo <= seq <= hi for lo, hi in busy)][:need]
    delete(db, outbox.ranges(sorted(seq for seq, _ in gone)))
    return sum(n for _, n in gone)


def merge_central(db, repo, states, now=None):
    """Merge ``states`` ``[(central sid, metric name, bucket us, State)]`` into
    the central tiers (see the module doc); return ``{counter: rows}`` and
    the states of unknown metrics ``[(index, reason)]``. Runs in the
    caller's transaction."""
    rules = repo.metric_rules(refresh=True)
    bounds = TimeBounds.at(now or utcnow(), repo.max_skew, get_retention_days(db))
    counts = defaultdict(int)
    refused, keyed = [], {}
    for i, (sid, name, b, st) in enumerate(states):
        rule = rules.get(name)
        if rule is None:
            refused.append((i, "the central database has no metric %r" % name))
        elif bounds.expired(b):
            counts[EXPIRED] += st.count
        else:
            key = (sid, rule.id, b)
            other = keyed.get(key)           # the same bucket twice in one batch
            if other is None:
                keyed[key] = st
            elif st.last_at < other.first_at or st.first_at > other.last_at:
                keyed[key] = State(b).absorb(other, ordered=False).absorb(st) \
                    if st.first_at > other.last_at else st.copy_into(b).absorb(other)
            else:
                counts[OVERLAP] += st.count
    if not keyed:
        return dict(counts), refused
    have = store.tier_states(db, TIER_5M, sorted((s, m, b, b + 1) for s, m, b in keyed))
    write = {}
    for key, st in keyed.items():
        old = have.get(key)
        if old is None:
            write[key] = st
        elif _same(old, st):
            counts[DUPLICATE] += st.count
            continue
        elif st.last_at < old.first_at:
            write[key] = st.copy_into(st.start).absorb(old)
        elif st.first_at > old.last_at:
            write[key] = old.absorb(st)
        else:
            counts[OVERLAP] += st.count
            continue
        counts[FORWARDED] += st.count
    if write:
        months = sorted({month_start(from_micros(b)) for _, _, b in write})
        for tier in (TIER_5M, TIER_1H, TIER_1D):
            ensure_months(db, tier.table, months)
        store.write_states(db, TIER_5M, write)
        finer, keys = TIER_5M, write
        for tier in (TIER_1H, TIER_1D):
            w = tier.width_us
            keys = {(s, m, b - b % w) for s, m, b in keys}
            store.write_states(db, tier, store.from_finer(db, finer, sorted(keys), w))
            finer = tier
    return dict(counts), refused


def _same(a, b):
    """The same samples (the sum up to float rounding: the write path and a
    state built here may add in different orders)."""
    return ((a.count, a.min, a.max, a.first_at, a.first, a.last_at, a.last)
            == (b.count, b.min, b.max, b.first_at, b.first, b.last_at, b.last)
            and abs(a.sum - b.sum) <= 1e-12 * max(abs(a.sum), abs(b.sum), 1.0))


def describe(server, metric, b, st):
    """A waiting state as stored in quarantine (JSON-able)."""
    return {"kind": "5m state", "server": server, "metric": metric,
            "collected_at": from_micros(b).isoformat(), "rows": st.count,
            "avg": st.sum / st.count if st.count else None}
