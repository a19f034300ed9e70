"""Partition maintenance under real concurrency (PostgreSQL, several processes).

Processes (multiprocessing 'spawn') each open their own connection with
``metricstore.connect`` and start together at a barrier: maintainers run
``metricstore.maintain``, ensurers call ``ensure_months`` for the months
waiting in the default partition, writers ensure their batch's months and
insert. Afterwards: no process failed, none hung (joins have a deadline),
every row the test wrote is there exactly once (or, past retention, exactly
gone) and the default partitions are empty.

Two kinds of writer: the ORM (``Metric.insert_many`` after ``ensure_months``,
as the write path does) and the repository (``MetricRepository.record_many``
and ``record_snapshots``, which ensure the batch's months themselves).
"""

import multiprocessing
import random
import re
import time
import traceback
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest

import metricstore
from metricstore.models import Metric, MetricType, Server, ServerSnapshot
from metricstore.partitioning import ensure_months

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

UTC = timezone.utc
SERIES = ("metrics", "server_snapshots")
from metricstore.partitioning import SERIES_TABLES  # noqa: E402  (raw and rollup tiers)
NOW = datetime(2026, 3, 10, 12, tzinfo=UTC)           # provision makes March..June
MISSING = [datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC),
           datetime(2026, 8, 1, tzinfo=UTC)]
DEADLINE_S = 180


# -- what each process does (module level, so 'spawn' can import it) --------------------
def _maintainer(db, now, runs):
    out = []
    for _ in range(runs):
        r = metricstore.maintain(db, now=now)
        out.append((r.created, r.moved, r.dropped, r.deleted))
        time.sleep(random.random() * 0.05)
    return out


def _ensurer(db, months, seed):
    rnd = random.Random(seed)
    created = []
    for table in rnd.sample(SERIES, 2):
        created += ensure_months(db, table, rnd.sample(months, len(months)))
    return created


def _writer(db, rows):
    """rows: (server_id, metric_type_id, value, collected_at); batches of 100."""
    created = []
    for i in range(0, len(rows), 100):
        batch = rows[i:i + 100]
        created += ensure_months(db, "metrics", {t for _, _, _, t in batch})
        Metric.insert_many([dict(server=s, metric_type=m, value=v, collected_at=t)
                            for s, m, v, t in batch]).execute(db)
    return created


def _recorder(db, samples, snapshots, batches=40):
    """Repository writes: ``batches`` calls each of record_many and record_snapshots."""
    repo = metricstore.MetricRepository(db, max_skew=timedelta(days=3650))
    inserted = 0
    for b in range(batches):
        inserted += repo.record_many(samples[b::batches]).inserted
        inserted += repo.record_snapshots(snapshots[b::batches]).inserted
    return inserted


ROLES = {"maintain": _maintainer, "ensure": _ensurer, "write": _writer,
         "record": _recorder}


def _run(role, url, barrier, queue, args):
    try:
        db = metricstore.connect(url)
        db.connect()
        barrier.wait(timeout=60)
        out = ROLES[role](db, *args)
        db.close()
        queue.put((role, "ok", out))
    except BaseException:
        queue.put((role, "error", traceback.format_exc()))


def run_together(url, jobs):
    """Start ``jobs`` [(role, args)] at once; return [(role, output)] or fail."""
    ctx = multiprocessing.get_context("spawn")
    barrier, queue = ctx.Barrier(len(jobs)), ctx.Queue()
    procs = [ctx.Process(target=_run, args=(role, url, barrier, queue, args), daemon=True)
             for role, args in jobs]
    for p in procs:
        p.start()
    deadline = time.monotonic() + DEADLINE_S
    results = []
    try:
        for _ in procs:
            results.append(queue.get(timeout=max(1, deadline - time.monotonic())))
        for p in procs:
            p.join(timeout=max(1, deadline - time.monotonic()))
    except Exception:
        pass
    hung = [p.pid for p in procs if p.is_alive()]
    for p in procs:
        if p.is_alive():
            p.terminate()
    assert not hung, "processes %s still running after %d s (deadlock?)" % (hung, DEADLINE_S)
    errors = [out for role, status, out in results if status != "ok"]
    assert not errors, "\n\n".join(errors)
    assert len(results) == len(jobs)
    return [(role, out) for role, _, out in results]


# -- the tenant ---------------------------------------------------------------------------
def month_of(dt):
    return dt.year, dt.month


def part(table, ym):
    return "%s_p%04d_%02d" % (table, ym[0], ym[1])


def spread(start, end, step):
    out, t = [], start
    while t < end:
        out.append(t)
        t += step
    return out


def seed(db, servers, types, times):
    """Write metrics and snapshots for every server, type and time; return both key sets."""
    m = [(s, mt, 0.5, t) for s in servers for mt in types for t in times]
    sn = [(s, t) for s in servers for t in times]
    for i in range(0, len(m), 1000):
        Metric.insert_many([dict(server=s, metric_type=mt, value=v, collected_at=t)
                            for s, mt, v, t in m[i:i + 1000]]).execute(db)
    for i in range(0, len(sn), 1000):
        ServerSnapshot.insert_many([dict(server=s, status="online", collected_at=t)
                                    for s, t in sn[i:i + 1000]]).execute(db)
    return {(s, mt, t) for s, mt, _, t in m}, set(sn)


def keys(db):
    metrics = {(s, m, t) for s, m, t in Metric.select(
        Metric.server, Metric.metric_type, Metric.collected_at).bind(db).tuples()}
    snaps = {(s, t) for s, t in ServerSnapshot.select(
        ServerSnapshot.server, ServerSnapshot.collected_at).bind(db).tuples()}
    return metrics, snaps


def count(db, table):
    return db.execute_sql('SELECT count(*) FROM "%s"' % table).fetchone()[0]


def bounds(db, table):
    """{name: bound text} from the catalog, rendered in a UTC session."""
    with db.atomic():
        db.execute_sql("SET LOCAL TimeZone = 'UTC'")
        return dict(db.execute_sql(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = %s::regclass",
            ('"%s"' % table,)).fetchall())


def rows_by_partition(db, table):
    """{partition name: rows} from each row's tableoid (on Citus: its shard,
    ``schema.<partition>_<shard id>``)."""
    out = {}
    for name, n in db.execute_sql('SELECT tableoid::regclass::text, count(*) FROM "%s" '
                                  "GROUP BY 1" % table).fetchall():
        name = re.sub(r"_\d{6,}$", "", name.rsplit(".", 1)[-1])
        out[name] = out.get(name, 0) + n
    return out


@pytest.fixture
def tenant(tenant_url):
    db = metricstore.connect(tenant_url)
    db.connect()
    metricstore.provision(db, now=NOW, retention_days=400)
    servers = [Server.insert(name="srv%d" % i, created_at=NOW).execute(db) for i in range(6)]
    types = [m.id for m in MetricType.select().order_by(MetricType.id).bind(db)][:2]
    yield db, servers, types
    db.close()


def waiting_rows(db, servers, types):
    """Rows of the three missing months, all in the default partitions."""
    times = [t for month in MISSING
             for t in spread(month + timedelta(hours=1), month + timedelta(days=28),
                             timedelta(hours=3, minutes=7))]
    metrics, snaps = seed(db, servers, types, times)
    assert count(db, "metrics_default") == len(metrics) > 2000
    assert count(db, "server_snapshots_default") == len(snaps)
    return metrics, snaps


def assert_settled(db, metrics, snaps, months, snapshot_months=None):
    """Exactly these rows, none in default, one exact partition per month and table."""
    got_metrics, got_snaps = keys(db)
    assert count(db, "metrics") == len(metrics)
    assert count(db, "server_snapshots") == len(snaps)
    assert got_metrics == metrics and got_snaps == snaps
    assert count(db, "metrics_default") == 0
    assert count(db, "server_snapshots_default") == 0
    for table in SERIES:
        found = bounds(db, table)
        wanted = snapshot_months if table == "server_snapshots" and snapshot_months else months
        for y, m in wanted:
            ny, nm = (y + 1, 1) if m == 12 else (y, m + 1)
            assert found[part(table, (y, m))] == (
                "FOR VALUES FROM ('%04d-%02d-01 00:00:00+00') TO ('%04d-%02d-01 00:00:00+00')"
                % (y, m, ny, nm))
    assert rows_by_partition(db, "metrics") == dict(
        Counter(part("metrics", month_of(t)) for _, _, t in metrics))


# -- the tests ----------------------------------------------------------------------------
def test_maintainers_and_ensurers_at_once_lose_nothing(tenant, tenant_url):
    db, servers, types = tenant
    metrics, snaps = waiting_rows(db, servers, types)

    jobs = [("maintain", (NOW, 2)) for _ in range(4)] + \
           [("ensure", (MISSING, i)) for i in range(4)]
    results = run_together(tenant_url, jobs)

    created = [name for role, out in results if role == "maintain"
               for run in out for name in run[0]]
    created += [name for role, out in results if role == "ensure" for name in out]
    expected = {part(t, month_of(m)) for t in SERIES for m in MISSING}
    assert sorted(created) == sorted(expected)           # each created once, by someone
    assert_settled(db, metrics, snaps, [month_of(m) for m in MISSING] +
                   [(2026, m) for m in (3, 4, 5, 6)])
    runs = list(metricstore.MaintenanceRun.select().bind(db))
    assert len(runs) == 8
    assert all(r.error is None and r.finished_at is not None for r in runs)
    assert sum(r.dropped for r in runs) == 0 and sum(r.deleted for r in runs) == 0


def test_writers_and_maintainers_at_once_lose_nothing(tenant, tenant_url):
    db, servers, types = tenant
    metrics, snaps = waiting_rows(db, servers[:2], types)

    # each writer owns a server; its rows cover January..September, most months
    # without a partition yet, in shuffled batches
    jobs, written = [], set()
    for w, server in enumerate(servers[2:]):
        times = spread(datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=w),
                       datetime(2026, 10, 1, tzinfo=UTC), timedelta(hours=2, minutes=41))
        rows = [(server, mt, float(i), t) for i, t in enumerate(times) for mt in types]
        random.Random(w).shuffle(rows)
        written |= {(s, mt, t) for s, mt, _, t in rows}
        jobs.append(("write", (rows,)))
    jobs += [("maintain", (NOW, 3)) for _ in range(3)]
    jobs += [("ensure", (MISSING, 9))]
    assert len(written) > 8000
    run_together(tenant_url, jobs)

    assert not metrics & written
    assert_settled(db, metrics | written, snaps, [(2026, m) for m in range(1, 10)],
                   [(2026, m) for m in (1, 2, 3, 4, 5, 6, 8)])   # writers write metrics only
    assert all(r.error is None for r in metricstore.MaintenanceRun.select().bind(db))


def test_repository_writers_and_maintainers_at_once_lose_nothing(tenant, tenant_url):
    db, servers, types = tenant
    metrics, snaps = waiting_rows(db, servers[:2], types)
    names = dict((m.id, m.name) for m in MetricType.select().bind(db))

    jobs, written, written_snaps = [], set(), set()
    for w, server in enumerate(servers[2:]):
        times = spread(datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=w),
                       datetime(2026, 10, 1, tzinfo=UTC), timedelta(hours=3, minutes=13))
        random.Random(w).shuffle(times)
        samples = [(server, names[mt], 50.0, t) for t in times for mt in types]
        snapshots = [(server, t) for t in times]
        written |= {(server, mt, t) for t in times for mt in types}
        written_snaps |= set(snapshots)
        jobs.append(("record", (samples, snapshots)))
    jobs += [("maintain", (NOW, 3)) for _ in range(3)]
    results = run_together(tenant_url, jobs)

    inserted = sum(out for role, out in results if role == "record")
    assert inserted == len(written) + len(written_snaps)
    assert_settled(db, metrics | written, snaps | written_snaps,
                   [(2026, m) for m in range(1, 10)])
    assert all(r.error is None for r in metricstore.MaintenanceRun.select().bind(db))


def test_concurrent_maintainers_keep_retention_exact(tenant, tenant_url):
    db, servers, types = tenant
    now = datetime(2026, 9, 20, 8, 15, tzinfo=UTC)
    metricstore.set_retention_days(db, 30)
    # rows from January to now: old months in owned partitions and in default
    times = spread(datetime(2026, 1, 3, tzinfo=UTC), now, timedelta(hours=4, minutes=3))
    metrics, snaps = seed(db, servers[:4], types, times)
    assert count(db, "metrics_default") > 0

    run_together(tenant_url, [("maintain", (now, 2)) for _ in range(4)])

    cutoff = now - timedelta(days=30)
    young_metrics = {k for k in metrics if k[2] >= cutoff}
    young_snaps = {k for k in snaps if k[1] >= cutoff}
    assert_settled(db, young_metrics, young_snaps, [(2026, m) for m in (8, 9, 10, 11, 12)])
    for table in SERIES:
        old = [n for n in bounds(db, table)
               if n.startswith(table + "_p2026_0") and n[-2:] < "08"]
        assert old == [], old
    runs = list(metricstore.MaintenanceRun.select().bind(db))
    assert len(runs) == 8 and all(r.error is None for r in runs)
