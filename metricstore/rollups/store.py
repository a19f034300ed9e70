"""Reading and writing tier rows and raw points by (series, time range).

All times here are integer epoch microseconds (UTC); the dialect converts
them to and from the engine's time columns. Ranges are half-open.
"""

from collections import defaultdict

from ..dialects import dialect_for
from ..queries import PERCENTILES
from .bins import own_quantiles
from .state import COLUMNS, State, merge_ordered
from .tiers import OWN_QUANTILES, SNAPSHOT_COLUMN, TIER_MAX_GAP_US

# What a tier row holds: the mergeable state, then its own quantiles.
WRITE_COLUMNS = COLUMNS + tuple(OWN_QUANTILES.values())
_LOW, _HIGH, _SKETCH = (3 + COLUMNS.index(c) for c in ("low", "high", "sketch"))

TIER_ROWS = ("SELECT t.server_id, t.metric_type_id, {bucket}, {columns} FROM {ranges} "
             "JOIN {table} t ON t.server_id = r.s AND t.metric_type_id = r.m "
             "AND t.bucket >= {lo} AND t.bucket < {hi}{prune_t} ORDER BY 1, 2, 3")
RAW_ROWS = ("SELECT x.server_id, x.metric_type_id, {time}, x.value FROM {ranges} "
            "JOIN metrics x ON x.server_id = r.s AND x.metric_type_id = r.m "
            "AND x.collected_at >= {lo} AND x.collected_at < {hi}{prune_x} ORDER BY 1, 2, 3")


def _query(db, template, ranges, **fragments):
    d = dialect_for(db)
    sql = d.sql(template.format(ranges=d.ranges_source, lo=d.time_from_micros_sql("r.lo"),
                                hi=d.time_from_micros_sql("r.hi"),
                                prune_t=d.ranges_prune("t.server_id"),
                                prune_x=d.ranges_prune("x.server_id"), **fragments))
    return db.execute_sql(sql, d.ranges_param(list(ranges)))


def tier_rows(db, tier, ranges, sketches=True):
    """Raw tuples ``(sid, mid, bucket us, *COLUMNS)`` of ``tier`` in ``ranges``
    ``[(sid, mid, lo us, hi us)]``, by series then time (read-only). Without
    ``sketches`` the sketch column reads as NULL."""
    d = dialect_for(db)
    columns = ", ".join("t.%s" % d.quote(c) if c != "sketch" or sketches else "NULL"
                        for c in COLUMNS)
    return _query(db, TIER_ROWS, ranges, table=d.quote(tier.table),
                  bucket=d.micros_sql("t.bucket"), columns=columns).fetchall()


def tier_states(db, tier, ranges):
    """``{(sid, mid, bucket us): State}`` of ``tier`` in ``ranges`` (read-only)."""
    return {(r[0], r[1], r[2]): State.from_row(r[2], r[3:]) for r in tier_rows(db, tier, ranges)}


SNAPSHOT_ROWS = ("SELECT x.server_id, r.m, {time}, x.{column} FROM {ranges} "
                 "JOIN server_snapshots x ON x.server_id = r.s AND x.{column} IS NOT NULL "
                 "AND x.collected_at >= {lo} AND x.collected_at < {hi}{prune_x} ORDER BY 1, 2, 3")


def raw_points(db, ranges):
    """``{(sid, mid): [(t us, value), ...]}`` of raw samples in ``ranges``
    (read-only); a negative ``mid`` is a snapshot column (rollups.snapshots)."""
    out = defaultdict(list)
    d = dialect_for(db)
    time = d.micros_sql("x.collected_at")
    metrics = [r for r in ranges if r[1] >= 0]
    if metrics:
        for sid, mid, t, v in _query(db, RAW_ROWS, metrics, time=time):
            out[sid, mid].append((t, v))
    for mid, column in SNAPSHOT_COLUMN.items():
        part = [r for r in ranges if r[1] == mid]
        if part:
            for sid, m, t, v in _query(db, SNAPSHOT_ROWS, part, time=time,
                                       column=d.quote(column)):
                out[sid, m].append((t, float(v)))
    return out


def state_rows(states):
    """Tier rows of ``{(sid, mid, bucket us): State}``, in key order."""
    return [key + state.row() for key, state in sorted(states.items())]


def write_states(db, tier, states):
    """Upsert ``{(sid, mid, bucket us): State}`` into ``tier``'s table."""
    write_rows(db, tier, state_rows(states))


def write_rows(db, tier, rows):
    """Upsert tier rows ``(sid, mid, bucket us, *COLUMNS)`` into ``tier``'s
    table, each with its own quantiles (:data:`.tiers.OWN_QUANTILES`),
    computed for all the rows at once from their encoded sketches."""
    if not rows:
        return
    own = own_quantiles([r[_SKETCH] for r in rows], [r[_LOW] for r in rows],
                        [r[_HIGH] for r in rows], [PERCENTILES[s] for s in OWN_QUANTILES])
    rows = [r + q for r, q in zip(rows, zip(*(a.tolist() for a in own)))]
    dialect_for(db).upsert_rows(db, tier.table, WRITE_COLUMNS, rows)


def from_raw(db, keys, width_us, counters):
    """States recomputed from raw samples for ``keys`` (sid, mid, bucket us)."""
    ranges = [(s, m, b, b + width_us) for s, m, b in keys]
    out = {}
    by_series = raw_points(db, ranges)
    for s, m, b in keys:
        points = [p for p in by_series.get((s, m), ()) if b <= p[0] < b + width_us]
        if points:
            out[s, m, b] = State.of_points(b, points, m in counters)
    return out


def from_finer(db, finer_tier, keys, width_us):
    """States of coarser buckets ``keys`` merged from their ``finer_tier`` rows."""
    ranges = sorted((s, m, b, b + width_us) for s, m, b in keys)
    groups = defaultdict(list)
    for row in tier_rows(db, finer_tier, ranges):
        s, m, t = row[0], row[1], row[2]
        groups[s, m, t - t % width_us].append(State.from_row(t, row[3:]))
    return {key: merge_ordered(key[2], parts, TIER_MAX_GAP_US)
            for key, parts in groups.items()}
