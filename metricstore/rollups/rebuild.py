"""Recomputing tiers from raw, their status, and their own retention.

``rebuild`` recomputes whole UTC days of every tier from the raw samples (in
one transaction per day, under the write lock), so it is idempotent and
repairs any tier; it refuses ranges whose raw rows are past retention,
since recomputing from what is left would lose history.
"""

from dataclasses import dataclass
from datetime import timedelta

from ..dialects import dialect_for
from ..errors import QueryError
from ..models import COUNTER
from ..partitioning import ensure_months
from ..settings import effective_tier_retention, get_retention_days
from ..timeutil import EPOCH, check_range, from_micros, month_start, to_micros, to_utc, utcnow
from . import store
from .rebuild_helpers import coarsen
from .state import State
from .tiers import SNAPSHOT_SERIES, TIER_5M, TIER_TABLES, TIERS

DAY = timedelta(days=1)
DAY_US = 86_400_000_000
SERIES_OF_DAY = ("SELECT DISTINCT metric_type_id FROM metrics WHERE server_id = :sid "
                 "AND collected_at >= :lo AND collected_at < :hi")
SNAPSHOTS_OF_DAY = ("SELECT COUNT(cpu_percent), COUNT(memory_percent), COUNT(connection_count) "
                    "FROM server_snapshots WHERE server_id = :sid "
                    "AND collected_at >= :lo AND collected_at < :hi")
DELETE_RANGE = ("DELETE FROM {table} WHERE server_id IN (SELECT id FROM servers) "
                "AND metric_type_id IN (SELECT id FROM metric_types) "
                "AND bucket >= :lo AND bucket < :hi")
DELETE_SNAPSHOT_RANGE = ("DELETE FROM {table} WHERE server_id IN (SELECT id FROM servers) "
                         "AND metric_type_id IN (%s) AND bucket >= :lo AND bucket < :hi"
                         % ", ".join(str(i) for _, i in SNAPSHOT_SERIES))


def _floor_day(dt):
    return EPOCH + (dt - EPOCH) // DAY * DAY


def _counters(db):
    return {i for (i,) in db.execute_sql("SELECT id FROM metric_types WHERE kind = '%s'"
                                         % COUNTER)}


def raw_horizon(db, now=None):
    """Earliest instant whose raw rows are all still kept (now - retention_days)."""
    return to_utc(now or utcnow(), "now") - timedelta(days=get_retention_days(db))


def rebuild(db, start, end, now=None):
    """Recompute every tier over the whole UTC days covering ``[start, end)``
    from raw samples; return the number of 5-minute buckets written.

    Idempotent. Raises QueryError when a day starts before the raw
    retention horizon (its raw rows are gone or going). Writes.
    """
    start, end = check_range(start, end)
    first, last = _floor_day(start), _floor_day(end - timedelta(microseconds=1)) + DAY
    horizon = raw_horizon(db, now)
    if first < horizon:
        raise QueryError(
            "cannot rebuild from %s: raw samples before %s are past the retention "
            "(%d days) and recomputing would lose the history the tiers keep; start at "
            "%s or later" % (first.isoformat(), horizon.isoformat(), get_retention_days(db),
                             (_floor_day(horizon) + DAY).isoformat()))
    counters = _counters(db)
    written, day = 0, first
    while day < last:
        written += rebuild_day(db, day, counters)
        day += DAY
    return written


def rebuild_day(db, day, counters, metrics=True, snapshots=True):
    """Recompute one UTC day of every tier from raw (one transaction): the
    metrics' series, the snapshot columns' series, or both."""
    d = dialect_for(db)
    lo, hi = to_micros(day), to_micros(day) + DAY_US
    for table in TIER_TABLES:
        ensure_months(db, table, [month_start(day)])
    params = {"lo": d.time_param(day), "hi": d.time_param(day + DAY)}
    with d.write_transaction(db):
        ranges = []
        for (sid,) in db.execute_sql("SELECT id FROM servers ORDER BY id").fetchall():
            if metrics:
                for (mid,) in db.execute_sql(d.sql(SERIES_OF_DAY), dict(params, sid=sid)):
                    ranges.append((sid, mid, lo, hi))
            if snapshots:
                counts = db.execute_sql(d.sql(SNAPSHOTS_OF_DAY), dict(params, sid=sid)).fetchone()
                ranges += [(sid, mid, lo, hi) for (_, mid), n in zip(SNAPSHOT_SERIES, counts) if n]
        for table in TIER_TABLES:
            for sql, wanted in ((DELETE_RANGE, metrics), (DELETE_SNAPSHOT_RANGE, snapshots)):
                if wanted:
                    db.execute_sql(d.sql(sql.format(table=d.quote(table))), params)
        points = store.raw_points(db, sorted(ranges))
        fives = {}
        w = TIER_5M.width_us
        for (sid, mid), series in points.items():
            counter = mid in counters
            group, b = [], None
            for t, v in series:
                if b is not None and t - t % w != b:
                    fives[sid, mid, b] = State.of_points(b, group, counter)
                    group = []
                b = t - t % w
                group.append((t, v))
            if group:
                fives[sid, mid, b] = State.of_points(b, group, counter)
        store.write_states(db, TIER_5M, fives)
        states = fives
        for tier in TIERS[1:]:
            states = coarsen(states, tier.width_us)
            store.write_states(db, tier, states)
    return len(fives)


def backfill(db, table="metrics"):
    """Roll up every raw row already stored in ``table``: ``metrics``
    (migration 003) or ``server_snapshots`` (migration 006; the metric
    series of those days are left as they are). Writes."""
    first, last = db.execute_sql("SELECT MIN(collected_at), MAX(collected_at) "
                                 "FROM %s" % table).fetchone()
    if first is None:
        return 0
    d = dialect_for(db)
    first, last = d.time_result(first), d.time_result(last)
    counters = _counters(db)
    written, day = 0, _floor_day(first)
    while day <= last:
        written += rebuild_day(db, day, counters, metrics=table == "metrics",
                               snapshots=table == "server_snapshots")
        day += DAY
    return written


OWN_MISSING = ("SELECT t.server_id, t.metric_type_id, {bucket}, {columns} FROM {table} t "
               "WHERE t.q50 IS NULL AND (t.server_id, t.metric_type_id, t.bucket) > (:s, :m, {b}) "
               "ORDER BY t.server_id, t.metric_type_id, t.bucket LIMIT :n")


def fill_own_quantiles(db, tier, page=20_000):
    """Give every row of ``tier`` without its own quantiles (written before
    migration 007) those of its stored sketch, ``page`` rows at a time in key
    order (each page one upsert). Returns the rows filled. Writes."""
    d = dialect_for(db)
    sql = d.sql(OWN_MISSING.format(
        bucket=d.micros_sql("t.bucket"), table=d.quote(tier.table),
        columns=", ".join("t.%s" % d.quote(c) for c in store.COLUMNS),
        b=d.time_from_micros_sql(":b")))
    key, filled = (-1, -1 << 15, -62_135_596_800_000_000), 0     # before any key (year 1)
    while True:
        rows = db.execute_sql(sql, {"s": key[0], "m": key[1], "b": key[2], "n": page}).fetchall()
        if not rows:
            return filled
        store.write_rows(db, tier, [tuple(r) for r in rows])
        filled += len(rows)
        key = tuple(rows[-1][:3])


@dataclass
class TierStatus:
    """One tier: rows, the buckets it holds, retention and lag behind raw."""
    name: str
    table: str
    rows: int
    exact: bool
    first: object           # first bucket start (aware UTC) or None
    last: object            # last bucket end
    retention_days: int
    horizon: object         # buckets before this are past retention
    lag: object             # newest raw sample minus the newest sample in the tier


def tier_status(db, now=None):
    """:class:`TierStatus` of every tier, finest first (read-only; index probes
    per series, no scans: the dialect's ``tier_span``, ``tier_newest`` and
    ``raw_newest`` shapes)."""
    d = dialect_for(db)
    now = to_utc(now or utcnow(), "now")
    days = effective_tier_retention(db)
    (raw_newest,) = db.execute_sql(d.raw_newest).fetchone()
    raw_newest = d.time_result(raw_newest)
    out = []
    for tier in TIERS:
        q = d.quote(tier.table)
        rows, exact = d.row_count(db, tier.table)
        first, last = db.execute_sql(d.tier_span.format(t=q)).fetchone()
        (newest,) = db.execute_sql(d.tier_newest.format(t=q)).fetchone()
        lag = None
        if raw_newest is not None:
            lag = raw_newest - from_micros(newest) if newest is not None else None
        out.append(TierStatus(tier.name, tier.table, rows, exact, d.time_result(first),
                              None if last is None else d.time_result(last) + tier.width,
                              days[tier.name], now - timedelta(days=days[tier.name]), lag))
    return out


def expire(db, now=None):
    """Delete each tier's buckets that start before its own retention cutoff
    (after the partition manager dropped whole expired months); raw expiry
    never touches a tier. Returns ``{table: rows deleted}``. Writes."""
    d = dialect_for(db)
    now = to_utc(now or utcnow(), "now")
    days = effective_tier_retention(db)
    out = {}
    for tier in TIERS:
        cutoff = d.time_param(now - timedelta(days=days[tier.name]))
        total = 0
        for (sid,) in db.execute_sql("SELECT id FROM servers ORDER BY id").fetchall():
            with d.write_transaction(db):
                total += db.execute_sql(d.sql(
                    "DELETE FROM %s WHERE server_id = :sid AND bucket < :cutoff"
                    % d.quote(tier.table)), {"sid": sid, "cutoff": cutoff}).rowcount
        out[tier.table] = total
    return out
