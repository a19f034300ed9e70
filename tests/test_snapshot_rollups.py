"""The snapshot columns in the rollup tiers: each column's tier rows equal
a recompute from the snapshots stored (NULLs left out, first of a repeated
(server, time) wins, re-sends change nothing), reads of a column from the
tiers equal plain Python over the same snapshots, and rebuild and the
migration's backfill produce the same rows."""

import math
import random
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from metricstore import MetricRepository
from metricstore.errors import QueryError
from metricstore.ingest import SnapshotSample
from metricstore.rollups.rebuild import backfill, rebuild
from metricstore.rollups.snapshots import SNAPSHOT_SERIES
from metricstore.rollups.store import tier_rows
from metricstore.rollups.tiers import TIERS
from metricstore.timeutil import to_micros
from reference import exact_quantile

UTC = timezone.utc
NOW = datetime(2026, 11, 26, 13, 7, 45, tzinfo=UTC)


def expected(points, width):
    out = {}
    for t, v in sorted(points.items()):
        out.setdefault(t - t % width, []).append(v)
    return {b: (len(vs), math.fsum(vs), min(vs), max(vs)) for b, vs in out.items()}


def check(db, sid, stored):
    for column, mid in SNAPSHOT_SERIES:
        points = {t: row[column] for t, row in stored.items() if row[column] is not None}
        for tier in TIERS:
            got = {r[2]: (r[3], r[4], r[5], r[6]) for r in
                   tier_rows(db, tier, [(sid, mid, 0, 2 ** 62)])}
            want = expected(points, tier.width_us)
            assert set(got) == set(want), (column, tier.name)
            for b, (n, total, low, high) in want.items():
                assert got[b][0] == n and (got[b][2], got[b][3]) == (low, high)
                assert got[b][1] == pytest.approx(total, rel=1e-9, abs=1e-9)


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(batches=st.lists(st.lists(st.tuples(
    st.integers(0, 2 * 24 * 240), st.one_of(st.none(), st.floats(0, 100)),
    st.one_of(st.none(), st.floats(0, 100)), st.one_of(st.none(), st.integers(0, 500))),
    min_size=1, max_size=400), min_size=1, max_size=3))
def test_snapshot_tiers_equal_a_recompute_of_the_stored_snapshots(db, batches):
    repo = MetricRepository(db, clock=lambda: NOW)
    sid = repo.add_server("snap-%d" % len(repo.servers()))
    stored = {}
    for batch in batches:
        rows = [SnapshotSample(sid, NOW - timedelta(seconds=15 * step), cpu, mem, conns)
                for step, cpu, mem, conns in batch]
        rows += rows[: len(rows) // 4]                       # repeats: the first wins
        new = 0
        for r in rows:
            key = to_micros(r.collected_at)
            if key not in stored:
                stored[key] = {"cpu_percent": r.cpu_percent, "memory_percent": r.memory_percent,
                               "connection_count": r.connection_count}
                new += 1
        assert repo.record_snapshots(rows).inserted == new
        assert repo.record_snapshots(rows).inserted == 0     # a re-send changes nothing
    check(db, sid, stored)


def test_snapshot_buckets_from_tiers_equal_plain_python_and_raw(db):
    repo = MetricRepository(db, clock=lambda: NOW)
    sid = repo.add_server("fleet-1")
    rnd = random.Random(4)
    rows, stored = [], []
    for i in range(1, 3 * 24 * 240):
        t = NOW - timedelta(seconds=15 * i)
        cpu = None if i % 17 == 0 else round(rnd.uniform(0, 100), 2)
        rows.append(SnapshotSample(sid, t, cpu, 50.0, i % 300))
        stored.append((t, cpu))
    repo.record_snapshots(rows)
    start, end = NOW - timedelta(days=2, hours=1, minutes=13), NOW
    hour = timedelta(hours=1)
    stats = ("avg", "min", "max", "count", "last", "p95")
    tiers = repo.snapshot_buckets(sid, "cpu_percent", start, end, hour, stats=stats)
    raw = repo.snapshot_buckets(sid, "cpu_percent", start, end, hour, stats=stats,
                                resolution="raw")
    assert tiers.resolution != "raw" and raw.resolution == "raw"
    want = {}
    for t, v in stored:
        if start <= t < end and v is not None:
            want.setdefault(t.replace(minute=0, second=0, microsecond=0), []).append((t, v))
    assert [b.start for b in tiers] == [b.start for b in raw] == sorted(want)
    for a, b in zip(tiers, raw):
        vs = [v for _, v in want[a.start]]
        assert a.count == b.count == len(vs) and a.min == b.min == min(vs)
        assert a.max == max(vs) and a.last == max(want[a.start])[1] == b.last
        assert a.avg == pytest.approx(math.fsum(vs) / len(vs), rel=1e-9)
        exact = exact_quantile(vs, 0.95)
        assert abs(a.p95 - exact) <= 0.01 * exact + 1e-9 and b.p95 == pytest.approx(exact)
    with pytest.raises(QueryError, match="snapshot column"):
        repo.snapshot_buckets(sid, "status", start, end, hour)


def test_rebuild_and_backfill_reproduce_the_snapshot_tiers(db):
    repo = MetricRepository(db, clock=lambda: NOW)
    sid = repo.add_server("rb")
    repo.record_snapshots([SnapshotSample(sid, NOW - timedelta(seconds=15 * i), float(i % 97),
                                          None if i % 3 else 40.0, i % 50) for i in range(3000)])
    before = {t.name: sorted(r for m in (-1, -2, -3)
                             for r in tier_rows(db, t, [(sid, m, 0, 2 ** 62)])) for t in TIERS}
    assert all(before.values())
    for t in TIERS:
        db.execute_sql("DELETE FROM %s WHERE metric_type_id < 0" % t.table)
    backfill(db, "server_snapshots")                     # what migration 006 runs
    after = {t.name: sorted(r for m in (-1, -2, -3)
                            for r in tier_rows(db, t, [(sid, m, 0, 2 ** 62)])) for t in TIERS}
    assert after == before
    rebuild(db, NOW - timedelta(days=1), NOW, now=NOW)
    again = {t.name: sorted(r for m in (-1, -2, -3)
                            for r in tier_rows(db, t, [(sid, m, 0, 2 ** 62)])) for t in TIERS}
    assert again == before
