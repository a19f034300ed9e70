"""Reads served from the tiers against plain Python over the same rows:
buckets, summary, top and heatmap (every statistic; percentiles within the
sketch's stated error of the exact quantile), and the vectorised sketch
merge against the one-sketch-at-a-time reference."""

import math
import random
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from metricstore import MetricRepository
from metricstore.errors import QueryError, UnknownServerError
from metricstore.rollups.bins import Bins
from metricstore.rollups.sketch import ALPHA, Sketch
from reference import exact_quantile

UTC = timezone.utc
NOW = datetime(2026, 11, 26, 13, 7, 45, tzinfo=UTC)
QS = {"p50": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99}
METRIC = {False: "cpu_percent", True: "page_life_expectancy"}
STATS = ("avg", "min", "max", "sum", "count", "last", "p50", "p95", "p99")


def exact(values, stat):
    """The statistic of (t, v) pairs in plain Python (percentile_cont)."""
    vs = [v for _, v in values]
    if stat == "avg":
        return math.fsum(vs) / len(vs)
    if stat == "sum":
        return math.fsum(vs)
    if stat == "min":
        return min(vs)
    if stat == "max":
        return max(vs)
    if stat == "count":
        return len(vs)
    if stat == "last":
        return max(values)[1]
    return exact_quantile(vs, QS[stat])


def close(got, want, stat, lo_hi=None):
    if stat == "count" or stat == "last" or stat in ("min", "max"):
        return got == want
    if stat in ("avg", "sum"):
        return got == pytest.approx(want, rel=1e-9, abs=1e-9)
    # A sketch quantile is within ALPHA of the exact one when the two order
    # statistics around the rank share a sign (see Sketch.quantile).
    return abs(got - want) <= ALPHA * abs(want) + 1e-9 or (lo_hi and lo_hi[0] * lo_hi[1] <= 0)


def neighbours(values, stat):
    vs = sorted(v for _, v in values)
    rank = QS[stat] * (len(vs) - 1)
    return vs[int(rank)], vs[min(int(rank) + 1, len(vs) - 1)]


def load(repo, servers, hours, seed, spread):
    """Rows for ``servers`` over ``hours`` before NOW with random gaps:
    cpu_percent-like percentages, or with ``spread`` zeros and values over
    many orders of magnitude (page_life_expectancy)."""
    for table in ("metrics", "rollup_5m", "rollup_1h", "rollup_1d", "servers"):
        repo.db.execute_sql("DELETE FROM %s" % table)      # one example, one fleet
    rnd = random.Random(seed)
    sids = [repo.add_server("h%d-%d" % (seed, i)) for i in range(servers)]
    stored = {}
    rows = []
    for sid in sids:
        t = NOW - timedelta(hours=hours)
        pts = []
        while t < NOW:
            if rnd.random() < 0.97:
                if spread:
                    v = rnd.choice([0.0, rnd.uniform(0, 1), rnd.lognormvariate(2, 3)])
                else:
                    v = round(rnd.uniform(0, 100), 3)
                pts.append((t, v))
            t += timedelta(seconds=15 * rnd.choice([1, 1, 1, 2, 9]))
        stored[sid] = pts
        rows += [(sid, METRIC[spread], v, t) for t, v in pts]
    rnd.shuffle(rows)                                  # arrival order is not time order
    repo.record_many(rows)
    return stored


@pytest.fixture
def repo(db):
    return MetricRepository(db, clock=lambda: NOW)


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), spread=st.booleans(),
       every_m=st.sampled_from([5, 15, 60, 180, 1440]),
       lo_min=st.integers(0, 2 * 24 * 60), length_min=st.integers(1, 2 * 24 * 60))
def test_tier_reads_equal_plain_python_over_the_stored_rows(repo, seed, spread, every_m,
                                                            lo_min, length_min):
    stored = load(repo, 3, 50, seed, spread)
    metric = METRIC[spread]
    start = NOW - timedelta(hours=50) + timedelta(minutes=lo_min, seconds=seed % 60)
    end = min(NOW, start + timedelta(minutes=length_min))
    every = timedelta(minutes=every_m)
    every_us = every_m * 60_000_000
    sid = next(iter(stored))
    inside = {s: [(t, v) for t, v in pts if start <= t < end] for s, pts in stored.items()}

    got = repo.buckets(sid, metric, start, end, every, stats=STATS)
    want = {}
    for t, v in inside[sid]:
        us = int((t - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds()) * 1_000_000
        want.setdefault(us - us % every_us, []).append((t, v))
    assert [int(b.start.timestamp()) * 1_000_000 for b in got] == sorted(want)
    for b in got:
        pts = want[int(b.start.timestamp()) * 1_000_000]
        for stat in STATS:
            nb = neighbours(pts, stat) if stat in QS else None
            assert close(b.stats[stat], exact(pts, stat), stat, nb), (stat, b.resolution)

    summary = repo.summary(sid, metric, start, end, stats=STATS)
    for stat in STATS:
        if not inside[sid]:
            assert summary[stat] is None
            continue
        nb = neighbours(inside[sid], stat) if stat in QS else None
        assert close(summary[stat], exact(inside[sid], stat), stat, nb), stat

    for stat in ("avg", "max", "last", "p95"):
        ranked = repo.top(metric, start, end, n=3, stat=stat)
        have = {s: exact(p, stat) for s, p in inside.items() if p}
        assert {r.server_id for r in ranked} == set(have)
        for r in ranked:
            nb = neighbours(inside[r.server_id], stat) if stat in QS else None
            assert close(r.value, have[r.server_id], stat, nb), stat
        if stat != "p95":                               # exact: the order is the raw order
            assert [r.server_id for r in ranked] == [
                s for s, _ in sorted(have.items(), key=lambda kv: (-kv[1], kv[0]))]

    heat = repo.heatmap(metric, start, end, every, stat="max")
    for s in stored:
        per = {b.start: b.max for b in repo.buckets(s, metric, start, end, every,
                                                     stats=("max",))}
        assert dict((b, v) for b, v in zip(heat.starts, heat.rows[s]) if v is not None) == per


def test_heatmap_matches_per_server_buckets_and_the_raw_path(repo):
    stored = load(repo, 4, 30, 7, False)
    start, end = NOW - timedelta(hours=26, minutes=11), NOW
    hour = timedelta(hours=1)
    for stat in ("avg", "count", "p95", "last"):
        tiers = repo.heatmap("cpu_percent", start, end, hour, stat=stat)
        raw = repo.heatmap("cpu_percent", start, end, hour, stat=stat, resolution="raw")
        assert raw.resolution == "raw" and tiers.resolution != "raw"
        assert tiers.starts == raw.starts and len(tiers.starts) == 28
        assert tiers.starts[0] == start.replace(minute=0, second=0)
        assert set(tiers.rows) == set(stored)
        for sid in stored:
            for a, b in zip(tiers.rows[sid], raw.rows[sid]):
                if stat in ("count", "last"):
                    assert a == b
                elif stat == "avg":
                    assert (a is None and b is None) or a == pytest.approx(b, rel=1e-9)
                else:
                    assert (a is None and b is None) or abs(a - b) <= ALPHA * abs(b) + 1e-9
    some = list(stored)[:2]
    part = repo.heatmap("cpu_percent", start, end, hour, server_ids=some)
    names = {s.id: s.name for s in repo.servers()}
    assert set(part.rows) == set(some) and part.names == {s: names[s] for s in some}
    with pytest.raises(UnknownServerError, match="servers"):
        repo.heatmap("cpu_percent", start, end, hour, server_ids=[10_000])
    with pytest.raises(QueryError, match="cells"):
        repo.heatmap("cpu_percent", start, end, timedelta(seconds=1))


@settings(max_examples=200, deadline=None)
@given(parts=st.lists(st.tuples(st.integers(0, 5), st.sampled_from(["values", "blob", "span"]),
                                st.lists(st.one_of(st.floats(-1e6, 1e6, allow_nan=False),
                                                   st.just(0.0), st.floats(1e-12, 1e-8),
                                                   st.floats(0.5, 100)),
                                         min_size=1, max_size=40)),
                      min_size=1, max_size=12),
       q=st.sampled_from([0.0, 0.25, 0.5, 0.95, 0.99, 1.0]))
@example(parts=[(0, "blob", [1.0, 2.0]), (1, "values", [2.0, 3.0])], q=0.5)   # one sketch + raw
@example(parts=[(0, "blob", [1.0]), (0, "span", [0.0, 4.0]), (2, "blob", [5.0])], q=0.5)
def test_bins_merge_equals_merging_sketches_one_by_one(parts, q):
    """Sketches added as bytes, as spans inside a buffer (a binary read's
    rows: other bytes between them) and raw values merge like Sketch.merge."""
    groups = 6
    bins = Bins(groups)
    ref = [Sketch() for _ in range(groups)]
    buffer, spans = bytearray(b"\xff" * 3), ([], [], [])
    for g, kind, values in parts:
        s = Sketch.of(values)
        if kind == "blob":
            bins.add_blobs([g], [s.encode()])
        elif kind == "span":
            blob = s.encode()
            spans[0].append(g)
            spans[1].append(len(buffer))
            spans[2].append(len(blob))
            buffer += blob + b"\xfe" * (len(blob) % 3)
        else:
            bins.add_values([g] * len(values), values)
        ref[g].merge(s)
    bins.add_spans(spans[0], np.frombuffer(bytes(buffer), dtype=np.uint8), spans[1], spans[2])
    got = bins.quantiles(q)
    for g in range(groups):
        want = ref[g].quantile(q)
        if want is None:
            assert np.isnan(got[g])
        else:
            assert got[g] == pytest.approx(want, rel=1e-12, abs=1e-300)


def test_bins_wide_counts_and_many_groups_chunked():
    big = Sketch.of([5.0] * 70_000 + [9.0])              # counts past uint16: wide encoding
    wide = Bins(3)
    wide.add_blobs([0, 2, 2], [big.encode(), big.encode(), None])
    assert list(wide.quantiles(0.5))[0] == pytest.approx(big.quantile(0.5))
    assert np.isnan(wide.quantiles(0.5)[1])
    # values spread over the whole double range force the chunked bincount
    rnd = random.Random(5)
    n = 400
    spread = Bins(n)
    ref = [Sketch() for _ in range(n)]
    for g in range(n):
        vs = [rnd.choice([1e-9, 1e300, -1e300, rnd.uniform(-5, 5)]) for _ in range(4)]
        spread.add_values([g] * 4, vs)
        ref[g].merge(Sketch.of(vs))
    got = spread.quantiles(0.9)
    assert all(got[g] == pytest.approx(ref[g].quantile(0.9), rel=1e-12) for g in range(n))
    # and stored sketches (positive, zeros too) that wide, two a group
    blobs = Bins(n)
    ref = [Sketch() for _ in range(n)]
    for g in range(n):
        for _ in range(2):
            s = Sketch.of([rnd.choice([0.0, 1e-9, 1e300, rnd.uniform(0, 5)]) for _ in range(3)])
            blobs.add_blobs([g], [s.encode()])
            ref[g].merge(s)
    got = blobs.quantiles(0.5)
    assert all(got[g] == pytest.approx(ref[g].quantile(0.5), rel=1e-12) for g in range(n))


@settings(max_examples=100, deadline=None)
@given(sketches=st.lists(st.lists(st.one_of(st.just(0.0), st.floats(1e-6, 1e6)),
                                  min_size=0, max_size=30), min_size=1, max_size=20),
       q=st.sampled_from([0.0, 0.5, 0.95, 1.0]), seed=st.integers(0, 3))
def test_bins_one_sketch_a_group_path_equals_sketch_quantile(sketches, q, seed):
    """A chart's buckets: one stored sketch a bucket, read without a dense
    grid, whether the sketches arrive in bucket order (seed 0) or not."""
    bins = Bins(len(sketches) + 1)
    ref = [Sketch.of(vs) for vs in sketches]
    kept = [g for g, s in enumerate(ref) if s.count]
    if seed:
        random.Random(seed).shuffle(kept)
    bins.add_blobs(kept, [ref[g].encode() for g in kept])
    for _ in range(2):                                   # asking again answers the same
        got = bins.quantiles(q)
        for g, s in enumerate(ref + [Sketch()]):
            want = s.quantile(q)
            assert (np.isnan(got[g]) if want is None else
                    got[g] == pytest.approx(want, rel=1e-12, abs=1e-300)), g


def blob_list(column):
    """A fetch_blobs blob column as a list of bytes (None for NULL)."""
    from metricstore.dialects.base import Spans
    if isinstance(column, Spans):
        return [None if z < 0 else column.buffer[a:a + z].tobytes()
                for a, z in zip(column.starts.tolist(), column.sizes.tolist())]
    return [None if b is None else bytes(b) for b in column]


@pytest.mark.parametrize("nulls", [False, True])
def test_fetch_blobs_and_numbers_return_the_rows_as_arrays(db, nulls):
    """The dialect's array readers (binary COPY on PostgreSQL) against the
    rows as a cursor returns them; a NULL number falls back to the text path.
    The time column (c0) is read through read_time_sql and comes back as
    epoch microseconds; with ``timed=False`` it is a plain integer."""
    from metricstore.dialects import dialect_for
    from metricstore.rollups.columns import _tag
    from metricstore.timeutil import from_micros
    d = dialect_for(db)
    rows = [(7, 1_764_000_000_123_456 + 3_600_000_000 * k, float(k), -2.5 * k, 1e-300 * k,
             bytes(range(k % 9)) if k % 4 else None) for k in range(50)]
    if nulls:
        rows[3] = rows[3][:2] + (None,) + rows[3][3:]
    names = ["s", "c0", "c1", "c2", "c3", "c4"]
    parts, params, plain = [], {}, []
    for k, row in enumerate(rows):
        tag = _tag(k)                      # parameter names are [a-z_]
        cols = [":%s_%s" % (_tag(i), tag) for i in range(len(names))]
        plain.append("SELECT " + ", ".join("%s AS %s" % c for c in zip(cols, names)))
        cols[1] = d.read_time_sql(cols[1])
        parts.append("SELECT " + ", ".join("%s AS %s" % c for c in zip(cols, names)))
        params.update({"%s_%s" % (_tag(i), tag): v for i, v in enumerate(row)})
    times = dict(params, **{"b_%s" % _tag(k): d.time_param(from_micros(r[1]))
                            for k, r in enumerate(rows)})
    got = d.fetch_blobs(db, d.sql(" UNION ALL ".join(parts)), times, 6)
    assert [c.tolist() for c in got[:2]] == [[r[i] for r in rows] for i in (0, 1)]
    for i in (2, 3, 4):
        want = [r[i] for r in rows]
        assert [None if v != v else v for v in got[i].tolist()] == want
    assert blob_list(got[5]) == [r[5] for r in rows]
    for timed, sql, values in ((True, parts, times), (False, plain, params)):
        numbers = d.fetch_numbers(db, d.sql(" UNION ALL ".join(
            p.rsplit(",", 1)[0] for p in sql)), values, 5, timed=timed)
        assert [c.tolist() for c in numbers[:2]] == [[r[i] for r in rows] for i in (0, 1)]
        assert [None if v != v else v for v in numbers[2].tolist()] == [r[2] for r in rows]


@pytest.mark.parametrize("raw,nulls", [(False, False), (True, False), (False, True)])
def test_fetch_packed_binary_equals_the_text_rows(db, raw, nulls):
    """PostgreSQL's binary COPY reader of per-server packs against the same
    rows through a text cursor (the base dialect's reader)."""
    from metricstore.dialects import dialect_for
    from metricstore.dialects.base import Dialect
    d = dialect_for(db)
    if d.packed_blobs is None:
        pytest.skip("packed per-server reads are PostgreSQL's (%s has none)" % d.name)
    rnd = random.Random(4)
    parts = []
    for k in range(30):
        sizes = [rnd.randint(1, 9) for _ in range(rnd.randint(1, 5) if k % 10 != 5 else 0)]
        blob = bytes(rnd.randrange(256) for _ in range(sum(sizes)))
        aggs = ["%r::float8" % rnd.uniform(-1e6, 1e6) for _ in range(2)]
        if nulls and k in (0, 7):
            aggs[1] = "NULL::float8"
        pack = ("ARRAY[%s]::float8[]" % ", ".join(repr(rnd.random()) for _ in sizes) if raw
                else "'\\x%s'::bytea, ARRAY[%s]::int[]" % (blob.hex(), ", ".join(map(str, sizes))))
        parts.append("SELECT %d AS s, 0 AS c0, %s, %s" % (k + 1, ", ".join(aggs), pack))
    sql = d.sql(" UNION ALL ".join(parts))
    got, want = d.fetch_packed(db, sql, {}, 3, raw), Dialect.fetch_packed(d, db, sql, {}, 3, raw)
    assert len(got) == len(want) == (3 if raw else 4)
    for g, w in zip(got[0], want[0]):
        assert np.array_equal(g, w, equal_nan=True) and g.dtype == w.dtype
    if not raw:                                        # Spans: the sketches as bytes
        for res in (got, want):
            assert len(res[1]) == len(res[2]) and res[1].sizes.tolist() == res[2].tolist()
        got, want = ((r[0], b"".join(blob_list(r[1]))) + tuple(r[2:]) for r in (got, want))
    for g, w in zip(got[1:], want[1:]):
        assert (g == w) if isinstance(w, bytes) else np.array_equal(g, w)


@pytest.mark.parametrize("spread", [False, True])
def test_own_quantiles_answer_what_the_rows_sketches_answer(repo, spread):
    """A bucket served by one tier row reads that row's own quantiles (no
    sketch): the same numbers as merging its sketch, to the last bit. Rows
    written before migration 007 (own quantiles NULL) answer from their
    sketches; fill_own_quantiles gives them the same values back."""
    from metricstore.rollups.rebuild import fill_own_quantiles
    from metricstore.rollups.tiers import TIER_1H
    stored = load(repo, 3, 30, 7, spread)
    metric, hour = METRIC[spread], timedelta(hours=1)
    start = NOW - timedelta(hours=29, minutes=23)        # unaligned: 5-minute and raw edges
    stats = ("avg", "p50", "p90", "p95", "p99")
    sid = next(iter(stored))
    own = repo.buckets(sid, metric, start, NOW, hour, stats=stats)
    grid = repo.heatmap(metric, start, NOW, hour, stat="p95")
    assert own.resolution == "1h+5m+raw" and len(own) >= 29
    columns = "q50, q90, q95, q99"
    before = repo.db.execute_sql("SELECT server_id, bucket, %s FROM rollup_1h ORDER BY 1, 2"
                                 % columns).fetchall()
    assert before and all(v is not None for r in before for v in r[2:])
    repo.db.execute_sql("UPDATE rollup_1h SET q95 = -1")     # the read uses the column
    marked = repo.buckets(sid, metric, start, NOW, hour, stats=stats)
    hours = [b.start for b in marked if b.p95 == -1]
    assert len(hours) == len(own) - 2 and marked[0].p95 == own[0].p95   # the edges: sketches
    repo.db.execute_sql("UPDATE rollup_1h SET q50 = NULL, q90 = NULL, q95 = NULL, q99 = NULL")
    sketches = repo.buckets(sid, metric, start, NOW, hour, stats=stats)
    assert [(b.start, b.stats) for b in sketches] == [(b.start, b.stats) for b in own]
    assert repo.heatmap(metric, start, NOW, hour, stat="p95").rows == grid.rows
    inside = [(t, v) for t, v in stored[sid] if start <= t < NOW]
    for b in own:                                        # and within the sketch's bound
        values = [(t, v) for t, v in inside if b.start <= t < b.end]
        assert all(close(b.stats[s], exact(values, s), s, neighbours(values, s))
                   for s in stats if s != "avg")
    assert fill_own_quantiles(repo.db, TIER_1H, page=7) == len(before)
    after = repo.db.execute_sql("SELECT server_id, bucket, %s FROM rollup_1h ORDER BY 1, 2"
                                % columns).fetchall()
    assert after == before
    assert fill_own_quantiles(repo.db, TIER_1H) == 0      # nothing left to fill


def test_migration_007_gives_stored_rows_their_own_quantiles(repo):
    """A tenant provisioned before 007 (tier rows without own quantiles):
    provisioning adds the columns and fills every row from its sketch, the
    values a fresh write stores; reads answer the same before and after."""
    import importlib

    import metricstore
    from metricstore.schema import HISTORY_TABLE
    m007 = importlib.import_module("metricstore.migrations.007_tier_own_quantiles")
    stored = load(repo, 2, 30, 11, False)
    sid, hour = next(iter(stored)), timedelta(hours=1)
    start = NOW - timedelta(hours=28)
    query = "SELECT server_id, metric_type_id, bucket, q50, q90, q95, q99 FROM %s ORDER BY 1, 2, 3"
    fresh = {t: repo.db.execute_sql(query % t).fetchall()
             for t in ("rollup_5m", "rollup_1h", "rollup_1d")}
    want = repo.buckets(sid, "cpu_percent", start, NOW, hour, stats=("p50", "p99"))
    m007.rollback(None, repo.db)                      # the tenant as it was at 006
    repo.db.execute_sql("DELETE FROM %s WHERE name = '007_tier_own_quantiles'" % HISTORY_TABLE)
    assert "q95" not in {c.name for c in repo.db.get_columns("rollup_1h")}
    assert "007_tier_own_quantiles" in metricstore.provision(repo.db).migrations_applied
    assert {t: repo.db.execute_sql(query % t).fetchall() for t in fresh} == fresh
    assert all(r[3] is not None for rows in fresh.values() for r in rows)
    got = repo.buckets(sid, "cpu_percent", start, NOW, hour, stats=("p50", "p99"))
    assert [(b.start, b.stats) for b in got] == [(b.start, b.stats) for b in want]
