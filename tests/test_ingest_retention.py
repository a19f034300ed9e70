"""Rows older than the retention cutoff (issue 10, item 5).

A batch straddling the tenant's retention cutoff stores the rows inside it
and reports the older ones as ``WriteResult.expired``: not stored (the next
maintenance would delete them), not an error, on both engines and in both
``on_error`` modes. A row that is also wrong in another way is still a row
error. Expected outcomes come from plain Python over the same rows and the
cutoff ``now - retention_days``.
"""

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import metricstore
from metricstore import MetricRepository, SnapshotSample, ValidationError

UTC = timezone.utc
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
RETENTION = 7
CUTOFF = NOW - timedelta(days=RETENTION)
PROPERTY = settings(max_examples=25, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture
def repo(db):
    metricstore.set_retention_days(db, RETENTION)
    return MetricRepository(db, clock=lambda: NOW)


def stored_times(db, table="metrics", server_id=None):
    out = set()
    sql = "SELECT collected_at FROM %s" % table
    if server_id is not None:
        sql += " WHERE server_id = %d" % server_id
    for (t,) in db.execute_sql(sql).fetchall():
        out.add(datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=t)
                if isinstance(t, int) else t.astimezone(UTC))
    return out


# Offsets from the cutoff in microseconds: both sides, and the edge itself.
offsets = st.lists(st.one_of(st.integers(-3 * 86_400_000_000, 3 * 86_400_000_000),
                             st.sampled_from([-1, 0, 1])), max_size=40)


@PROPERTY
@given(offsets=offsets)
def test_a_straddling_batch_stores_the_rows_inside_and_counts_the_rest(db, repo, offsets):
    sid = repo.add_server("srv-%d" % len(repo.servers()))
    rows = [(sid, "cpu_percent", float(i % 100), CUTOFF + timedelta(microseconds=o))
            for i, o in enumerate(offsets)]
    result = repo.record_many(rows)
    inside = {t for _, _, _, t in rows if t >= CUTOFF}           # the cutoff itself is kept
    assert result.expired == sum(1 for _, _, _, t in rows if t < CUTOFF)
    assert result.inserted == len(inside)
    assert result.duplicates == sum(1 for _, _, _, t in rows if t >= CUTOFF) - len(inside)
    assert (result.rejected, result.rejected_rows) == ([], 0)
    assert result.inserted + result.duplicates + result.rejected_rows + result.expired \
        == len(rows)
    assert stored_times(db, server_id=sid) == inside


def test_expired_rows_are_not_errors_but_bad_ones_still_are(db, repo):
    sid = repo.add_server("a")
    old = CUTOFF - timedelta(hours=1)
    rows = [(sid, "cpu_percent", 1.0, old),                      # expired
            (sid, "cpu_percent", 2.0, CUTOFF + timedelta(hours=1)),
            (sid, "cpu_percent", 500.0, old),                    # expired AND out of range
            (sid, "cpu_percent", 3.0, datetime(1999, 1, 1, tzinfo=UTC))]   # a wrong clock
    with pytest.raises(ValidationError) as caught:
        repo.record_many(rows)
    assert [(e.position, e.field) for e in caught.value.errors] == [
        (2, "value"), (3, "collected_at")]
    assert "retention" not in str(caught.value)
    skipped = repo.record_many(rows, on_error="skip")
    assert (skipped.inserted, skipped.expired, skipped.rejected_rows) == (1, 1, 2)
    assert stored_times(db) == {CUTOFF + timedelta(hours=1)}


def test_a_batch_wholly_past_the_cutoff_writes_nothing_and_says_so(db, repo):
    sid = repo.add_server("a")
    rows = [(sid, "memory_percent", 5.0, CUTOFF - timedelta(minutes=m)) for m in range(1, 50)]
    result = repo.record_many(rows)
    assert (result.inserted, result.duplicates, result.expired) == (0, 0, 49)
    assert stored_times(db) == set()


def test_snapshots_straddling_the_cutoff(db, repo):
    sid = repo.add_server("a")
    times = [CUTOFF + timedelta(minutes=m) for m in (-30, -1, 0, 1, 30)]
    snaps = [SnapshotSample(sid, t, 10.0, 20.0, 3, "online") for t in times]
    result = repo.record_snapshots(snaps)
    assert (result.inserted, result.expired) == (3, 2)
    assert stored_times(db, "server_snapshots") == {t for t in times if t >= CUTOFF}
    again = repo.record_snapshots(snaps)
    assert (again.inserted, again.duplicates, again.expired) == (0, 3, 2)


def test_the_cli_reports_expired_rows(db, repo, tenant_url, tmp_path, capsys):
    from metricstore.cli import main
    sid = repo.add_server("a")
    # The CLI's repository uses the real clock: rows around the real cutoff.
    now = datetime.now(UTC)
    real_cutoff = now - timedelta(days=RETENTION)
    rows = [(sid, "cpu_percent", 1, real_cutoff - timedelta(hours=2)),
            (sid, "cpu_percent", 2, real_cutoff + timedelta(hours=2)),
            (sid, "cpu_percent", 3, now - timedelta(hours=1))]
    path = tmp_path / "in.csv"
    path.write_text("server_id,metric,value,collected_at\n" + "".join(
        "%d,%s,%d,%s\n" % (s, m, v, t.isoformat()) for s, m, v, t in rows))
    assert main(["ingest", str(path), "--url", tenant_url]) == 0
    assert "inserted 2, duplicates 0, rejected 0, expired 1" in capsys.readouterr().out
