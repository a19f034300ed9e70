"""Reading (issue 4, "Reading (the app)").

``series``, ``buckets``, ``rate``, ``latest``, ``latest_snapshots``,
``snapshots``, ``top``, ``gaps`` and ``silent_servers`` on the engine
``DATABASE_URL`` selects. Every answer is checked against a computation in
plain Python over the rows the test wrote (the ``expected_*`` functions
below), with random rows from hypothesis and small hand-checkable examples:
half-open ranges, bucket edges, empty ranges, inputs in several zones,
counter resets and gaps, and ties.

Each hypothesis example writes to fresh servers (``add_server(uuid)``) and
also writes "noise" (another metric, another server) that must not leak in.
"""

import itertools
import math
import uuid
from collections import defaultdict
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import metricstore
from metricstore import (MetricRepository, MetricstoreError, QueryError, SnapshotSample,
                         TimeError, UnknownMetricError, UnknownServerError)

UTC = timezone.utc
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_US = timedelta(microseconds=1)
BASE = datetime(2025, 3, 12, 9, 0, tzinfo=UTC)         # minute- and hour-aligned
HOUR_US = 3600 * 10 ** 6
ALL_STATS = ("avg", "min", "max", "sum", "count", "last", "p50", "p90", "p95", "p99")
PERCENTILES = {"p50": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99}

PROPERTY = settings(max_examples=30, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])

ZONES = [timezone(timedelta(hours=h, minutes=m)) for h, m in
         ((0, 0), (5, 30), (-8, 0), (14, 0), (-12, 0), (9, 45), (-3, -30))]
zones = st.sampled_from(ZONES)
# Multiples of 1/4 between 0 and 100: valid percentages whose sums are exact.
values = st.integers(0, 400).map(lambda k: k / 4)


def approx(x):
    return pytest.approx(x, rel=1e-9, abs=1e-12)


def us(n):
    return timedelta(microseconds=n)


def fresh_server(repo):
    return repo.add_server("srv-" + uuid.uuid4().hex)


def write(repo, sid, metric, points):
    repo.record_many([(sid, metric, v, t) for t, v in points])


def with_noise(repo, sid, metric, points):
    """Write ``points``, the same instants under another metric of the same
    server, and under the same metric of another server."""
    write(repo, sid, metric, points)
    other_metric = "memory_percent" if metric != "memory_percent" else "cpu_percent"
    if metric in ("disk_io_reads", "disk_io_writes"):
        other_metric = "disk_io_writes" if metric == "disk_io_reads" else "disk_io_reads"
    write(repo, sid, other_metric, [(t, v / 2 + 0.125) for t, v in points])
    write(repo, fresh_server(repo), metric, [(t, v / 4 + 0.5) for t, v in points])


def is_utc(t):
    return t.tzinfo is not None and t.utcoffset() == timedelta(0)


@pytest.fixture
def repo(db):
    # The fixed dates of these tests (2025) must be inside the retention window:
    # writes older than the cutoff are refused (see test_ingest's retention test).
    metricstore.set_retention_days(db, 3660)
    return MetricRepository(db)


# -- the Python reference ------------------------------------------------------------
def floor_to(t, width):
    """Start of the epoch-aligned bucket of ``width`` holding ``t`` (via epoch us)."""
    t_us = (t - EPOCH) // ONE_US
    w_us = width // ONE_US
    return EPOCH + us(t_us - t_us % w_us)


def percentile_cont(vals, p):
    s = sorted(vals)
    pos = p * (len(s) - 1)
    lo = math.floor(pos)
    if lo + 1 >= len(s):
        return s[lo]
    return s[lo] + (s[lo + 1] - s[lo]) * (pos - lo)


def stat_of(name, points):
    """``name`` over ``points`` [(t, v)], or None when there are none."""
    if not points:
        return None
    vals = [v for _, v in points]
    if name == "count":
        return len(vals)
    if name == "sum":
        return sum(vals)
    if name == "avg":
        return sum(vals) / len(vals)
    if name == "min":
        return min(vals)
    if name == "max":
        return max(vals)
    if name == "last":
        return max(points)[1]
    return percentile_cont(vals, PERCENTILES[name])


def in_range(points, start, end):
    return sorted((t, v) for t, v in points if start <= t < end)


def expected_buckets(points, start, end, width, stats, fill=False):
    groups = defaultdict(list)
    for t, v in in_range(points, start, end):
        groups[floor_to(t, width)].append((t, v))
    if fill:
        starts, b = [], floor_to(start, width)
        while start < end and b < end:
            starts.append(b)
            b += width
    else:
        starts = sorted(groups)
    return [(b, b + width, {s: stat_of(s, groups.get(b)) for s in stats}) for b in starts]


def expected_rate(points, start, end, width, max_gap):
    acc = defaultdict(lambda: [0.0, 0.0, 0])
    inside = in_range(points, start, end)
    for (pt, pv), (t, v) in zip(inside, inside[1:]):
        if t - pt > max_gap:
            continue
        a = acc[floor_to(t, width)]
        a[0] += v - pv if v >= pv else v
        a[1] += (t - pt).total_seconds()
        a[2] += 1
    return [(b, b + width, d / s, d, s, n) for b, (d, s, n) in sorted(acc.items())]


def expected_gaps(times, start, end, limit):
    inside = sorted(t for t in times if start <= t < end)
    if not inside:
        return [(start, end)] if end - start > limit else []
    edges = [start] + inside + [end]
    return [(a, b) for a, b in zip(edges, edges[1:]) if b - a > limit]


def assert_buckets(got, expected):
    assert [(b.start, b.end) for b in got] == [(s, e) for s, e, _ in expected]
    for bucket, (_, _, stats) in zip(got, expected):
        assert all(is_utc(t) for t in (bucket.start, bucket.end))
        assert list(bucket.stats) == list(stats)
        for name, want in stats.items():
            have = bucket.stats[name]
            if want is None or name == "count":
                assert have == want, (bucket.start, name)
            else:
                assert have == approx(want), (bucket.start, name)


# -- strategies ----------------------------------------------------------------------
def points_strategy(span_us=6 * HOUR_US, max_size=40):
    return st.lists(st.tuples(st.integers(0, span_us), values), max_size=max_size,
                    unique_by=lambda p: p[0]).map(
        lambda ps: [(BASE + us(o), v) for o, v in ps])


@st.composite
def ranges(draw, points, low=-HOUR_US, high=7 * HOUR_US):
    """[start, end) as aware datetimes in random zones; edges often on a point."""
    def edge():
        if points and draw(st.booleans()):
            return draw(st.sampled_from([t for t, _ in points]))
        return BASE + us(draw(st.integers(low, high)))
    a, b = sorted((edge(), edge()))
    return a.astimezone(draw(zones)), b.astimezone(draw(zones))


widths = st.one_of(st.integers(1, 7200).map(lambda s: timedelta(seconds=s)),
                   st.integers(1_000, 7200 * 10 ** 6).map(us),
                   st.sampled_from([timedelta(days=1), timedelta(days=7),
                                    timedelta(days=30)]))     # epoch-aligned, too


# -- series ----------------------------------------------------------------------------
@PROPERTY
@given(data=st.data(), points=points_strategy())
def test_series_is_the_points_of_the_half_open_range_ascending(repo, data, points):
    sid = fresh_server(repo)
    with_noise(repo, sid, "cpu_percent", points)
    start, end = data.draw(ranges(points))
    got = repo.series(sid, "cpu_percent", start, end)
    assert iter(got) is got                                 # an iterator, not a list
    got = list(got)
    assert [(p.collected_at, p.value) for p in got] == in_range(points, start, end)
    assert all(is_utc(p.collected_at) for p in got)


def test_series_includes_a_point_at_start_and_excludes_one_at_end(repo):
    sid = repo.add_server("a")
    points = [(BASE + timedelta(minutes=i), float(i)) for i in range(5)]
    write(repo, sid, "cpu_percent", points)
    start, end = points[1][0], points[3][0]
    got = list(repo.series(sid, "cpu_percent", start, end))
    assert [(p.collected_at, p.value) for p in got] == points[1:3]
    assert list(repo.series(sid, "cpu_percent", start, start)) == []      # empty range
    assert list(repo.series(sid, "cpu_percent", start - us(1), start)) == []
    assert [p.value for p in repo.series(sid, "cpu_percent", start, start + us(1))] == [1.0]
    # the same instants given in other zones
    india, pacific = ZONES[1], ZONES[2]
    got = list(repo.series(sid, "cpu_percent", start.astimezone(india),
                           end.astimezone(pacific)))
    assert [(p.collected_at, p.value) for p in got] == points[1:3]
    assert all(p.collected_at.tzinfo == UTC for p in got)


def test_series_streams_more_rows_than_one_fetch(repo):
    for n in (12_001, 10_000):          # batches of thousands, with and without a remainder
        sid = repo.add_server("streamed-%d" % n)
        points = [(BASE + timedelta(seconds=i), float(i % 101)) for i in range(n)]
        write(repo, sid, "cpu_percent", points)
        got = repo.series(sid, "cpu_percent", BASE, BASE + timedelta(days=1))
        first = next(got)
        assert (first.collected_at, first.value) == points[0]
        assert [(p.collected_at, p.value) for p in got] == points[1:]


def test_an_abandoned_series_leaves_the_connection_usable(repo, tenant_url):
    sid = repo.add_server("a")
    write(repo, sid, "cpu_percent", [(BASE + timedelta(seconds=i), 1.0) for i in range(10)])
    got = repo.series(sid, "cpu_percent", BASE, BASE + timedelta(hours=1))
    next(got)
    got.close()                                         # stop reading halfway
    write(repo, sid, "cpu_percent", [(BASE + timedelta(hours=2), 2.0)])
    assert [p.value for p in repo.series(sid, "cpu_percent", BASE + timedelta(hours=2),
                                         BASE + timedelta(hours=3))] == [2.0]
    other = metricstore.connect(tenant_url)             # the write is committed
    try:
        assert other.execute_sql("SELECT count(*) FROM metrics").fetchone()[0] == 11
    finally:
        other.close()


def test_queries_refuse_bad_arguments_with_metricstore_errors(db, repo):
    sid = repo.add_server("a")
    end = BASE + timedelta(hours=1)
    with pytest.raises(UnknownMetricError) as caught:
        repo.series(sid, "cpu", BASE, end)
    known = sorted(r[0] for r in db.execute_sql("SELECT name FROM metric_types"))
    assert "'cpu'" in str(caught.value) and ", ".join(known) in str(caught.value)
    with pytest.raises(UnknownServerError, match="999999"):
        repo.series(999_999, "cpu_percent", BASE, end)
    with pytest.raises(TimeError, match="naive") as caught:
        repo.series(sid, "cpu_percent", datetime(2025, 3, 12, 9, 0), end)
    assert "tzinfo" in str(caught.value)
    with pytest.raises(TimeError, match="before start"):
        repo.series(sid, "cpu_percent", end, BASE)
    with pytest.raises(UnknownMetricError):
        repo.buckets(sid, "nope", BASE, end, timedelta(minutes=1))
    with pytest.raises(UnknownServerError):
        repo.buckets(999_999, "cpu_percent", BASE, end, timedelta(minutes=1))
    with pytest.raises(TimeError):
        repo.buckets(sid, "cpu_percent", BASE, end.replace(tzinfo=None), timedelta(minutes=1))
    with pytest.raises(QueryError, match="p42"):
        repo.buckets(sid, "cpu_percent", BASE, end, timedelta(minutes=1), stats=("p42",))
    with pytest.raises(TimeError, match="every"):
        repo.buckets(sid, "cpu_percent", BASE, end, timedelta(0))
    with pytest.raises(UnknownMetricError):
        repo.latest("nope")
    with pytest.raises(UnknownServerError):
        repo.snapshots(999_999, BASE, end)
    with pytest.raises(QueryError):
        repo.top("cpu_percent", BASE, end, stat="count")
    with pytest.raises(QueryError):
        repo.top("cpu_percent", BASE, end, n=0)
    with pytest.raises(TimeError):
        repo.silent_servers(datetime(2025, 1, 1))
    for error in (UnknownMetricError, UnknownServerError, TimeError, QueryError):
        assert issubclass(error, MetricstoreError)


# -- buckets ---------------------------------------------------------------------------
def test_buckets_by_hand(repo):
    sid = repo.add_server("a")
    minute = timedelta(minutes=1)
    write(repo, sid, "cpu_percent", [(BASE, 1.0), (BASE + timedelta(seconds=10), 2.0),
                                     (BASE + timedelta(seconds=20), 3.0),
                                     (BASE + timedelta(seconds=65), 10.0)])
    got = repo.buckets(sid, "cpu_percent", BASE, BASE + 3 * minute, minute,
                       stats=("avg", "min", "max", "sum", "count", "last", "p50", "p90"))
    assert [(b.start, b.end) for b in got] == [(BASE, BASE + minute),
                                               (BASE + minute, BASE + 2 * minute)]
    assert got[0].stats == {"avg": 2.0, "min": 1.0, "max": 3.0, "sum": 6.0, "count": 3,
                            "last": 3.0, "p50": 2.0, "p90": approx(2.8)}
    assert got[1].stats == {"avg": 10.0, "min": 10.0, "max": 10.0, "sum": 10.0, "count": 1,
                            "last": 10.0, "p50": 10.0, "p90": 10.0}
    assert got[0].avg == 2.0                                # stats read as attributes
    filled = repo.buckets(sid, "cpu_percent", BASE + timedelta(seconds=15),
                          BASE + 3 * minute, minute, stats=("count", "avg"), fill=True)
    assert [(b.start, b.stats) for b in filled] == [
        (BASE, {"count": 1, "avg": 3.0}),                   # only the point >= start
        (BASE + minute, {"count": 1, "avg": 10.0}),
        (BASE + 2 * minute, {"count": None, "avg": None})]  # missing, never 0


@PROPERTY
@given(data=st.data(), points=points_strategy(), width=widths,
       stats=st.one_of(st.just(ALL_STATS),
                       st.lists(st.sampled_from(ALL_STATS), min_size=1, unique=True)))
def test_buckets_match_a_python_computation(repo, data, points, width, stats):
    sid = fresh_server(repo)
    with_noise(repo, sid, "cpu_percent", points)
    start, end = data.draw(ranges(points))
    # exact statistics from the tiers (auto) equal these; percentiles from a
    # tier are approximate (tests/test_rollups.py), so exact ones read raw
    exact = "raw" if any(s.startswith("p") for s in stats) else "auto"
    got = repo.buckets(sid, "cpu_percent", start, end, width, stats=stats, resolution=exact)
    assert_buckets(got, expected_buckets(points, start, end, width, tuple(stats)))


@PROPERTY
@given(data=st.data(), points=points_strategy(max_size=25),
       width=st.integers(60, 7200).map(lambda s: timedelta(seconds=s)))
def test_filled_buckets_cover_the_range_with_none_for_missing_data(repo, data, points, width):
    sid = fresh_server(repo)
    with_noise(repo, sid, "cpu_percent", points)
    start, end = data.draw(ranges(points))
    stats = ("avg", "count", "p95", "last")
    exact = "raw" if any(s.startswith("p") for s in stats) else "auto"
    got = repo.buckets(sid, "cpu_percent", start, end, width, stats=stats, fill=True,
                       resolution=exact)
    expected = expected_buckets(points, start, end, width, stats, fill=True)
    assert_buckets(got, expected)
    for bucket in got:
        if bucket.count is None:
            assert set(bucket.stats.values()) == {None}


def test_buckets_of_an_empty_range_are_empty_even_when_filled(repo):
    sid = repo.add_server("a")
    write(repo, sid, "cpu_percent", [(BASE + timedelta(seconds=30), 5.0)])
    at = BASE + timedelta(seconds=30)                       # inside a bucket, not on its edge
    minute = timedelta(minutes=1)
    assert repo.buckets(sid, "cpu_percent", at, at, minute) == []
    assert repo.buckets(sid, "cpu_percent", at, at, minute, fill=True) == []
    assert repo.buckets(sid, "cpu_percent", BASE, BASE, minute, fill=True) == []


# -- rate ------------------------------------------------------------------------------
def test_rate_by_hand(repo):
    sid = repo.add_server("a")
    s = timedelta(seconds=1)
    write(repo, sid, "disk_io_reads", [
        (BASE, 100), (BASE + 10 * s, 150), (BASE + 20 * s, 170),
        (BASE + 30 * s, 20),                              # a reset: the delta is 20
        (BASE + 40 * s, 60),
        (BASE + 400 * s, 100),                            # 360 s later: over max_gap
        (BASE + 410 * s, 110)])
    minute = timedelta(minutes=1)
    got = repo.rate(sid, "disk_io_reads", BASE, BASE + timedelta(hours=1), minute,
                    max_gap=timedelta(minutes=5))
    assert [tuple(r) for r in got] == [
        (BASE, BASE + minute, 130 / 40, 130.0, 40.0, 4),
        (BASE + 6 * minute, BASE + 7 * minute, 1.0, 10.0, 10.0, 1)]


@st.composite
def counter_series(draw):
    """A counter sampled at irregular steps, with resets, and gaps around max_gap."""
    max_gap = timedelta(seconds=draw(st.integers(30, 300)))
    steps = st.one_of(st.integers(1, 90).map(lambda s: timedelta(seconds=s)),
                      st.integers(1, 10 ** 8).map(us),
                      st.sampled_from([max_gap, max_gap + us(1), 3 * max_gap]))
    t = BASE + us(draw(st.integers(0, 10 ** 9)))
    value = float(draw(st.integers(0, 10 ** 6)))
    points = [(t, value)]
    for _ in range(draw(st.integers(0, 40))):
        t += draw(steps)
        if value > 0 and draw(st.integers(0, 5)) == 0:
            value = float(draw(st.integers(0, int(value) - 1)))        # reset
        else:
            value += draw(st.integers(0, 5000))
        points.append((t, value))
    return points, max_gap


@PROPERTY
@given(data=st.data(), series=counter_series(),
       width=st.integers(1, 3600).map(lambda s: timedelta(seconds=s)))
def test_rate_matches_a_python_computation(repo, data, series, width):
    points, max_gap = series
    sid = fresh_server(repo)
    with_noise(repo, sid, "disk_io_reads", points)
    start, end = data.draw(ranges(points, high=3 * HOUR_US))
    got = repo.rate(sid, "disk_io_reads", start, end, width, max_gap=max_gap)
    expected = expected_rate(points, start, end, width, max_gap)
    assert [(r.start, r.end, r.pairs) for r in got] == [e[:2] + e[5:] for e in expected]
    for r, (_, _, rate, delta, seconds, _) in zip(got, expected):
        assert (r.rate, r.delta, r.seconds) == (approx(rate), approx(delta), approx(seconds))
        assert is_utc(r.start)


def test_the_rate_of_a_gauge_is_an_error_naming_the_metric(repo):
    sid = repo.add_server("a")
    write(repo, sid, "cpu_percent", [(BASE, 1.0), (BASE + timedelta(seconds=10), 2.0)])
    with pytest.raises(QueryError, match="cpu_percent") as caught:
        repo.rate(sid, "cpu_percent", BASE, BASE + timedelta(hours=1), timedelta(minutes=1))
    assert "gauge" in str(caught.value) and "counter" in str(caught.value)


# -- latest ----------------------------------------------------------------------------
def test_latest_is_the_newest_point_of_every_server_with_data(repo):
    ids = [repo.add_server(n) for n in ("a", "b", "c", "d")]
    a, b, c, d = ids
    rows = {a: [(BASE, 10.0), (BASE + timedelta(hours=2), 30.0), (BASE + us(1), 20.0)],
            b: [(BASE - timedelta(days=40), 5.0)]}
    for sid, points in rows.items():
        write(repo, sid, "cpu_percent", points)
    write(repo, c, "memory_percent", [(BASE + timedelta(hours=5), 50.0)])   # other metric
    expected = [(sid, name, *max(rows[sid]))
                for sid, name in zip(ids, "abcd") if sid in rows]
    got = repo.latest("cpu_percent")
    assert [tuple(x) for x in got] == expected
    assert all(is_utc(x.collected_at) for x in got)
    assert [tuple(x) for x in repo.latest("cpu_percent", server_ids=[b, c, d])] == \
        [e for e in expected if e[0] == b]
    assert repo.latest("cpu_percent", server_ids=[]) == []
    assert [x.server_id for x in repo.latest("memory_percent")] == [c]


def test_latest_over_a_growing_fleet_matches_a_python_computation(db):
    metricstore.set_retention_days(db, 3660)        # the fixed 2025 dates stay writable
    repo = MetricRepository(db)
    fleet = {}                          # server id -> (name, {t: v}) across examples

    @PROPERTY
    @given(servers=st.lists(points_strategy(span_us=30 * 24 * HOUR_US, max_size=8),
                            min_size=1, max_size=5),
           pick=st.lists(st.booleans(), min_size=5, max_size=5))
    def check(servers, pick):
        mine = []
        for points in servers:
            name = "srv-" + uuid.uuid4().hex
            sid = repo.add_server(name)
            write(repo, sid, "page_life_expectancy", points)
            fleet[sid] = (name, dict(points))
            mine.append(sid)
        expected = {sid: (sid, name, *max(pts.items()))
                    for sid, (name, pts) in sorted(fleet.items()) if pts}
        assert [tuple(x) for x in repo.latest("page_life_expectancy")] == \
            list(expected.values())
        chosen = [sid for sid, p in zip(mine, pick) if p]
        assert [tuple(x) for x in repo.latest("page_life_expectancy", server_ids=chosen)] \
            == [expected[sid] for sid in sorted(chosen) if sid in expected]

    check()


# -- snapshots and latest_snapshots ----------------------------------------------------
snapshot_rows = st.lists(
    st.tuples(st.integers(0, 48 * HOUR_US), st.one_of(st.none(), values),
              st.one_of(st.none(), values), st.one_of(st.none(), st.integers(0, 5000)),
              st.sampled_from(["online", "warning", "critical", "offline", "unknown"])),
    max_size=12, unique_by=lambda r: r[0]).map(
    lambda rows: [(BASE + us(o), cpu, mem, conns, status)
                  for o, cpu, mem, conns, status in rows])


@PROPERTY
@given(data=st.data(), rows=snapshot_rows)
def test_snapshots_are_the_half_open_range_ascending(repo, data, rows):
    sid, other = fresh_server(repo), fresh_server(repo)
    repo.record_snapshots([SnapshotSample(sid, *r) for r in rows])
    repo.record_snapshots([SnapshotSample(other, *r) for r in rows])
    start, end = data.draw(ranges([(r[0], None) for r in rows], high=50 * HOUR_US))
    got = repo.snapshots(sid, start, end)
    assert [tuple(s) for s in got] == [(sid, *r) for r in sorted(rows)
                                       if start <= r[0] < end]
    assert all(is_utc(s.collected_at) for s in got)


@PROPERTY
@given(fleet=st.lists(snapshot_rows, min_size=1, max_size=5),
       now_offset=st.integers(0, 50 * HOUR_US),
       stale_after=st.integers(1, 10 * HOUR_US).map(us), zone=zones)
def test_latest_snapshots_marks_stale_servers(repo, fleet, now_offset, stale_after, zone):
    now = (BASE + us(now_offset)).astimezone(zone)
    names, expected = {}, []
    for rows in fleet:
        name = "srv-" + uuid.uuid4().hex
        sid = repo.add_server(name)
        names[sid] = name
        repo.record_snapshots([SnapshotSample(sid, *r) for r in rows])
        if rows:
            t, cpu, mem, conns, status = max(rows)
            expected.append((sid, name, t, cpu, mem, conns, status, now - t > stale_after))
        else:
            expected.append((sid, name, None, None, None, None, None, True))
    got = repo.latest_snapshots(stale_after=stale_after, server_ids=list(names), now=now)
    assert [tuple(e) for e in got] == expected
    assert all(e.collected_at is None or is_utc(e.collected_at) for e in got)


def test_latest_snapshots_staleness_edge_and_the_whole_fleet(repo):
    a, b, c = (repo.add_server(n) for n in ("a", "b", "c"))
    two_minutes = timedelta(minutes=2)
    repo.record_snapshots([SnapshotSample(a, BASE - timedelta(hours=1), 1.0, 2.0, 3, "online"),
                           SnapshotSample(a, BASE, 4.0, 5.0, 6, "warning"),
                           SnapshotSample(b, BASE - us(1), 7.0, 8.0, 9, "critical")])
    now = BASE + two_minutes             # a is exactly stale_after old: not stale yet
    got = repo.latest_snapshots(stale_after=two_minutes, now=now)
    assert [tuple(e) for e in got] == [
        (a, "a", BASE, 4.0, 5.0, 6, "warning", False),
        (b, "b", BASE - us(1), 7.0, 8.0, 9, "critical", True),
        (c, "c", None, None, None, None, None, True)]                 # no snapshot at all
    assert [e.server_id for e in repo.latest_snapshots(server_ids=[c, a], now=now)] == [a, c]
    assert repo.latest_snapshots(server_ids=[], now=now) == []


# -- top -------------------------------------------------------------------------------
windows = itertools.count(1)            # each example ranks inside its own hour


@PROPERTY
@given(data=st.data(),
       templates=st.lists(st.lists(values, min_size=1, max_size=12), min_size=1, max_size=3),
       stat=st.sampled_from(["avg", "min", "max", "last", "p50", "p95", "p99"]),
       ascending=st.booleans(), n=st.integers(1, 8))
def test_top_ranks_servers_like_a_python_computation(repo, data, templates, stat,
                                                     ascending, n):
    window = BASE - timedelta(hours=2 * next(windows))
    # several servers share a template: exact ties, broken by server id
    choice = data.draw(st.lists(st.integers(0, len(templates) - 1), min_size=1, max_size=7))
    points = {}
    for index in choice:
        name = "srv-" + uuid.uuid4().hex
        sid = repo.add_server(name)
        pts = [(window + timedelta(seconds=37 * i), v) for i, v in enumerate(templates[index])]
        write(repo, sid, "cpu_percent", pts)
        write(repo, sid, "memory_percent", [(t, 100 - v) for t, v in pts])      # noise
        points[sid] = (name, pts)
    # edges relative to the window (drawn independently of it), often on a sample
    edge = st.one_of(st.integers(0, 11).map(lambda i: timedelta(seconds=37 * i)),
                     st.integers(-HOUR_US // 6, HOUR_US).map(us))
    start, end = sorted(window + data.draw(edge) for _ in range(2))
    # exact statistics from the tiers (auto) equal the raw answer; percentiles
    # from a tier are approximate (tests/test_rollups.py), so exact ones read raw
    resolution = "raw" if stat.startswith("p") else "auto"
    got = repo.top("cpu_percent", start, end, n=n, stat=stat, ascending=ascending,
                   resolution=resolution)
    ranked = []
    for sid, (name, pts) in points.items():
        value = stat_of(stat, in_range(pts, start, end))
        if value is not None:
            ranked.append((value if ascending else -value, sid, name, value))
    expected = [(sid, name, value) for _, sid, name, value in sorted(ranked)[:n]]
    assert [(r.server_id, r.server_name) for r in got] == [e[:2] for e in expected]
    assert [r.value for r in got] == [approx(e[2]) for e in expected]


def test_top_by_hand_with_ties(repo):
    ids = [repo.add_server(n) for n in ("a", "b", "c", "d")]
    a, b, c, d = ids
    t = [BASE + timedelta(minutes=i) for i in range(3)]
    for sid, vals in ((a, [1.0, 2.0, 3.0]), (b, [3.0, 2.0, 1.0]), (c, [2.0, 2.0, 2.0]),
                      (d, [10.0, 0.0, 0.0])):
        write(repo, sid, "cpu_percent", list(zip(t, vals)))
    end = BASE + timedelta(hours=1)

    def ranking(**kw):
        return [(r.server_name, r.value) for r in repo.top("cpu_percent", BASE, end, **kw)]

    assert ranking() == [("d", 10 / 3), ("a", 2.0), ("b", 2.0), ("c", 2.0)]   # avg
    assert ranking(ascending=True) == [("a", 2.0), ("b", 2.0), ("c", 2.0), ("d", 10 / 3)]
    assert ranking(stat="max", n=2) == [("d", 10.0), ("a", 3.0)]
    assert ranking(stat="max", n=3) == [("d", 10.0), ("a", 3.0), ("b", 3.0)]
    assert ranking(stat="min", ascending=True, n=1) == [("d", 0.0)]
    assert ranking(stat="last") == [("a", 3.0), ("c", 2.0), ("b", 1.0), ("d", 0.0)]
    assert ranking(stat="p95", resolution="raw") == [("d", approx(9.0)), ("a", approx(2.9)),
                                                     ("b", approx(2.9)), ("c", 2.0)]
    # from the tiers (the 5-minute sketch): within its stated 1 % of the exact answers
    tiered = ranking(stat="p95")
    assert [n for n, _ in tiered] == ["d", "a", "b", "c"]
    assert [v for _, v in tiered] == pytest.approx([9.0, 2.9, 2.9, 2.0], rel=0.01)
    assert repo.top("cpu_percent", end, end + timedelta(hours=1)) == []


# -- gaps and silent servers -----------------------------------------------------------
@PROPERTY
@given(data=st.data(),
       slots=st.lists(st.integers(0, 120), unique=True, max_size=40),
       every=st.sampled_from([5, 10, 20]).map(lambda s: timedelta(seconds=s)),
       tolerance=st.sampled_from([1, 1.5, 2, 3]))
def test_gaps_match_a_python_computation(repo, data, slots, every, tolerance):
    five = timedelta(seconds=5)                 # samples and edges on a 5 s grid,
    times = [BASE + k * five for k in slots]    # so gaps equal to the limit occur
    sid = fresh_server(repo)
    with_noise(repo, sid, "blocked_processes", [(t, 1.0) for t in times])
    near = [st.integers(-10, 130)]                  # edges anywhere, or near a sample
    if slots:
        near.append(st.tuples(st.sampled_from(slots), st.integers(-4, 4)).map(sum))
    a, b = sorted(data.draw(st.tuples(st.one_of(near), st.one_of(near))))
    zone = data.draw(zones)
    start, end = (BASE + a * five).astimezone(zone), (BASE + b * five).astimezone(zone)
    got = repo.gaps(sid, "blocked_processes", start, end, every, tolerance=tolerance)
    assert [tuple(g) for g in got] == expected_gaps(times, start, end, every * tolerance)
    assert all(is_utc(t) for g in got for t in g)


def test_gaps_by_hand(repo):
    sid, empty = repo.add_server("a"), repo.add_server("b")
    m = timedelta(minutes=1)
    # samples every minute from 10 to 20 and from 25 to 30: missing at the start
    # (0..10), in the middle (20..25) and at the end (30..60)
    times = [BASE + i * m for i in list(range(10, 21)) + list(range(25, 31))]
    write(repo, sid, "cpu_percent", [(t, 1.0) for t in times])
    end = BASE + 60 * m
    assert [tuple(g) for g in repo.gaps(sid, "cpu_percent", BASE, end, m)] == [
        (BASE, BASE + 10 * m), (BASE + 20 * m, BASE + 25 * m), (BASE + 30 * m, end)]
    # no gap when the data covers the range at the expected pace
    assert repo.gaps(sid, "cpu_percent", BASE + 10 * m, BASE + 21 * m, m) == []
    # edges just past the limit (1.5 min) are gaps, edges at the limit are not
    assert [tuple(g) for g in repo.gaps(sid, "cpu_percent", BASE + 8 * m, BASE + 22 * m, m)
            ] == [(BASE + 8 * m, BASE + 10 * m), (BASE + 20 * m, BASE + 22 * m)]
    half = m / 2
    assert repo.gaps(sid, "cpu_percent", BASE + 10 * m - 3 * half, BASE + 20 * m + 3 * half,
                     m) == []
    # no data at all: the whole range is one gap
    assert [tuple(g) for g in repo.gaps(empty, "cpu_percent", BASE, end, m)] == [(BASE, end)]
    assert repo.gaps(empty, "cpu_percent", BASE, BASE + m, m) == []   # shorter than 1.5 m


@PROPERTY
@given(fleet=st.lists(st.tuples(st.one_of(st.none(), st.integers(0, 100)),
                                st.one_of(st.none(), st.integers(0, 100))),
                      min_size=1, max_size=6),
       since=st.integers(-5, 105), zone=zones)
def test_silent_servers_match_a_python_computation(repo, fleet, since, zone):
    minute = timedelta(minutes=1)
    since_t = (BASE + since * minute).astimezone(zone)
    mine, expected = set(), []
    for last_metric, last_snapshot in fleet:
        name = "srv-" + uuid.uuid4().hex
        sid = repo.add_server(name)
        mine.add(sid)
        times = []
        if last_metric is not None:
            times += [BASE + (last_metric - k) * minute for k in range(3)]
            write(repo, sid, "cpu_percent", [(t, 1.0) for t in times])
        if last_snapshot is not None:
            t = BASE + last_snapshot * minute
            times.append(t)
            repo.record_snapshot(sid, t, cpu_percent=1.0)
        if all(t < since_t for t in times):
            expected.append((sid, name))
    got = [tuple(s) for s in repo.silent_servers(since_t) if s.id in mine]
    assert got == expected


def test_silent_servers_by_hand(repo):
    a, b, c, d = (repo.add_server(n) for n in "abcd")
    write(repo, a, "cpu_percent", [(BASE + timedelta(minutes=10), 1.0)])
    write(repo, b, "cpu_percent", [(BASE - timedelta(minutes=10), 1.0)])
    repo.record_snapshot(c, BASE, cpu_percent=1.0)             # exactly at since: heard
    assert [tuple(s) for s in repo.silent_servers(BASE)] == [(b, "b"), (d, "d")]
    assert [s.id for s in repo.silent_servers(BASE + us(1))] == [b, c, d]
    assert repo.silent_servers(BASE - timedelta(days=1)) == [(d, "d")]
