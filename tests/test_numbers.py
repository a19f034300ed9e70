"""Numbers both engines store exactly (issue 8, item 6).

Every metric value must lie within ±2^53 (counters and non-negative units
0..2^53, percentages 0..100): anything else is a row error (a RowError in
the ValidationError, or ``rejected`` with ``on_error='skip'``) on both
engines, never an OverflowError or a driver error. At the bound, aggregates
(buckets, summary, top, rate) still match a plain-Python computation: they
cannot overflow. Run under each engine with ``DATABASE_URL``.
"""

import json
import math
from datetime import datetime, timedelta, timezone
from fractions import Fraction

import pytest

import metricstore
from metricstore import MetricRepository, SnapshotSample, ValidationError
from metricstore.cli import main

UTC = timezone.utc
BASE = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=1)
LIMIT = 2 ** 53


def at(seconds):
    return BASE + timedelta(seconds=seconds)


@pytest.fixture
def repo(db):
    return MetricRepository(db)


def count(db, table="metrics"):
    return db.execute_sql("SELECT count(*) FROM %s" % table).fetchone()[0]


# (metric, value) pairs outside what both engines store exactly.
OUTSIDE = [
    ("disk_io_reads", LIMIT + 1),             # a counter beyond 2^53
    ("disk_io_reads", 10 ** 30),              # was OverflowError on SQLite only
    ("wait_time_ms", 10 ** 400),              # was OverflowError on both
    ("page_life_expectancy", 1.7e308),        # two of these overflowed aggregates
    ("page_life_expectancy", float(LIMIT) * 2),
    ("connection_count", -(10 ** 400)),
    ("batch_requests_sec", 1e16),
]


@pytest.mark.parametrize("metric,value", OUTSIDE)
def test_values_beyond_2_53_are_row_errors_on_every_engine(db, repo, metric, value):
    sid = repo.add_server("a")
    good = (sid, "cpu_percent", 1.0, at(0))
    with pytest.raises(ValidationError) as caught:
        repo.record_many([good, (sid, metric, value, at(1))])
    (error,) = caught.value.errors
    assert (error.position, error.field) == (1, "value")
    assert "2^53" in error.reason and len(error.reason) < 400
    assert count(db) == 0
    skipped = repo.record_many([good, (sid, metric, value, at(1))], on_error="skip")
    assert (skipped.inserted, skipped.rejected_rows) == (1, 1)
    assert [e.position for e in skipped.rejected] == [1]


def test_values_at_the_bound_are_stored_exactly(db, repo):
    sid = repo.add_server("a")
    rows = [(sid, "disk_io_reads", LIMIT, at(0)), (sid, "disk_io_reads", LIMIT - 1, at(1)),
            (sid, "page_life_expectancy", float(LIMIT), at(0)),
            (sid, "wait_time_ms", 0, at(0))]
    assert repo.record_many(rows).inserted == 4
    stored = sorted(v for (v,) in db.execute_sql("SELECT value FROM metrics").fetchall())
    assert stored == sorted(float(v) for _, _, v, _ in rows)
    assert all(Fraction(s) == Fraction(v) for s, v in zip(
        stored, sorted(v for _, _, v, _ in rows)))


def test_an_out_of_range_connection_count_is_a_row_error(db, repo):
    """server_snapshots.connection_count is an INTEGER column (2^31 - 1 on PostgreSQL)."""
    sid = repo.add_server("a")
    with pytest.raises(ValidationError) as caught:
        repo.record_snapshots([SnapshotSample(sid, at(0), 1.0, 2.0, 2 ** 31),
                               SnapshotSample(sid, at(1), 1.0, 2.0, 10 ** 400)])
    assert [(e.position, e.field) for e in caught.value.errors] == [
        (0, "connection_count"), (1, "connection_count")]
    assert repo.record_snapshots([SnapshotSample(sid, at(0), 1.0, 2.0, 2 ** 31 - 1)]
                                 ).inserted == 1


def test_aggregates_at_the_bound_match_python(db, repo):
    """Samples at 2^53 for a gauge and a counter: sums and averages are far
    from the float range on both engines, so every aggregate is exact."""
    a, b = repo.add_server("a"), repo.add_server("b")
    n = 400
    top_values = [float(LIMIT - k) for k in range(n)]
    rows = [(a, "page_life_expectancy", v, at(15 * k)) for k, v in enumerate(top_values)]
    rows += [(b, "page_life_expectancy", 1.0, at(15 * k)) for k in range(n)]
    counter = [float(LIMIT - (n - k) * 1000) for k in range(n)]      # rising to ~2^53
    rows += [(a, "disk_io_reads", v, at(15 * k)) for k, v in enumerate(counter)]
    repo.record_many(rows)
    end = at(15 * n)

    summary = repo.summary(a, "page_life_expectancy", BASE, end,
                           stats=("sum", "avg", "max", "min", "count", "p95"))
    assert summary["count"] == n
    assert summary["sum"] == pytest.approx(math.fsum(top_values), rel=1e-12)
    assert summary["avg"] == pytest.approx(math.fsum(top_values) / n, rel=1e-12)
    assert (summary["max"], summary["min"]) == (max(top_values), min(top_values))
    assert math.isfinite(summary["p95"])

    hourly = repo.buckets(a, "page_life_expectancy", BASE, end, timedelta(hours=1),
                          stats=("sum", "avg"))
    per_hour = {}
    for k, v in enumerate(top_values):
        per_hour.setdefault((15 * k) // 3600, []).append(v)
    assert [(b_.sum, b_.avg) for b_ in hourly] == [
        (pytest.approx(math.fsum(vs), rel=1e-12), pytest.approx(math.fsum(vs) / len(vs),
                                                                rel=1e-12))
        for _, vs in sorted(per_hour.items())]

    ranked = repo.top("page_life_expectancy", BASE, end, n=2, stat="avg")
    assert [r.server_id for r in ranked] == [a, b]
    assert ranked[0].value == pytest.approx(math.fsum(top_values) / n, rel=1e-12)

    (rate,) = repo.rate(a, "disk_io_reads", BASE, end, timedelta(days=2))
    assert rate.delta == pytest.approx(counter[-1] - counter[0], rel=1e-12)
    assert rate.rate == pytest.approx((counter[-1] - counter[0]) / (15 * (n - 1)), rel=1e-12)


@pytest.mark.parametrize("value", ["1" + "0" * 30, "1" + "0" * 400, "1.7e308"])
def test_the_cli_reports_a_huge_value_as_a_row_error_without_a_traceback(
        db, repo, tenant_url, tmp_path, capsys, value):
    sid = repo.add_server("a")
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join([
        json.dumps({"server_id": sid, "metric": "cpu_percent", "value": 1.0,
                    "collected_at": at(0).isoformat()}),
        '{"server_id": %d, "metric": "disk_io_reads", "value": %s, "collected_at": "%s"}'
        % (sid, value, at(1).isoformat())]) + "\n")
    code = main(["ingest", str(path), "--url", tenant_url])
    out, err = capsys.readouterr()
    assert code == 2
    assert "Traceback" not in err and "line 2: value" in err
    assert [line for line in err.splitlines() if line.startswith("error:")] == [
        line for line in err.splitlines()[-1:]]
    assert count(db) == 0
