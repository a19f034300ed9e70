"""MetricRepository: what the collector and the web app call.

Writes are validated, atomic by default and idempotent; reads take
half-open ``[start, end)`` ranges of aware datetimes and return aware UTC
datetimes in ascending time. The same calls behave the same on SQLite and
PostgreSQL; only the dialect's SQL differs.
"""

import time
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import repeat
from datetime import timedelta
from typing import NamedTuple, Optional

from . import queries as Q
from .dialects import dialect_for
from .errors import QueryError, UnknownMetricError, UnknownServerError
from .guard import guarded
from .ingest import (METRICS, SNAPSHOTS, Sample, SnapshotSample, metric_checker,
                     snapshot_checker, write)
from .models import COUNTER, MetricType, Server
from .rollups import read as R
from .rollups.planner import plan as plan_segments, usable
from .rollups.snapshots import SnapshotTierUpdater, series_id as snapshot_series
from .rollups.planner import Segment
from .rollups.update import TierUpdater
from .timeutil import EPOCH, check_range, to_micros, to_timedelta, to_utc, utcnow
from .settings import get_retention_days
from .validation import DEFAULT_MAX_SKEW, MetricRule, TimeBounds, server_id_of, unknown_metric

DEFAULT_STATS = ("avg", "min", "max", "count")
DEFAULT_MAX_GAP = timedelta(minutes=5)
DEFAULT_STALE_AFTER = timedelta(minutes=2)
SERIES_PAGE_ROWS = 20_000
RESOLUTIONS = ("auto", "raw")
SETTINGS_TTL_S = 10.0
# Results whose size the arguments alone decide are capped per call:
# buckets(fill=True) returns one Bucket per width in the range, data or not.
MAX_BUCKETS = 100_000
MAX_TOP = 100_000                  # top(n=...)
MAX_SERVER_ID = 2 ** 31 - 1        # servers.id is an INTEGER on PostgreSQL
MAX_INTERVAL = timedelta(days=36_600)   # every / max_gap / expected_every (~100 years)


class Point(NamedTuple):
    collected_at: object
    value: float


_new, _set = object.__new__, object.__setattr__


@dataclass(frozen=True)
class Bucket:
    """A UTC-aligned bucket ``[start, end)``; ``stats`` maps stat name -> value
    (None when the bucket holds no data). ``bucket.avg`` reads a stat."""
    start: object
    end: object
    stats: dict
    resolution: str = "raw"       # what served it: 'raw', '1h', '1h+5m+raw', ...
    error: float = 0.0            # relative error bound of its percentiles (0: exact)

    def __getattr__(self, name):
        try:
            return self.__dict__["stats"][name]
        except KeyError:
            raise AttributeError(name) from None


class Rate(NamedTuple):
    """Per-second rate in ``[start, end)``: ``delta / seconds`` over ``pairs``
    consecutive samples (the pair's later sample falls in the bucket)."""
    start: object
    end: object
    rate: float
    delta: float
    seconds: float
    pairs: int


class Latest(NamedTuple):
    server_id: int
    server_name: str
    collected_at: object
    value: float


class Snapshot(NamedTuple):
    server_id: int
    collected_at: object
    cpu_percent: Optional[float]
    memory_percent: Optional[float]
    connection_count: Optional[int]
    status: str


class FleetEntry(NamedTuple):
    """A server's latest snapshot; ``stale`` when older than ``stale_after``
    or missing (then ``collected_at`` and the values are None)."""
    server_id: int
    server_name: str
    collected_at: object
    cpu_percent: Optional[float]
    memory_percent: Optional[float]
    connection_count: Optional[int]
    status: Optional[str]
    stale: bool


class Ranked(NamedTuple):
    server_id: int
    server_name: str
    value: float


@dataclass
class Heatmap:
    """One statistic per server and UTC-aligned bucket: ``starts`` are the
    bucket starts of the range (every width, data or not), ``rows`` maps a
    server id to its values, one per start (None where it has no data).
    ``names`` maps server ids to names; ``resolution`` and ``error`` as on
    :meth:`MetricRepository.buckets`."""
    stat: str
    every: timedelta
    starts: list
    rows: dict
    names: dict
    resolution: str = "raw"
    error: float = 0.0


class Gap(NamedTuple):
    """No sample strictly between ``start`` and ``end`` (a sample or a range edge)."""
    start: object
    end: object


class ServerRef(NamedTuple):
    id: int
    name: str


class MetricRepository:
    """Time-series reads and writes for one tenant database ``db``.

    ``max_skew``: how far in the future a collected_at may be (default 5 min).
    ``clock``: returns "now" (aware); used for skew and staleness.
    """

    def __init__(self, db, max_skew=DEFAULT_MAX_SKEW, clock=utcnow):
        self.db = db
        if not isinstance(max_skew, timedelta) or max_skew < timedelta(0):
            raise QueryError("max_skew must be a timedelta >= 0 (how far in the future a "
                             "collected_at may be), got %r" % (max_skew,))
        self.max_skew = max_skew
        self.clock = clock
        self._rules = {}
        self._known_servers = set()     # ids seen to exist (metricstore never deletes one)

    @property
    def dialect(self):
        """The database's dialect (chosen on first use, then cached on ``db``)."""
        return dialect_for(self.db)

    # -- catalog ------------------------------------------------------------------
    @guarded(read_only=True)
    def metric_rules(self, refresh=False):
        """``{name: MetricRule}`` of the tenant's metric types (cached)."""
        if refresh or not self._rules:
            self._rules = {m.name: MetricRule.from_type(m)
                           for m in MetricType.select().bind(self.db)}
        return self._rules

    def _rule(self, metric):
        if not isinstance(metric, str):
            raise QueryError("metric must be a metric name (a str), got %r" % (metric,))
        rule = self.metric_rules().get(metric) or self.metric_rules(refresh=True).get(metric)
        if rule is None:
            raise UnknownMetricError(unknown_metric(metric, self._rules))
        return rule

    def _server_ids(self):
        return {sid for (sid,) in self.db.execute_sql("SELECT id FROM servers")}

    def _check_server(self, server_id):
        """The server id as a plain int, if that server is registered."""
        sid = server_id_of(server_id)
        if sid in self._known_servers:
            return sid
        sql = self.dialect.sql(Q.SERVER_EXISTS)
        if sid is not None and 0 < sid <= MAX_SERVER_ID and self.db.execute_sql(
                sql, {"sid": sid}).fetchone():
            self._known_servers.add(sid)
            return sid
        raise UnknownServerError("unknown server id %r; list servers with "
                                 "MetricRepository.servers() or register one with "
                                 "add_server(name)" % (server_id,))

    @guarded(read_only=True)
    def servers(self):
        """Registered servers as ``ServerRef(id, name)``, by id (read-only)."""
        return [ServerRef(*r) for r in self.db.execute_sql(
            "SELECT id, name FROM servers ORDER BY id")]

    # -- writing ------------------------------------------------------------------
    @guarded(atomic=False)
    def add_server(self, name):
        """Id of the server called ``name``, registering it if new (idempotent)."""
        if not isinstance(name, str) or not 1 <= len(name.strip()) <= 200:
            raise QueryError("server name must be 1-200 characters, got %r" % (name,))
        name = name.strip()
        registered = Server.select(Server.id).where(Server.name == name).bind(self.db)
        sid = registered.scalar()
        if sid is None:
            self.dialect.insert_drawing_id(
                self.db, Server.insert(name=name, created_at=utcnow()).on_conflict_ignore())
            sid = registered.scalar()
        return sid

    @guarded()
    def record(self, server_id, collected_at, values, on_error="raise"):
        """Store one sample of several metrics: ``values`` maps name -> number."""
        if not isinstance(values, Mapping):
            raise QueryError("values must map metric names to numbers, e.g. "
                             "{'cpu_percent': 12.5}, got %r" % (values,))
        return self.record_many((Sample(server_id, name, value, collected_at)
                                 for name, value in values.items()), on_error=on_error)

    def record_many(self, samples, on_error="raise", commit_every=None):
        """Store ``(server_id, metric, value, collected_at)`` rows from any iterable.

        Streams in chunks, read and validated while no write lock is held;
        one transaction (all or nothing) unless ``commit_every=N`` (commit
        after every N input rows, for huge inputs). Bad rows raise
        ValidationError listing them, or with ``on_error='skip'`` are
        returned in the result. Rows already stored are counted as
        duplicates, never written twice. Returns a
        :class:`~metricstore.ingest.WriteResult`.
        """
        write_ = self._record_many if commit_every is None else self._record_many_in_steps
        return write_(METRICS, samples, on_error, commit_every)

    @guarded()
    def record_snapshot(self, server_id, collected_at, cpu_percent=None, memory_percent=None,
                        connection_count=None, status="online"):
        """Store one server snapshot (idempotent on (server_id, collected_at))."""
        return self.record_snapshots([SnapshotSample(server_id, collected_at, cpu_percent,
                                                     memory_percent, connection_count,
                                                     status)])

    def record_snapshots(self, snapshots, on_error="raise", commit_every=None):
        """Store SnapshotSample tuples (or dicts with its fields); like record_many."""
        write_ = (self._record_snapshots if commit_every is None
                  else self._record_snapshots_in_steps)
        return write_(SNAPSHOTS, snapshots, on_error, commit_every)

    def _write(self, target, rows, on_error, commit_every):
        if target is METRICS:
            check = metric_checker(self.metric_rules(refresh=True), self._server_ids(),
                                   self._time_bounds())
        else:
            check = snapshot_checker(self._server_ids(), self._time_bounds())
        # The rollup tiers change with the rows (the snapshot columns too).
        if target is METRICS:
            tiers = TierUpdater(self.db, self._counters())
        else:
            tiers = SnapshotTierUpdater(self.db)
        return write(self.db, target, rows, check, on_error, commit_every=commit_every,
                     tiers=tiers)

    # A connection lost mid-write: with one transaction nothing was committed;
    # with commit_every earlier steps may have been (ConnectionLostError.written).
    _record_many = guarded("record_many")(_write)
    _record_many_in_steps = guarded("record_many", atomic=False)(_write)
    _record_snapshots = guarded("record_snapshots")(_write)
    _record_snapshots_in_steps = guarded("record_snapshots", atomic=False)(_write)

    def _time_bounds(self):
        """From the retention cutoff (rows older would be deleted by the next
        maintenance) to now + max_skew."""
        return TimeBounds.at(to_utc(self.clock(), "clock()"), self.max_skew,
                             get_retention_days(self.db))

    # -- reading ------------------------------------------------------------------
    def _series_params(self, server_id, metric, start, end):
        """Checked arguments of a one-series query: ``(rule, start, end, params)``
        with ``start``/``end`` in UTC and ``params`` ready for the SQL."""
        start, end = check_range(start, end)
        sid = self._check_server(server_id)
        rule = self._rule(metric)
        t = self.dialect.time_param
        return rule, start, end, {"sid": sid, "mid": rule.id, "start": t(start), "end": t(end)}

    @guarded(read_only=True)
    def series(self, server_id, metric, start, end):
        """Raw points ``Point(collected_at, value)`` in ``[start, end)``, ascending.

        An iterator that streams: it reads pages of 20,000 points by key
        (``collected_at > last read``), so memory stays bounded however long
        the range, a day of 15 s points is one round trip, and no transaction
        or snapshot stays open while the caller iterates. Read-only.
        """
        params = self._series_params(server_id, metric, start, end)[3]
        return self._stream(params)

    @guarded("series", read_only=True)
    def _stream(self, params):
        for rows in self._pages(params):
            yield from self._points(rows)

    def _pages(self, params, size=SERIES_PAGE_ROWS):
        params["limit"] = size
        rows = self.db.execute_sql(self.dialect.sql(Q.SERIES), params).fetchall()
        after = self.dialect.sql(Q.SERIES_AFTER)
        while rows:
            yield rows
            if len(rows) < size:
                return
            params["after"] = rows[-1][0]      # the driver's own value, passed back
            rows = self.db.execute_sql(after, params).fetchall()

    def _points(self, rows):
        # One batch, and no Python-level step per row: decoding and
        # tuple.__new__(Point, (t, v)) both run inside map().
        times, values = zip(*rows)
        return map(tuple.__new__, repeat(Point), zip(self.dialect.time_results(times), values))

    @guarded(read_only=True)
    def buckets(self, server_id, metric, start, end, every, stats=DEFAULT_STATS, fill=False,
                resolution="auto"):
        """Statistics per UTC-aligned bucket of width ``every`` (a timedelta).

        Buckets start at multiples of ``every`` since 1970-01-01T00:00Z; each
        covers the points of ``[start, end)`` inside it. ``stats`` from
        avg, min, max, sum, count, last, p50, p90, p95, p99 (percentiles
        interpolate like percentile_cont). Empty buckets are absent unless
        ``fill=True``, then present with every stat None; a filled call
        returns at most :data:`MAX_BUCKETS` (100,000) buckets and refuses a
        range and width that would make more (QueryError). Read-only.

        With ``resolution='auto'`` the coarsest rollup tier whose width
        divides ``every`` serves the aligned part of the range (finer tiers
        and raw samples the edges); ``'raw'`` forces raw samples. Each bucket
        (and the returned list) carries ``resolution`` and the percentile
        ``error`` bound (0.01 relative when a tier's sketch answered).
        """
        stats = self._check_stats(stats)
        every = _interval(every, "every")
        rule, start, end, params = self._series_params(server_id, metric, start, end)
        if fill and start < end:
            first = EPOCH + (start - EPOCH) // every * every
            wanted = -(-(end - first) // every)
            if wanted > MAX_BUCKETS:
                raise QueryError(
                    "buckets(fill=True) would return %d buckets of %s; the limit is %d per "
                    "call: use a wider every, a shorter range, or fill=False (only buckets "
                    "holding data)" % (wanted, every, MAX_BUCKETS))
        segments = self._segments(start, end, resolution, every // timedelta(microseconds=1))
        if segments:
            out = self._tier_buckets(params["sid"], rule.id, every, segments, stats)
        else:
            out = R.Served()
            params["every"] = self.dialect.interval_param(every)
            d = self.dialect
            source = Q.BUCKET_SOURCE.format(bucket=d.bucket("collected_at"))
            sql = d.sql("%s ORDER BY g" % d.grouped_stats(source, stats))
            for row in self.db.execute_sql(sql, params):
                begin = d.time_result(row[0])
                out.append(Bucket(begin, begin + every, dict(zip(stats, _numbers(row[1:])))))
        if not fill:
            return out
        found, served = {b.start: b for b in out}, out
        out = R.Served()
        out.resolution, out.error = served.resolution, served.error
        if start == end:                 # an empty range meets no bucket
            return out
        begin = EPOCH + (start - EPOCH) // every * every
        while begin < end:
            out.append(found.get(begin) or Bucket(begin, begin + every,
                                                  dict.fromkeys(stats), out.resolution,
                                                  out.error))
            begin += every
        return out

    @guarded(read_only=True)
    def summary(self, server_id, metric, start, end, stats=DEFAULT_STATS, resolution="auto"):
        """``{stat: value}`` over all points of ``[start, end)`` (values None
        when there are none): a dict with ``resolution`` and ``error`` (see
        :meth:`buckets`). Read-only."""
        stats = self._check_stats(stats)
        rule, start, end, params = self._series_params(server_id, metric, start, end)
        segments = self._segments(start, end, resolution)
        if segments:
            out = R.Summary(R.summary(self.db, params["sid"], rule.id, segments, stats))
            out.resolution = R.resolution(segments)
            out.error = R.percentile_error(stats, segments)
            return out
        sql = self.dialect.sql(self.dialect.grouped_stats(Q.RANGE_SOURCE, stats))
        row = self.db.execute_sql(sql, params).fetchone()
        return R.Summary(zip(stats, _numbers(row[1:]) if row else [None] * len(stats)))

    @guarded(read_only=True)
    def rate(self, server_id, metric, start, end, every, max_gap=DEFAULT_MAX_GAP,
             resolution="auto"):
        """Per-second rate of a counter per UTC-aligned bucket of width ``every``.

        Rate = sum of deltas / sum of elapsed seconds over consecutive sample
        pairs in ``[start, end)``; a drop is a counter reset (the delta is the
        new value); pairs further apart than ``max_gap`` are left out.
        Raises QueryError for a gauge. Read-only. A tier serves it when its
        stored pairs match ``max_gap`` (see :meth:`buckets` for
        ``resolution``); the answer equals the raw one.
        """
        every = _interval(every, "every")
        max_gap = _interval(max_gap, "max_gap")
        rule, start, end, params = self._series_params(server_id, metric, start, end)
        if rule.kind != COUNTER:
            raise QueryError("rate() needs a counter; %s is a %s: use buckets() for its "
                             "level" % (rule.name, rule.kind))
        one = timedelta(microseconds=1)
        segments = self._segments(start, end, resolution, every // one, max_gap // one)
        out = R.Served()
        if segments:
            out.resolution = R.resolution(segments)
            for g, delta, seconds, pairs in R.rates(self.db, params["sid"], rule.id,
                                                    every // one, max_gap // one, segments,
                                                    self._counters()):
                begin = EPOCH + timedelta(microseconds=g)
                out.append(Rate(begin, begin + every, delta / seconds if seconds else None,
                                float(delta), float(seconds), pairs))
            return out
        d = self.dialect
        params.update(every=d.interval_param(every), gap=d.interval_param(max_gap))
        sql = d.sql(Q.RATE, bucket=d.bucket("t"), seconds=d.seconds("t", "pt"))
        for g, delta, seconds, pairs in self.db.execute_sql(sql, params):
            begin = d.time_result(g)
            out.append(Rate(begin, begin + every, delta / seconds if seconds else None,
                            float(delta), float(seconds), pairs))
        return out

    @guarded(read_only=True)
    def latest(self, metric, server_ids=None):
        """The latest value of ``metric`` for every server that has one (or for
        ``server_ids``): ``Latest(server_id, server_name, collected_at, value)``,
        by server id. One index probe per server. Read-only."""
        rule = self._rule(metric)
        params = {"mid": rule.id}
        sql = self._with_filter(self.dialect.latest, server_ids, params)
        decode = self.dialect.time_result
        return [Latest(sid, name, decode(t), v)
                for sid, name, t, v in self.db.execute_sql(sql, params)]

    @guarded(read_only=True)
    def latest_snapshots(self, stale_after=DEFAULT_STALE_AFTER, server_ids=None, now=None):
        """Every server's latest snapshot as a :class:`FleetEntry`, marked
        ``stale`` when older than ``stale_after`` (or absent). Read-only."""
        stale_after = to_timedelta(stale_after, "stale_after")
        now = to_utc(now or self.clock(), "now")
        params = {}
        sql = self._with_filter(self.dialect.latest_snapshots, server_ids, params)
        out = []
        for sid, name, t, cpu, mem, conns, status in self.db.execute_sql(sql, params):
            t = self.dialect.time_result(t)
            out.append(FleetEntry(sid, name, t, cpu, mem, conns, status,
                                  t is None or now - t > stale_after))
        return out

    def _with_filter(self, template, server_ids, params):
        if server_ids is None:
            return self.dialect.sql(template, filter="")
        params["ids"] = self.dialect.ids_param(_server_ids(server_ids))
        return self.dialect.sql(template, filter=self.dialect.id_filter("s.id"))

    @guarded(read_only=True)
    def snapshot_buckets(self, server_id, column, start, end, every, stats=DEFAULT_STATS,
                         resolution="auto"):
        """Statistics per UTC-aligned bucket of a snapshot column
        (cpu_percent, memory_percent or connection_count) of one server:
        like :meth:`buckets` (same stats, tiers and ``resolution``), NULL
        values left out; only buckets holding data. Read-only."""
        stats = self._check_stats(stats)
        every = _interval(every, "every")
        start, end = check_range(start, end)
        sid = self._check_server(server_id)
        mid = snapshot_series(column)
        every_us = every // timedelta(microseconds=1)
        segments = self._segments(start, end, resolution, every_us) or (
            [Segment(self._sources()[-1], to_micros(start), to_micros(end))]
            if start < end else [])
        return self._tier_buckets(sid, mid, every, segments, stats)

    def _tier_buckets(self, sid, mid, every, segments, stats):
        """:class:`Bucket` objects of series (sid, mid) over the plan's
        ``segments`` (the non-empty buckets, ascending)."""
        out = R.Served()
        name = out.resolution = R.resolution(segments)
        error = out.error = R.percentile_error(stats, segments)
        step = every // timedelta(microseconds=1)
        starts, columns = R.buckets(self.db, sid, mid, step, segments, stats)
        # One loop, no call a bucket; consecutive buckets share the datetime
        # of their common edge (a 30-day chart: 721 buckets, ~1 ms).
        expect = edge = None
        append = out.append
        for g, values in zip(starts, zip(*columns)):
            begin = edge if g == expect else EPOCH + timedelta(microseconds=g)
            edge, expect = begin + every, g + step
            bucket = _new(Bucket)
            _set(bucket, "__dict__", {"start": begin, "end": edge,
                                      "stats": dict(zip(stats, values)),
                                      "resolution": name, "error": error})
            append(bucket)
        return out

    @guarded(read_only=True)
    def snapshots(self, server_id, start, end):
        """A server's snapshots in ``[start, end)``, ascending. Read-only."""
        start, end = check_range(start, end)
        sid = self._check_server(server_id)
        t = self.dialect.time_param
        rows = self.db.execute_sql(self.dialect.sql(Q.SNAPSHOTS),
                                   {"sid": sid, "start": t(start), "end": t(end)})
        return [Snapshot(sid, self.dialect.time_result(r[0]), *r[1:]) for r in rows]

    @guarded(read_only=True)
    def top(self, metric, start, end, n=10, stat="avg", ascending=False, resolution="auto"):
        """The ``n`` servers ranked by ``stat`` (avg, min, max, last, p50..p99)
        of ``metric`` over ``[start, end)``; highest first unless
        ``ascending``; ties broken by server id. A list with ``resolution``
        and ``error`` (see :meth:`buckets`). Read-only."""
        (stat,) = self._check_stats((stat,))
        if stat in ("count", "sum"):
            raise QueryError("top() ranks by avg, min, max, last or a percentile, not %r"
                             % stat)
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_TOP:
            raise QueryError("n must be a whole number from 1 to %d, got %r" % (MAX_TOP, n))
        start, end = check_range(start, end)
        rule = self._rule(metric)
        names = dict(self.db.execute_sql("SELECT id, name FROM servers"))
        segments = self._segments(start, end, resolution)
        if segments:
            values = R.top(self.db, sorted(names), rule.id, segments, stat)
            sign = 1 if ascending else -1
            ranked = sorted(values.items(), key=lambda kv: (sign * kv[1], kv[0]))[:n]
            out = R.Served(Ranked(sid, names.get(sid), float(v)) for sid, v in ranked)
            out.resolution = R.resolution(segments)
            out.error = R.percentile_error((stat,), segments)
            return out
        d = self.dialect
        sql = d.top(stat, "ASC" if ascending else "DESC")
        params = {"mid": rule.id, "start": d.time_param(start), "end": d.time_param(end),
                  "n": n}
        return R.Served(Ranked(sid, names.get(sid), float(v))
                        for sid, v in self.db.execute_sql(sql, params))

    @guarded(read_only=True)
    def heatmap(self, metric, start, end, every, stat="avg", server_ids=None,
                resolution="auto"):
        """``stat`` of ``metric`` per server and UTC-aligned bucket of width
        ``every`` over ``[start, end)``, every server (or ``server_ids``) in
        one call: a :class:`Heatmap`. Same buckets and statistics as
        :meth:`buckets` per server; at most :data:`MAX_BUCKETS` cells of
        servers x buckets (QueryError beyond). Read-only."""
        (stat,) = self._check_stats((stat,))
        every = _interval(every, "every")
        start, end = check_range(start, end)
        rule = self._rule(metric)
        names = dict(self.db.execute_sql("SELECT id, name FROM servers"))
        if server_ids is not None:
            wanted = _server_ids(server_ids)
            missing = sorted(set(wanted) - set(names))
            if missing:
                raise UnknownServerError("heatmap(server_ids=...): no server with id %s; "
                                         "list them with servers()" % missing[:10])
            names = {sid: names[sid] for sid in wanted}
        first = EPOCH + (start - EPOCH) // every * every
        starts = []
        begin = first
        while begin < end and len(starts) * max(1, len(names)) <= MAX_BUCKETS:
            starts.append(begin)
            begin += every
        if len(starts) * len(names) > MAX_BUCKETS:
            raise QueryError(
                "heatmap would return more than %d cells (%d servers x buckets of %s); use "
                "a wider every, a shorter range or fewer server_ids" % (
                    MAX_BUCKETS, len(names), every))
        every_us = every // timedelta(microseconds=1)
        segments = self._segments(start, end, resolution, every_us)
        out = Heatmap(stat, every, starts, {}, names)
        ids = sorted(names)
        if segments:
            out.resolution = R.resolution(segments)
            out.error = R.percentile_error((stat,), segments)
            out.rows = R.grid(self.db, ids, rule.id, to_micros(first), every_us, len(starts),
                              segments, stat)
            return out
        index = {to_micros(b): i for i, b in enumerate(starts)}
        for sid in ids:
            row = out.rows[sid] = [None] * len(starts)
            for b in self.buckets(sid, metric, start, end, every, stats=(stat,),
                                  resolution="raw"):
                row[index[to_micros(b.start)]] = b.stats[stat]
        return out

    @guarded(read_only=True)
    def gaps(self, server_id, metric, start, end, expected_every, tolerance=1.5):
        """Intervals in ``[start, end)`` longer than ``expected_every * tolerance``
        with no sample, as ``Gap(start, end)`` bounded by the samples (or range
        edges) around them. Read-only."""
        expected_every = _interval(expected_every, "expected_every")
        if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) \
                or not 1 <= tolerance <= 1e6:
            raise QueryError("tolerance must be a number from 1 to 1e6, got %r" % (tolerance,))
        limit = expected_every * tolerance
        _, start, end, params = self._series_params(server_id, metric, start, end)
        d = self.dialect
        params["gap"] = d.interval_param(limit)
        first, last = self.db.execute_sql(d.sql(Q.SPAN), params).fetchone()
        if first is None:
            return [Gap(start, end)] if end - start > limit else []
        first, last = d.time_result(first), d.time_result(last)
        out = [Gap(start, first)] if first - start > limit else []
        out += [Gap(d.time_result(a), d.time_result(b))
                for a, b in self.db.execute_sql(d.sql(Q.GAPS), params)]
        if end - last > limit:
            out.append(Gap(last, end))
        return out

    @guarded(read_only=True)
    def silent_servers(self, since):
        """Servers with no metric and no snapshot collected at or after ``since``."""
        since = to_utc(since, "since")
        sql = self.dialect.sql(self.dialect.silent)
        return [ServerRef(*r) for r in self.db.execute_sql(
            sql, {"since": self.dialect.time_param(since)})]

    def _segments(self, start, end, resolution, every_us=None, max_gap_us=None):
        """The tier plan for ``[start, end)``, or None when raw serves it all."""
        if resolution not in RESOLUTIONS:
            raise QueryError("resolution must be 'auto' (tiers where they fit) or 'raw', "
                             "got %r" % (resolution,))
        if resolution == "raw" or start == end:
            return None
        sources = usable(self._sources(), every_us)
        if max_gap_us is not None:
            sources = R.rate_sources(sources, max_gap_us)
        segments = plan_segments(to_micros(start), to_micros(end), sources)
        return segments if R.uses_tier(segments) else None

    def _sources(self):
        """The tier plan's sources at ``clock()``; the retention settings are
        re-read at most every SETTINGS_TTL_S (a horizon that lags by seconds
        changes no answer: tiers and raw expire only in maintenance)."""
        now = to_utc(self.clock(), "clock()")
        cached = self.__dict__.get("_retention")
        if cached is None or time.monotonic() - cached[0] > SETTINGS_TTL_S:
            cached = self._retention = (time.monotonic(), R.retention(self.db))
        return R.sources_at(now, *cached[1])

    def _counters(self):
        return {r.id for r in self.metric_rules().values() if r.kind == COUNTER}

    @staticmethod
    def _check_stats(stats):
        if isinstance(stats, str):
            stats = (stats,)
        try:
            stats = tuple(stats)
        except TypeError:
            raise QueryError("stats must be a stat name or a sequence of them (%s), got %r"
                             % (", ".join(Q.STATS), stats)) from None
        bad = [s for s in stats if s not in Q.STATS]
        if bad or not stats or len(set(stats)) != len(stats):
            raise QueryError("stats must be distinct names from %s, got %r"
                             % (", ".join(Q.STATS), stats))
        return stats


def _server_ids(ids):
    """``ids`` as a list of plain int server ids, or QueryError naming the argument."""
    out = [None]
    if not isinstance(ids, (str, bytes)):
        try:
            out = [server_id_of(value) for value in ids]
        except TypeError:               # not iterable
            pass
    if None in out:
        raise QueryError("server_ids must be a list of integer server ids (or None for "
                         "every server), got %r" % (ids,))
    return out


def _interval(value, name):
    """``value`` (timedelta or seconds) as a timedelta of at most MAX_INTERVAL."""
    delta = to_timedelta(value, name)
    if delta > MAX_INTERVAL:
        raise QueryError("%s must be at most %d days, got %s" % (
            name, MAX_INTERVAL.days, delta))
    return delta


def _numbers(values):
    return [None if v is None else v if isinstance(v, int) else float(v) for v in values]
