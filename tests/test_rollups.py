"""Rollup tiers: every tier equals a recompute from the raw rows it covered,
under any insert order, duplicates, late rows and retention runs; reads
served from tiers equal raw reads (percentiles within the sketch's bound)."""

import math
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import metricstore
from metricstore import MetricRepository
from metricstore.dialects import dialect_for
from metricstore.errors import QueryError
from metricstore.rollups.planner import Source, plan
from metricstore.rollups.rebuild import rebuild, tier_status
from metricstore.rollups.sketch import ALPHA, Sketch
from metricstore.rollups.store import tier_rows
from metricstore.rollups.tiers import TIERS
from metricstore.timeutil import to_micros
from reference import exact_quantile

UTC = timezone.utc
GAP_US = 300_000_000
BASE = datetime(2026, 11, 20, tzinfo=UTC)        # a Friday; the clock is pinned below
PCTS = (0.5, 0.9, 0.95, 0.99)


def expected_tier(points, width_us, counter):
    """Plain-Python recompute of one tier from (t us, value) points (first stored wins)."""
    out = {}
    points = sorted(points.items())
    for t, v in points:
        out.setdefault(t - t % width_us, []).append((t, v))
    result = {}
    for b, pts in out.items():
        values = [v for _, v in pts]
        inc = el = 0.0
        pairs = 0
        for (t0, v0), (t1, v1) in zip(pts, pts[1:]):
            if t1 - t0 <= GAP_US:
                inc += v1 - v0 if v1 >= v0 else v1
                el += (t1 - t0) / 1e6
                pairs += 1
        result[b] = dict(n=len(values), total=math.fsum(values), low=min(values),
                         high=max(values), first=pts[0], last=pts[-1], values=values,
                         increase=inc if counter else None, pairs=pairs if counter else None)
    return result


def own_quantile_columns(db, tier, sid, mid):
    """``{bucket us: (q50, q90, q95, q99)}`` as stored in ``tier``'s rows."""
    d = dialect_for(db)
    rows = db.execute_sql(d.sql("SELECT %s, q50, q90, q95, q99 FROM %s WHERE server_id = :s "
                                "AND metric_type_id = :m" % (d.micros_sql("bucket"), tier.table)),
                          {"s": sid, "m": mid}).fetchall()
    return {r[0]: r[1:] for r in rows}


def check_tiers(db, sid, mid, stored, counter):
    for tier in TIERS:
        rows = tier_rows(db, tier, [(sid, mid, 0, 2 ** 62)])
        got = {r[2]: r for r in rows}
        own = own_quantile_columns(db, tier, sid, mid)
        want = expected_tier(stored, tier.width_us, counter)
        assert set(got) == set(want), tier.name
        for b, w in want.items():
            (n, total, low, high, first_at, first_v, last_at, last_v, inc, el, pairs,
             sketch) = got[b][3:]
            assert (n, low, high) == (w["n"], w["low"], w["high"]), tier.name
            assert (first_at, first_v) == w["first"] and (last_at, last_v) == w["last"]
            assert total == pytest.approx(w["total"], rel=1e-9, abs=1e-9)
            assert inc == w["increase"] and pairs == w["pairs"]
            s = Sketch.decode(sketch)
            assert s.count == n
            for q, stored_q in zip(PCTS, own[b]):
                exact = exact_quantile(w["values"], q)
                assert abs(s.quantile(q, low, high) - exact) <= ALPHA * abs(exact) + 1e-9
                # the row's own quantile: its sketch's, clamped (what a read of it answers)
                assert stored_q == pytest.approx(s.quantile(q, low, high), rel=1e-12, abs=1e-300)


rows_strategy = st.lists(
    st.tuples(st.integers(0, 3 * 3600 // 15),           # 15 s steps over 3 hours
              st.integers(0, 1000), st.booleans()),       # value, counter reset
    min_size=1, max_size=120)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(batches=st.lists(rows_strategy, min_size=1, max_size=4),
       expire_after=st.integers(0, 4), data=st.data())
def test_every_tier_equals_a_recompute_from_the_raw_rows_it_covered(db, batches,
                                                                     expire_after, data):
    clock = [BASE]
    repo = MetricRepository(db, clock=lambda: clock[0])
    sid = repo.add_server("s-%d" % len(repo.servers()))
    rules = repo.metric_rules()
    start = BASE - timedelta(days=29, hours=23)        # near the raw horizon
    stored = {"cpu_percent": {}, "disk_io_reads": {}}
    for i, batch in enumerate(batches):
        if i == expire_after:
            clock[0] = BASE + timedelta(hours=2)        # raw rows of the first 2 h expire
            metricstore.maintain(db, now=clock[0])
        rows, counter = [], 0
        for step, value, reset in data.draw(st.permutations(batch)):
            t = start + timedelta(seconds=15 * step)
            if t < clock[0] - timedelta(days=30) + timedelta(minutes=5):
                continue                                  # refused as past retention
            counter = value if reset else counter + value
            rows.append((sid, "cpu_percent", float(value % 101), t))
            rows.append((sid, "disk_io_reads", float(counter), t))
        rows += rows[: len(rows) // 3]                   # duplicates inside the batch
        result = repo.record_many(rows)
        new = 0
        for _, name, value, t in rows:
            key = to_micros(t)
            if key not in stored[name]:
                stored[name][key] = value
                new += 1
        assert result.inserted == new
        again = repo.record_many(rows)                   # a re-send changes nothing
        assert again.inserted == 0
    for name, points in stored.items():
        check_tiers(db, sid, rules[name].id, points, name == "disk_io_reads")


def test_reads_from_tiers_equal_raw_reads(db):
    now = datetime(2026, 11, 26, 12, 3, 20, tzinfo=UTC)
    repo = MetricRepository(db, clock=lambda: now)
    sids = [repo.add_server("r%d" % i) for i in range(3)]
    rows, c = [], 0
    for sid in sids:
        for i in range(1, 3 * 24 * 240):
            t = now - timedelta(seconds=15 * i)
            c = 7 if i % 997 == 0 else c + (i * 7919 + sid) % 50
            rows.append((sid, "cpu_percent", float((i * 31 + sid * 7) % 97), t))
            rows.append((sid, "disk_io_reads", float(c), t))
    repo.record_many(rows)
    start, end = now - timedelta(days=2, hours=5, minutes=17, seconds=3), now
    hour = timedelta(hours=1)
    a = repo.buckets(sids[0], "cpu_percent", start, end, hour,
                     stats=("avg", "min", "max", "sum", "count", "last", "p95"))
    b = repo.buckets(sids[0], "cpu_percent", start, end, hour,
                     stats=("avg", "min", "max", "sum", "count", "last", "p95"), resolution="raw")
    assert a.resolution == "1h+5m+raw" and b.resolution == "raw" and a.error == ALPHA
    assert [x.start for x in a] == [x.start for x in b]
    for x, y in zip(a, b):
        assert (x.min, x.max, x.count, x.last) == (y.min, y.max, y.count, y.last)
        assert x.avg == pytest.approx(y.avg, rel=1e-12) and x.sum == pytest.approx(y.sum)
        assert abs(x.p95 - y.p95) <= ALPHA * abs(y.p95) + 1e-9
        assert x.resolution == a.resolution
    s1 = repo.summary(sids[1], "cpu_percent", start, end, stats=("avg", "max", "count", "p50"))
    s2 = repo.summary(sids[1], "cpu_percent", start, end, stats=("avg", "max", "count", "p50"),
                      resolution="raw")
    assert s1.resolution.startswith("1d") and s2.resolution == "raw"
    assert (s1["max"], s1["count"]) == (s2["max"], s2["count"])
    assert s1["avg"] == pytest.approx(s2["avg"], rel=1e-12)
    assert abs(s1["p50"] - s2["p50"]) <= ALPHA * abs(s2["p50"])
    r1 = repo.rate(sids[2], "disk_io_reads", start, end, hour)
    r2 = repo.rate(sids[2], "disk_io_reads", start, end, hour, resolution="raw")
    assert r1.resolution != "raw" and [x[:1] + x[3:] for x in r1] == [x[:1] + x[3:] for x in r2]
    assert all(x.rate == pytest.approx(y.rate, rel=1e-12) for x, y in zip(r1, r2))
    other_gap = repo.rate(sids[2], "disk_io_reads", start, end, hour, max_gap=60)
    assert other_gap.resolution == "raw"                 # tiers built with a 5-minute gap
    for stat in ("avg", "max", "last"):
        t1 = repo.top("cpu_percent", start, end, stat=stat)
        t2 = repo.top("cpu_percent", start, end, stat=stat, resolution="raw")
        assert [r.server_id for r in t1] == [r.server_id for r in t2]
        assert [r.value for r in t1] == pytest.approx([r.value for r in t2], rel=1e-12)
    t1 = repo.top("cpu_percent", start, end, stat="p95")
    t2 = dict((r.server_id, r.value) for r in repo.top("cpu_percent", start, end, stat="p95",
                                                       resolution="raw"))
    assert t1.error == ALPHA and t1.resolution.startswith("1d")
    assert all(abs(r.value - t2[r.server_id]) <= ALPHA * t2[r.server_id] for r in t1)
    with pytest.raises(QueryError, match="resolution"):
        repo.summary(sids[0], "cpu_percent", start, end, resolution="5m")


def test_expiring_raw_keeps_the_tiers_and_reads_stitch_past_the_raw_horizon(db):
    now = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    clock = [now]
    repo = MetricRepository(db, clock=lambda: clock[0])
    sid = repo.add_server("e")
    rows = [(sid, "cpu_percent", float(i % 90), now - timedelta(days=28, seconds=15 * i))
            for i in range(0, 240 * 24)]
    repo.record_many(rows)
    day = datetime(2026, 10, 28, tzinfo=UTC)
    before = repo.summary(sid, "cpu_percent", day, day + timedelta(days=2), stats=("avg", "count"))
    clock[0] = now + timedelta(days=5)
    metricstore.maintain(db, now=clock[0])
    assert db.execute_sql("SELECT count(*) FROM metrics").fetchone()[0] == 0
    after = repo.summary(sid, "cpu_percent", day, day + timedelta(days=2), stats=("avg", "count"))
    assert after == before and after.resolution == "1d"
    with pytest.raises(QueryError, match="past the retention"):
        rebuild(db, day, day + timedelta(days=1), now=clock[0])
    status = {t.name: t for t in tier_status(db, now=clock[0])}
    assert status["1d"].rows >= 2 and status["5m"].first is not None


def test_rebuild_recomputes_the_same_tiers(db):
    now = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    repo = MetricRepository(db, clock=lambda: now)
    sid = repo.add_server("b")
    repo.record_many([(sid, "disk_io_reads", float(i * 3 % 500), now - timedelta(seconds=15 * i))
                      for i in range(1, 2000)])
    mid = repo.metric_rules()["disk_io_reads"].id
    before = {t.name: tier_rows(db, t, [(sid, mid, 0, 2 ** 62)]) for t in TIERS}
    db.execute_sql("DELETE FROM rollup_1h")
    rebuild(db, now - timedelta(days=1), now, now=now)
    rebuild(db, now - timedelta(days=1), now, now=now)      # idempotent
    assert {t.name: tier_rows(db, t, [(sid, mid, 0, 2 ** 62)]) for t in TIERS} == before


def test_sketch_handles_zero_negative_and_merges():
    values = [-50.0, -0.5, 0.0, 0.0, 1e-12, 3.0, 7.5, 1000.0, 1e6]
    a, b = Sketch.of(values[:4]), Sketch.of(values[4:])
    merged = Sketch.decode(a.merge(b).encode())
    assert merged.count == len(values)
    for q in (0.0, 0.3, 0.5, 0.9, 1.0):
        exact = exact_quantile(values, q)
        lo = sorted(values)[int(q * (len(values) - 1))]
        hi = sorted(values)[min(int(q * (len(values) - 1)) + 1, len(values) - 1)]
        if lo * hi > 0 or exact == lo:                  # the bound holds within one sign
            assert abs(merged.quantile(q) - exact) <= ALPHA * abs(exact) + 1e-9


def test_planner_uses_the_coarsest_aligned_tier_and_stitches_edges():
    h, d = 3_600_000_000, 86_400_000_000
    sources = [Source("1d", d, 0), Source("1h", h, 0), Source("5m", GAP_US, 0),
               Source("raw", 0, 0)]
    lo, hi = 2 * d - h - 7, 5 * d + h + GAP_US + 5
    assert [(s.source.name, s.lo, s.hi) for s in plan(lo, hi, sources)] == [
        ("raw", lo, 2 * d - h), ("1h", 2 * d - h, 2 * d), ("1d", 2 * d, 5 * d),
        ("1h", 5 * d, 5 * d + h), ("5m", 5 * d + h, 5 * d + h + GAP_US),
        ("raw", 5 * d + h + GAP_US, hi)]
    # past a tier's horizon the next coarser... finer one fills in; past raw's, nothing
    sources[0] = Source("1d", d, 4 * d)
    sources[3] = Source("raw", 0, 2 * d)
    assert [(s.source.name, s.lo, s.hi) for s in plan(lo, 5 * d, sources)] == [
        ("1h", 2 * d - h, 4 * d), ("1d", 4 * d, 5 * d)]


@settings(max_examples=150, deadline=None)
@given(series=st.lists(st.tuples(
    st.integers(1, 3), st.sampled_from([1, 3]),
    st.lists(st.tuples(st.sampled_from([0, 15, 15, 15, 30, 400]), st.integers(0, 9),
                       st.sampled_from(["gauge", "zero", "tiny", "reset"])),
             min_size=1, max_size=60)), min_size=1, max_size=5))
def test_vectorised_chunk_states_equal_the_per_bucket_path(series):
    """The write path's numpy chunk builder makes the very states (same
    sketch bytes, the same counter sums) the per-bucket Python path does."""
    from metricstore.rollups import arrays
    rows = []
    for sid, mid, steps in series:
        t, c = 1_764_000_000_000_000 + sid * 7_000_000, 0.0
        for step, value, kind in steps:
            t += step * 1_000_000
            c = float(value) if kind == "reset" else c + value
            v = c if mid == 3 else {"zero": 0.0, "tiny": 1e-12}.get(kind, value * 11.3)
            rows.append((sid, mid, v, t))
    rows.sort(key=lambda r: (r[0], r[1], r[3]))
    fast = arrays.chunk_states_np(rows, {3})
    assert fast is not None
    slow = arrays.chunk_states(rows, {3})
    assert set(fast) == set(slow)
    for key, a in fast.items():
        b = slow[key]
        assert a.row()[:1] + a.row()[2:] == b.row()[:1] + b.row()[2:], key
        assert a.sum == pytest.approx(b.sum, rel=1e-12)


@pytest.mark.parametrize("chunk_rows", [300, 100_000])
def test_large_batches_through_the_array_path_equal_a_recompute(db, monkeypatch, chunk_rows):
    """Batches big enough for the numpy write path (5-minute, hourly and
    daily batch states straight from the rows), over several chunks whose
    rows share hours and days, interleave (a bucket staged twice) and
    repeat: every tier still equals a recompute from the stored rows."""
    import random
    import metricstore.ingest
    monkeypatch.setattr(metricstore.ingest, "CHUNK_ROWS", chunk_rows)
    clock = [BASE]
    repo = MetricRepository(db, clock=lambda: clock[0])
    sid = repo.add_server("big")
    rules = repo.metric_rules()
    rnd = random.Random(chunk_rows)
    stored = {"cpu_percent": {}, "disk_io_reads": {}}
    start = BASE - timedelta(days=2, hours=3)
    counter = 0
    for batch in range(3):
        rows = []
        steps = list(range(batch, 2 * 24 * 240, 3))          # 3 interleaved passes
        rnd.shuffle(steps)
        for step in sorted(steps[: len(steps) // 2]):
            t = start + timedelta(seconds=15 * step)
            counter = rnd.randint(0, 5) if rnd.random() < 0.01 else counter + rnd.randint(0, 40)
            rows.append((sid, "cpu_percent", rnd.choice([0.0, rnd.uniform(0, 100)]), t))
            rows.append((sid, "disk_io_reads", float(counter), t))
        rows += rows[:50]                                     # repeats inside the batch
        result = repo.record_many(rows)
        new = 0
        for _, name, value, t in rows:
            if to_micros(t) not in stored[name]:
                stored[name][to_micros(t)] = value
                new += 1
        assert result.inserted == new
        assert repo.record_many(rows).inserted == 0
    for name, points in stored.items():
        check_tiers(db, sid, rules[name].id, points, name == "disk_io_reads")


@settings(max_examples=150, deadline=None)
@given(series=st.lists(st.tuples(
    st.integers(1, 3), st.sampled_from([1, 3]),
    st.lists(st.tuples(st.sampled_from([15, 15, 15, 30, 400, 3600]), st.integers(0, 9),
                       st.sampled_from(["gauge", "zero", "tiny", "reset", "big"])),
             min_size=1, max_size=60)), min_size=1, max_size=4),
    cuts=st.lists(st.integers(0, 240), max_size=4), shuffle=st.randoms())
def test_merged_bucket_arrays_equal_the_state_merge(series, cuts, shuffle):
    """The flush's numpy merge of the chunks' bucket arrays (across chunks
    at one width, and 5 minutes -> hours -> days) makes the states merging
    State objects in time order makes: same counts, extremes, first and
    last, counter pairs, sketch bytes; sums within rounding. A bucket whose
    chunks' samples interleave is reported for a recompute instead."""
    from metricstore.rollups import arrays
    from metricstore.rollups.rebuild_helpers import coarsen
    rows, seen = [], set()
    for sid, mid, steps in series:
        if (sid, mid) in seen:
            continue
        seen.add((sid, mid))
        t, c = 1_764_000_000_000_000 + sid * 7_000_000, 0.0
        for step, value, kind in steps:
            t += step * 1_000_000
            c = float(value) if kind == "reset" else c + value
            v = c if mid == 3 else {"zero": 0.0, "tiny": 1e-12,
                                    "big": 9e6 + value}.get(kind, value * 11.3)
            rows.append((sid, mid, v, t))
    shuffle.shuffle(rows)
    bounds = sorted({0, len(rows), *[min(c, len(rows)) for c in cuts]})
    chunks = [rows[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]
    widths = (GAP_US, 3_600_000_000, 86_400_000_000)
    levels = []                                   # each chunk's buckets, as the writer keeps them
    for c in chunks:
        fives = arrays.bucket_arrays(*arrays.chunk_arrays(c))
        hours = arrays.merge_buckets([fives], widths[1])[0]
        levels.append((fives, hours, arrays.merge_buckets([hours], widths[2])[0]))
    states = [arrays.chunk_states(sorted(c, key=lambda r: (r[0], r[1], r[3])), {3})
              for c in chunks]
    for level, width in enumerate(widths):
        merged, redo = arrays.merge_buckets([c[level] for c in levels], width)
        want, clash = {}, set()
        groups = {}
        for part in states:
            for key, state in coarsen(part, width).items():
                groups.setdefault(key, []).append(state)
        for key, members in groups.items():
            members.sort(key=lambda s: s.first_at)
            if any(b.first_at <= a.last_at for a, b in zip(members, members[1:])):
                clash.add(key)
            out = members[0].copy_into(key[2])
            for later in members[1:]:
                out.absorb(later)
            want[key] = out
        assert redo == clash
        got = merged.states({3})
        assert set(got) == set(want)
        for key in set(want) - clash:
            a, b = got[key].row(), want[key].row()
            assert a[:1] + a[2:8] + a[10:] == b[:1] + b[2:8] + b[10:], (width, key)
            assert a[1] == pytest.approx(b[1], rel=1e-12)
            for x, y in ((a[8], b[8]), (a[9], b[9])):
                assert (x is None and y is None) or x == pytest.approx(y, rel=1e-12, abs=1e-9)
        # the rows written straight from the arrays are the states' rows
        if merged.narrow():
            rows_out = merged.rows({3})
            assert [r[:3] for r in rows_out] == sorted(got)
            for r in rows_out:
                assert r[3:] == got[r[:3]].row(), (width, r[:3])


def test_chunks_interleaving_only_at_the_hour_are_recomputed(db, monkeypatch):
    """Two chunks of one batch whose 5-minute buckets differ but whose
    hours interleave (the first chunk holds 10:00 and 10:20, the second
    10:10): the hour and the day are recomputed, not merged out of order."""
    import metricstore.ingest
    from metricstore.rollups import update
    monkeypatch.setattr(metricstore.ingest, "CHUNK_ROWS", 80)
    monkeypatch.setattr(update, "VECTOR_MIN_ROWS", 1)     # the array path for small chunks
    repo = MetricRepository(db, clock=lambda: BASE)
    sid = repo.add_server("interleaved")
    rules = repo.metric_rules()
    hour = BASE - timedelta(hours=5)
    rows, stored, counter = [], {"cpu_percent": {}, "disk_io_reads": {}}, 0
    for minute in (0, 20, 10):
        for i in range(20):
            t = hour + timedelta(minutes=minute, seconds=15 * i)
            counter += 3 + i % 4
            rows.append((sid, "cpu_percent", float(minute + i), t))
            rows.append((sid, "disk_io_reads", float(counter), t))
            stored["cpu_percent"][to_micros(t)] = float(minute + i)
            stored["disk_io_reads"][to_micros(t)] = float(counter)
    assert repo.record_many(rows).inserted == len(rows)
    for name, points in stored.items():
        check_tiers(db, sid, rules[name].id, points, name == "disk_io_reads")


def test_bucket_arrays_past_uint16_counts_take_the_wide_encoding():
    """A bin holding more than 65,535 samples (here 70,000 equal values a
    few ms apart in one 5-minute bucket, two series): states and the rows
    written from the arrays use Sketch.encode's wide counts, the same as
    the per-bucket Python path, with or without a stored row touched."""
    from metricstore.rollups import arrays
    t0 = 1_764_000_000_000_000
    rows = [(sid, 1, 5.0 if i % 100 else 9.0, t0 + 4_000 * i)
            for sid in (1, 2) for i in range(70_000)]
    five = arrays.bucket_arrays(*arrays.chunk_arrays(rows))
    assert not five.narrow()
    want = arrays.chunk_states(rows, set())
    got = five.states(set())
    assert set(got) == set(want)
    for key in want:
        assert got[key].row()[2:] == want[key].row()[2:]
        assert got[key].sum == pytest.approx(want[key].sum, rel=1e-12)
    first = (1, 1, t0 - t0 % GAP_US)
    states, rows_out = arrays.ArrayDelta(five, set()).split([first])
    assert set(states) == {first}
    assert states[first].row()[2:] == want[first].row()[2:]
    assert [r[:3] for r in rows_out] == [k for k in sorted(want) if k != first]
    for r in rows_out:
        w = want[r[:3]].row()
        assert r[3] == w[0] and r[5:] == w[2:]
        assert r[4] == pytest.approx(w[1], rel=1e-12)
