"""Tables metricstore did not make never block writes or retention (PostgreSQL).

A detached month an operator kept (pg_partman's default), a hand-made
partition covering part of a month, and a partition dropped behind the
write path's back: rows still land, the conflict is named with its fix in
the plan, ``status`` and ``partitions``, and retention still runs.
"""

import time
from datetime import datetime, timedelta, timezone

import pytest

import metricstore
from metricstore.cli import main
from metricstore.partitioning import MONTH_CACHE_TTL_S
from metricstore.status import status
from metricstore.timeutil import utcnow

pytestmark = pytest.mark.postgres
UTC = timezone.utc


def _rows(sid, start, n, step=timedelta(hours=1)):
    return [(sid, "cpu_percent", float(i % 100), start + i * step) for i in range(n)]


def _count(db, table):
    return db.execute_sql('SELECT count(*) FROM "%s"' % table).fetchone()[0]


@pytest.fixture
def old_tenant(db):
    """A tenant keeping ten years, so 2019 rows are inside retention."""
    metricstore.set_retention_days(db, 3660)
    return db


def test_a_kept_detached_month_is_reported_and_its_rows_land_in_the_default(old_tenant,
                                                                             capsys):
    db = old_tenant
    repo = metricstore.MetricRepository(db)
    sid = repo.add_server("sql-01")
    db.execute_sql("CREATE TABLE metrics_p2019_03 (LIKE metrics)")     # an operator's leftover
    rows = _rows(sid, datetime(2019, 3, 1, tzinfo=UTC), 24 * 31)
    assert repo.record_many(rows).inserted == len(rows)
    assert _count(db, "metrics_default") == len(rows)
    assert len(list(repo.series(sid, "cpu_percent", rows[0][3], rows[-1][3]
                                + timedelta(hours=1)))) == len(rows)
    result = metricstore.maintain(db)                 # no exception: the run is recorded
    (conflict,) = [c for c in result.plan.conflicts if c.table == "metrics"]
    assert (conflict.blocker, conflict.kind) == ("metrics_p2019_03", "name")
    assert "ATTACH PARTITION" in conflict.fix and "RENAME" in conflict.fix
    problems = " ".join(status(db).problems)
    assert "metrics_p2019_03" in problems and "rename it" in problems
    assert main(["partitions", "--url", db.url]) == 0
    out = capsys.readouterr().out
    assert "BLOCKED metrics 2019-03" in out and "metrics_p2019_03" in out
    # The fix the message gives works: rename it, and maintenance moves the rows.
    db.execute_sql("ALTER TABLE metrics_p2019_03 RENAME TO kept_2019_03")
    assert metricstore.maintain(db).moved == len(rows)
    assert _count(db, "metrics_default") == 0 and _count(db, "metrics_p2019_03") == len(rows)


def test_retention_runs_although_a_month_is_blocked(old_tenant):
    db = old_tenant
    repo = metricstore.MetricRepository(db)
    sid = repo.add_server("sql-01")
    db.execute_sql("CREATE TABLE metrics_p2019_03 (LIKE metrics)")
    old = _rows(sid, datetime(2017, 6, 1, tzinfo=UTC), 48)
    blocked = _rows(sid, datetime(2019, 3, 1, tzinfo=UTC), 48)
    repo.record_many(old + blocked)
    keep_after = datetime(2018, 1, 1, tzinfo=UTC)
    metricstore.set_retention_days(db, (utcnow() - keep_after).days)
    result = metricstore.maintain(db)
    assert any(c.blocker == "metrics_p2019_03" for c in result.plan.conflicts)
    assert "metrics_p2017_06" in result.dropped
    left = db.execute_sql("SELECT min(collected_at), count(*) FROM metrics").fetchone()
    assert left[0] >= keep_after and left[1] == len(blocked)


def test_a_hand_made_partition_over_part_of_a_month_is_reported(old_tenant):
    db = old_tenant
    repo = metricstore.MetricRepository(db)
    sid = repo.add_server("sql-01")
    db.execute_sql("CREATE TABLE metrics_handmade PARTITION OF metrics FOR VALUES "
                   "FROM ('2019-05-01 00:00:00+00') TO ('2019-05-15 00:00:00+00')")
    rows = _rows(sid, datetime(2019, 5, 1, tzinfo=UTC), 24 * 31)
    assert repo.record_many(rows).inserted == len(rows)
    in_part = sum(1 for r in rows if r[3] < datetime(2019, 5, 15, tzinfo=UTC))
    assert _count(db, "metrics_handmade") == in_part
    assert _count(db, "metrics_default") == len(rows) - in_part
    plan = metricstore.maintain(db, dry_run=True).plan
    (conflict,) = [c for c in plan.conflicts if c.table == "metrics"]
    assert (conflict.blocker, conflict.kind, conflict.month) == (
        "metrics_handmade", "overlap", datetime(2019, 5, 1, tzinfo=UTC))
    assert "DETACH PARTITION metrics_handmade" in str(plan)


def test_the_write_path_notices_a_partition_dropped_behind_its_back(db):
    repo = metricstore.MetricRepository(db)
    sid = repo.add_server("sql-01")
    now = utcnow()
    month = datetime(now.year, now.month, 1, tzinfo=UTC)
    first = _rows(sid, month, 3, step=timedelta(seconds=1))
    repo.record_many(first)                              # the month is now cached as covered
    name = "metrics_p%04d_%02d" % (month.year, month.month)
    other = metricstore.connect(db.url)
    other.execute_sql('ALTER TABLE metrics DETACH PARTITION "%s"' % name)
    other.execute_sql('DROP TABLE "%s"' % name)
    other.close()
    late = _rows(sid, month + timedelta(minutes=1), 3, step=timedelta(seconds=1))
    repo.record_many(late)                   # inside the cache's TTL: may go to the default
    time.sleep(MONTH_CACHE_TTL_S + 0.1)
    later = _rows(sid, month + timedelta(minutes=2), 3, step=timedelta(seconds=1))
    repo.record_many(later)                  # the cache is re-checked: the month comes back
    assert _count(db, "metrics_default") == 0
    assert _count(db, name) == len(late) + len(later)
