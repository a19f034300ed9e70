"""Partition maintenance and exact retention, walking the clock (issue 3).

Every test runs on the engine ``DATABASE_URL`` selects; PostgreSQL-only
checks (partitions, the default partition, catalog bounds, session time
zones) are marked ``postgres``. Rows are written with the peewee ORM and the
expected outcome is computed in plain Python over the rows the test wrote.
Partition bounds are checked against PostgreSQL's own rendering of the
catalog in a UTC session, not through metricstore's catalog reader.
"""

import json
import re
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest

import metricstore
from metricstore.dialects import dialect_for
from metricstore.models import Metric, MetricType, Server, ServerSnapshot
from metricstore.partitioning import PartitionManager, ensure_months
from metricstore.partitioning.operations import drop_partition

UTC = timezone.utc
MARKER = "metricstore:managed-partition"
SERIES = ("metrics", "server_snapshots")
from metricstore.partitioning import SERIES_TABLES  # noqa: E402  (raw and rollup tiers)


# -- helpers: time ---------------------------------------------------------------------
def at(y, m, d=1, h=0, mi=0, s=0, us=0):
    return datetime(y, m, d, h, mi, s, us, tzinfo=UTC)


def ym_of(dt):
    dt = dt.astimezone(UTC)
    return dt.year, dt.month


def ym_add(ym, n):
    index = ym[0] * 12 + ym[1] - 1 + n
    return index // 12, index % 12 + 1


def ym_start(ym):
    return at(ym[0], ym[1])


def part_name(table, ym):
    return "%s_p%04d_%02d" % (table, ym[0], ym[1])


def bound_text(ym):
    """PostgreSQL's rendering of a month's bound in a UTC session."""
    nxt = ym_add(ym, 1)
    return ("FOR VALUES FROM ('%04d-%02d-01 00:00:00+00') TO ('%04d-%02d-01 00:00:00+00')"
            % (ym[0], ym[1], nxt[0], nxt[1]))


# -- helpers: data ----------------------------------------------------------------------
def add_server(db, name):
    return Server.insert(name=name, created_at=at(2020, 1, 1)).execute(db)


def metric_type_ids(db, n=2):
    ids = [m.id for m in MetricType.select().order_by(MetricType.id).bind(db)]
    assert len(ids) >= n
    return ids[:n]


def insert_metrics(db, rows):
    """rows: (server_id, metric_type_id, value, collected_at)."""
    rows = list(rows)
    for i in range(0, len(rows), 500):
        Metric.insert_many([dict(server=s, metric_type=m, value=v, collected_at=t)
                            for s, m, v, t in rows[i:i + 500]]).execute(db)


def insert_snapshots(db, rows):
    """rows: (server_id, collected_at)."""
    rows = list(rows)
    for i in range(0, len(rows), 500):
        ServerSnapshot.insert_many([dict(server=s, status="online", cpu_percent=12.5,
                                         collected_at=t)
                                    for s, t in rows[i:i + 500]]).execute(db)


def metric_keys(db):
    return {(s, m, t) for s, m, t in Metric.select(
        Metric.server, Metric.metric_type, Metric.collected_at).bind(db).tuples()}


def snapshot_keys(db):
    return {(s, t) for s, t in ServerSnapshot.select(
        ServerSnapshot.server, ServerSnapshot.collected_at).bind(db).tuples()}


def count(db, table):
    return db.execute_sql('SELECT count(*) FROM "%s"' % table).fetchone()[0]


def spread(start, end, step):
    out, t = [], start
    while t < end:
        out.append(t)
        t += step
    return out


class Data:
    """A tenant's rows as the test wrote them: the oracle for every check."""

    def __init__(self, db):
        self.db = db
        self.metrics, self.snapshots = set(), set()

    def write(self, servers, times, types):
        m = {(s, mt, t) for s in servers for mt in types for t in times}
        sn = {(s, t) for s in servers for t in times}
        insert_metrics(self.db, [(s, mt, 1.5, t) for s, mt, t in sorted(m)])
        insert_snapshots(self.db, sorted(sn))
        self.metrics |= m
        self.snapshots |= sn

    def younger(self, cutoff):
        return ({k for k in self.metrics if k[2] >= cutoff},
                {k for k in self.snapshots if k[1] >= cutoff})

    def total(self):
        return len(self.metrics) + len(self.snapshots)


# -- helpers: catalog (PostgreSQL), read with plain SQL in a UTC session ------------------
CATALOG = """
SELECT c.relname, pg_get_expr(c.relpartbound, c.oid), obj_description(c.oid, 'pg_class')
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = %s::regclass ORDER BY 1
"""


def catalog(db, table):
    """{partition name: (bound text in UTC, comment)}."""
    with db.atomic():
        db.execute_sql("SET LOCAL TimeZone = 'UTC'")
        rows = db.execute_sql(CATALOG, ('"%s"' % table,)).fetchall()
    return {name: (bound, comment) for name, bound, comment in rows}


def schema_listing(db, backend):
    """Every relation of the tenant schema (tables, partitions, indexes) with bound/comment."""
    if backend == "sqlite":
        return db.execute_sql("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()
    with db.atomic():
        db.execute_sql("SET LOCAL TimeZone = 'UTC'")
        return db.execute_sql(
            "SELECT c.relname, c.relkind, pg_get_expr(c.relpartbound, c.oid), "
            "obj_description(c.oid, 'pg_class') FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = current_schema() ORDER BY 1").fetchall()


def rows_by_partition(db, table):
    """{partition name: rows}, from each row's tableoid (independent of metricstore).
    On Citus a row's tableoid is its shard, ``schema.<partition>_<shard id>``."""
    out = {}
    for name, n in db.execute_sql('SELECT tableoid::regclass::text, count(*) FROM "%s" '
                                  'GROUP BY 1' % table).fetchall():
        name = re.sub(r"_\d{6,}$", "", name.rsplit(".", 1)[-1])
        out[name] = out.get(name, 0) + n
    return out


def default_rows(db, table):
    for name, (bound, _) in catalog(db, table).items():
        if bound == "DEFAULT":
            return count(db, name)
    raise AssertionError("%s has no default partition" % table)


def assert_months_exist(db, yms):
    """Each (table, month) has exactly one partition with exact UTC month bounds."""
    for table in SERIES:
        bounds = {bound: name for name, (bound, _) in catalog(db, table).items()}
        for ym in yms:
            assert bound_text(ym) in bounds, "%s has no partition for %s" % (table, ym)
            assert bounds[bound_text(ym)] == part_name(table, ym)


def assert_no_overlap(db):
    for table in SERIES:
        spans = sorted(tuple(re.findall(r"'([^']+)'", bound))
                       for bound, _ in catalog(db, table).values() if bound != "DEFAULT")
        for (_, end), (start, _) in zip(spans, spans[1:]):    # UTC text sorts as time
            assert end <= start, spans


def provisioned(raw_db, now, retention_days=None):
    metricstore.provision(raw_db, now=now, retention_days=retention_days)
    return raw_db


# == month and year boundaries ===============================================================
WALK = [at(2026, 10, 31, 23, 59, 59), at(2026, 11, 1), at(2026, 11, 30, 23, 30),
        datetime(2026, 11, 30, 23, 30, tzinfo=timezone(timedelta(hours=-8))),   # 1 Dec UTC
        datetime(2027, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=5, minutes=30))),  # 31 Dec
        at(2026, 12, 31, 23, 59, 59, 999999), at(2027, 1, 1), at(2027, 1, 1, 0, 0, 1),
        at(2027, 2, 28, 12), at(2027, 3, 1, 0, 0)]


@pytest.mark.postgres
def test_walking_the_clock_keeps_current_and_three_months_ahead(raw_db):
    db = provisioned(raw_db, WALK[0])
    assert_months_exist(db, [(2026, 10), (2026, 11), (2026, 12), (2027, 1)])
    for now in WALK:
        result = metricstore.maintain(db, now=now)
        current = ym_of(now)
        wanted = [ym_add(current, i) for i in range(4)]
        assert_months_exist(db, wanted)
        assert_no_overlap(db)
        for table in SERIES:
            for name, (_, comment) in catalog(db, table).items():
                assert comment == MARKER, name
        # a second run at the same instant has nothing left to create
        again = metricstore.maintain(db, now=now)
        assert again.created == [] and again.dropped == []
        assert set(result.created) <= {part_name(t, ym) for t in SERIES_TABLES
                                       for ym in wanted}
    assert ym_of(WALK[-1]) == (2027, 3)
    assert part_name("metrics", (2027, 6)) in catalog(db, "metrics")


def test_rows_written_while_walking_the_clock_stay_put(raw_db, backend):
    """Every row younger than retention survives every run; none lands in default."""
    db = provisioned(raw_db, WALK[0], retention_days=400)
    data = Data(db)
    servers = [add_server(db, "a"), add_server(db, "b")]
    types = metric_type_ids(db)
    for now in WALK:
        metricstore.maintain(db, now=now)
        data.write(servers, [now, now + timedelta(minutes=1)], types)
        if backend == "postgresql":
            assert default_rows(db, "metrics") == 0
            assert default_rows(db, "server_snapshots") == 0
    metricstore.maintain(db, now=WALK[-1])
    assert metric_keys(db) == data.metrics
    assert snapshot_keys(db) == data.snapshots
    assert len(data.metrics) == 2 * 2 * 2 * len(WALK)
    if backend == "postgresql":
        by_part = rows_by_partition(db, "metrics")
        expected = Counter(part_name("metrics", ym_of(t)) for _, _, t in data.metrics)
        assert by_part == dict(expected)


# == long downtime ===========================================================================
def test_long_downtime_then_writes_resume(raw_db, backend):
    """No maintenance from January to June: May/June rows wait in default, then move."""
    db = provisioned(raw_db, at(2026, 1, 15, 10), retention_days=365)
    data = Data(db)
    servers = [add_server(db, "a"), add_server(db, "b")]
    types = metric_type_ids(db)
    data.write(servers, spread(at(2026, 1, 15, 10), at(2026, 6, 20, 9), timedelta(hours=11)),
               types)
    late = [k for k in data.metrics if k[2] >= at(2026, 5, 1)]
    late_snaps = [k for k in data.snapshots if k[1] >= at(2026, 5, 1)]
    assert late and late_snaps
    if backend == "postgresql":            # Jan..Apr exist; May and June rows wait in default
        assert default_rows(db, "metrics") == len(late)
        assert default_rows(db, "server_snapshots") == len(late_snaps)

    now = at(2026, 6, 20, 9, 30)
    plan = metricstore.maintain(db, now=now, dry_run=True).plan
    result = metricstore.maintain(db, now=now)

    assert metric_keys(db) == data.metrics            # nothing lost (retention 365 days)
    assert snapshot_keys(db) == data.snapshots
    assert sum(result.deleted.values()) == 0
    if backend == "sqlite":
        assert result.created == [] and result.moved == 0 and plan.create == []
        return
    assert result.moved == len(late) + len(late_snaps)
    assert result.default_rows_after == dict.fromkeys(SERIES_TABLES, 0)
    assert default_rows(db, "metrics") == 0 and default_rows(db, "server_snapshots") == 0
    assert {c.name for c in plan.create} == set(result.created)
    assert_months_exist(db, [(2026, m) for m in range(1, 10)])
    assert_no_overlap(db)
    expected = Counter(part_name("metrics", ym_of(t)) for _, _, t in data.metrics)
    assert rows_by_partition(db, "metrics") == dict(expected)
    # a partition filled by moving rows has the same indexes as one created empty
    idx = "SELECT count(*) FROM pg_indexes WHERE schemaname = current_schema() AND tablename = %s"
    moved_into = db.execute_sql(idx, ("metrics_p2026_06",)).fetchone()[0]
    created_empty = db.execute_sql(idx, ("metrics_p2026_08",)).fetchone()[0]
    assert moved_into == created_empty == 2
    # and writes keep landing in partitions afterwards
    data.write(servers, [now + timedelta(minutes=5)], types)
    assert default_rows(db, "metrics") == 0


# == backfill ================================================================================
def test_backfill_of_a_month_a_year_ago(raw_db, backend):
    now = at(2026, 11, 10, 15)
    db = provisioned(raw_db, now)
    metricstore.set_retention_days(db, 400)
    data = Data(db)
    servers = [add_server(db, "a")]
    types = metric_type_ids(db)
    data.write(servers, spread(at(2025, 11, 1), at(2025, 12, 1), timedelta(hours=13)), types)
    data.write(servers, [at(2025, 11, 30, 23, 59, 59, 999999)], types)
    if backend == "postgresql":
        assert default_rows(db, "metrics") == len(data.metrics)
    result = metricstore.maintain(db, now=now)
    assert metric_keys(db) == data.metrics
    assert snapshot_keys(db) == data.snapshots
    if backend == "sqlite":
        return
    assert part_name("metrics", (2025, 11)) in result.created
    assert part_name("server_snapshots", (2025, 11)) in result.created
    assert result.moved == data.total()
    assert_months_exist(db, [(2025, 11)])
    assert rows_by_partition(db, "metrics") == {"metrics_p2025_11": len(data.metrics)}
    assert default_rows(db, "metrics") == 0 and default_rows(db, "server_snapshots") == 0


def test_backfill_older_than_retention_is_removed_not_partitioned(raw_db, backend):
    now = at(2026, 11, 10, 15)
    db = provisioned(raw_db, now)                       # 30 days
    data = Data(db)
    servers = [add_server(db, "a")]
    types = metric_type_ids(db)
    data.write(servers, spread(at(2025, 11, 1), at(2025, 12, 1), timedelta(hours=13)), types)
    young = now - timedelta(days=29)
    data.write(servers, [young], types)
    result = metricstore.maintain(db, now=now)
    assert metric_keys(db) == {k for k in data.metrics if k[2] == young}
    assert snapshot_keys(db) == {k for k in data.snapshots if k[1] == young}
    assert sum(result.deleted.values()) == data.total() - 3
    if backend == "postgresql":
        assert part_name("metrics", (2025, 11)) not in catalog(db, "metrics")
        assert default_rows(db, "metrics") == 0


# == exact retention =========================================================================
NOW = at(2026, 9, 15, 13, 37, 21, 250000)


def retention_tenant(raw_db):
    """~90 days of rows before NOW, a few exactly at and around the 30- and 7-day cutoffs."""
    db = provisioned(raw_db, NOW - timedelta(days=90))      # June..September
    data = Data(db)
    servers = [add_server(db, n) for n in ("a", "b", "c")]
    types = metric_type_ids(db)
    data.write(servers, spread(NOW - timedelta(days=90), NOW, timedelta(hours=5, minutes=17)),
               types)
    edges = []
    for days in (30, 7):
        cut = NOW - timedelta(days=days)
        edges += [cut - timedelta(microseconds=1), cut, cut + timedelta(microseconds=1)]
    data.write(servers, edges, types)
    return db, data


def month_end(ym):
    return ym_start(ym_add(ym, 1))


def check_retention(db, data, days, result, backend, dropped_before=()):
    cutoff = NOW - timedelta(days=days)
    metrics, snaps = data.younger(cutoff)
    assert metric_keys(db) == metrics            # no expired row left, every young row kept
    assert snapshot_keys(db) == snaps
    run = metricstore.last_run(db)
    assert run.id == result.run_id and run.error is None and run.finished_at is not None
    assert (run.created, run.dropped, run.deleted, run.moved) == (
        len(result.created), len(result.dropped), sum(result.deleted.values()), result.moved)
    detail = json.loads(run.detail)
    assert detail["dropped"] == result.dropped and detail["created"] == result.created
    if backend == "sqlite":
        assert result.dropped == []
        return
    # whole owned months that ended by the cutoff are dropped; the boundary month is trimmed
    expired_months = {ym_of(t) for _, _, t in data.metrics if month_end(ym_of(t)) <= cutoff}
    expected_dropped = {part_name(t, ym) for t in SERIES for ym in expired_months}
    assert set(result.dropped) == expected_dropped - set(dropped_before)
    for table in SERIES:
        names = catalog(db, table)
        assert not expected_dropped & set(names)
        assert part_name(table, ym_of(cutoff)) in names          # the boundary partition stays


def test_retention_is_exact_and_follows_the_setting(raw_db, backend):
    db, data = retention_tenant(raw_db)
    assert metricstore.last_run(db) is None

    result = metricstore.maintain(db, now=NOW)                        # 30 days
    check_retention(db, data, 30, result, backend)
    cutoff30 = NOW - timedelta(days=30)
    expired30 = [t for _, _, t in data.metrics if t < cutoff30] + \
                [t for _, t in data.snapshots if t < cutoff30]
    if backend == "sqlite":
        assert result.deleted == {
            "metrics": sum(1 for k in data.metrics if k[2] < cutoff30),
            "server_snapshots": sum(1 for k in data.snapshots if k[1] < cutoff30)}
    else:
        in_boundary = [t for t in expired30 if ym_of(t) == ym_of(cutoff30)]
        assert sum(result.deleted.values()) == len(in_boundary) > 0
    dropped30 = result.dropped

    metricstore.set_retention_days(db, 7)
    result = metricstore.maintain(db, now=NOW)
    check_retention(db, data, 7, result, backend, dropped30)
    cutoff7 = NOW - timedelta(days=7)
    assert sum(result.deleted.values()) == sum(
        1 for t in [k[2] for k in data.metrics] + [k[1] for k in data.snapshots]
        if cutoff30 <= t < cutoff7 and (backend == "sqlite" or ym_of(t) == ym_of(cutoff7)))

    metricstore.set_retention_days(db, 30)                            # nothing comes back
    result = metricstore.maintain(db, now=NOW)
    metrics7, snaps7 = data.younger(cutoff7)
    assert metric_keys(db) == metrics7 and snapshot_keys(db) == snaps7
    assert sum(result.deleted.values()) == 0 and result.dropped == []
    assert count(db, "maintenance_runs") == 3


def test_retention_removes_rows_of_servers_no_longer_listed(raw_db, backend):
    """Exactness does not depend on the servers table: the hot tables carry no foreign
    key, so rows of a server removed from ``servers`` must expire like any other."""
    db, data = retention_tenant(raw_db)
    Server.delete().where(Server.name == "b").execute(db)
    metricstore.maintain(db, now=NOW)
    metrics, snaps = data.younger(NOW - timedelta(days=30))
    assert metric_keys(db) == metrics
    assert snapshot_keys(db) == snaps


@pytest.mark.postgres
def test_a_partition_without_the_marker_survives_every_run(raw_db):
    now = at(2026, 3, 10)
    db = provisioned(raw_db, now)                                   # March..June
    data = Data(db)
    servers = [add_server(db, "a")]
    types = metric_type_ids(db)
    db.execute_sql("CREATE TABLE legacy_2025_11 PARTITION OF metrics "
                   "FOR VALUES FROM ('2025-11-01 00:00:00+00') TO ('2025-12-01 00:00:00+00')")
    db.execute_sql("COMMENT ON TABLE legacy_2025_11 IS 'made by hand, keep'")
    db.execute_sql("CREATE TABLE legacy_2025_12 PARTITION OF metrics "
                   "FOR VALUES FROM ('2025-12-01 00:00:00+00') TO ('2026-01-01 00:00:00+00')")
    ensure_months(db, "metrics", [at(2026, 1, 1)])                 # ours, as old as they are
    data.write(servers, spread(at(2025, 11, 1), now, timedelta(hours=7)), types)
    assert rows_by_partition(db, "metrics")["legacy_2025_11"] > 0

    plan = metricstore.maintain(db, now=now, dry_run=True).plan
    assert [p.name for p in plan.drop] == ["metrics_p2026_01"]    # cutoff 8 Feb
    drops = [line for line in str(plan).splitlines() if line.strip().startswith("drop")]
    assert len(drops) == 1 and "metrics_p2026_01" in drops[0]

    for now in (now, at(2026, 4, 1), at(2026, 9, 1, 12), at(2027, 1, 1)):
        result = metricstore.maintain(db, now=now)
        assert not any(n.startswith("legacy") for n in result.dropped)
        names = catalog(db, "metrics")
        assert names["legacy_2025_11"] == (bound_text((2025, 11)), "made by hand, keep")
        assert names["legacy_2025_12"] == (bound_text((2025, 12)), None)
        assert "metrics_p2026_01" not in names
        assert default_rows(db, "metrics") == 0 and default_rows(db, "server_snapshots") == 0
        metrics, snaps = data.younger(now - timedelta(days=30))
        assert metric_keys(db) == metrics             # their expired rows were deleted
        assert snapshot_keys(db) == snaps
    assert count(db, "legacy_2025_11") == count(db, "legacy_2025_12") == 0
    # asked directly, the executor refuses too
    assert drop_partition(db, dialect_for(db), "metrics", "legacy_2025_12") is False
    assert drop_partition(db, dialect_for(db), "metrics", "metrics_default") is False
    assert {"legacy_2025_12", "metrics_default"} <= set(catalog(db, "metrics"))


# == dry run and the record ==================================================================
def test_dry_run_changes_nothing(raw_db, backend):
    db, data = retention_tenant(raw_db)
    servers = [s.id for s in Server.select().bind(db)]
    data.write(servers[:1], [at(2027, 2, 3)], metric_type_ids(db))   # waits in default on PG
    later = NOW + timedelta(days=50)            # November: months to create, months to drop

    def state():
        return (schema_listing(db, backend), sorted(metric_keys(db)), sorted(snapshot_keys(db)),
                count(db, "maintenance_runs"), metricstore.get_retention_days(db))

    before = state()
    result = metricstore.maintain(db, now=later, dry_run=True)
    assert state() == before
    assert result.dry_run and result.run_id is None
    assert result.created == [] and result.dropped == [] and result.deleted == {}
    text = str(result)
    assert "dry run" in text
    assert (later - timedelta(days=30)).strftime("%Y-%m-%d %H:%M:%S") in text   # the cutoff
    assert metricstore.last_run(db) is None

    real = metricstore.maintain(db, now=later)       # the plan was not empty
    assert state() != before
    if backend == "sqlite":
        assert sum(real.deleted.values()) > 0
        return
    plan = result.plan
    for c in plan.create:
        assert c.name in text
    for p in plan.drop:
        assert p.name in text
    assert {c.name for c in plan.create} == set(real.created) == {
        part_name(t, ym) for t in SERIES_TABLES for ym in [(2026, 11), (2026, 12), (2027, 1), (2027, 2)]}
    assert [c.waiting_rows for c in plan.create if c.name == "metrics_p2027_02"] == [2]
    assert {p.name for p in plan.drop} == set(real.dropped) == {
        part_name(t, ym) for t in SERIES for ym in [(2026, 6), (2026, 7), (2026, 8), (2026, 9)]}


def test_a_real_run_is_recorded_and_readable(raw_db, backend):
    db, data = retention_tenant(raw_db)
    result = metricstore.maintain(db, now=NOW)
    run = metricstore.last_run(db)
    assert run is not None and not run.dry_run and run.error is None
    cutoff = NOW - timedelta(days=30)
    expired = [t for _, _, t in data.metrics if t < cutoff] + \
        [t for _, t in data.snapshots if t < cutoff]
    assert run.deleted == sum(result.deleted.values()) > 0
    assert run.created == len(result.created) and run.dropped == len(result.dropped)
    text = str(result)
    assert "retention: 30 days" in text
    assert "deleted %d expired row(s)" % run.deleted in text
    if backend == "postgresql":
        # June..September existed: October..December are created, June and July dropped
        assert sorted(result.created) == sorted(
            part_name(t, (2026, m)) for t in SERIES_TABLES for m in (10, 11, 12))
        assert sorted(result.dropped) == sorted(
            part_name(t, (2026, m)) for t in SERIES for m in (6, 7))
        assert "create metrics_p2026_12" in text and "drop   metrics_p2026_06" in text
        assert "created %d partition(s)" % (3 * len(SERIES_TABLES)) in text
        assert "dropped 4 partition(s)" in text          # the tiers keep 180+ days
        assert run.deleted == sum(1 for t in expired if month_end(ym_of(t)) > cutoff)
    else:
        assert run.deleted == len(expired)
    metricstore.maintain(db, now=NOW, dry_run=True)
    assert metricstore.last_run(db).id == run.id          # a dry run is not recorded


# == session time zone (PostgreSQL) ==========================================================
@pytest.mark.postgres
@pytest.mark.parametrize("zone", ["Asia/Kolkata", "America/Los_Angeles"])
def test_bounds_stay_utc_when_the_session_zone_is_not(raw_db, tenant_url, zone):
    db = provisioned(raw_db, at(2026, 10, 5))                   # Oct..Jan
    data = Data(db)
    servers = [add_server(db, "a")]
    types = metric_type_ids(db)
    db.execute_sql("SET TimeZone = %s", (zone,))
    # near UTC month ends, where the local month differs from the UTC month
    edge = [at(2026, 12, 31, 23, 59, 59), at(2027, 2, 28, 20), at(2027, 3, 1, 4),
            at(2027, 3, 31, 19), at(2027, 5, 1, 6, 30)]
    data.write(servers, edge, types)
    now = at(2026, 12, 31, 20)            # 1 January 01:30 in India; 12:00 on 31 Dec in LA
    result = metricstore.maintain(db, now=now)
    assert result.created
    assert db.execute_sql("SHOW TimeZone").fetchone()[0] == zone
    july_in_india = datetime(2027, 7, 1, 1, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    ensure_months(db, "metrics", [july_in_india])         # 30 June 19:30 UTC: June

    # an independent UTC reader: PostgreSQL's own rendering of every bound
    assert_months_exist(db, [(2026, 12), (2027, 1), (2027, 2), (2027, 3), (2027, 5)])
    metric_bounds = {b for b, _ in catalog(db, "metrics").values()}
    assert bound_text((2027, 6)) in metric_bounds and bound_text((2027, 7)) not in metric_bounds
    assert_no_overlap(db)
    for table in SERIES:
        for name, (bound, _) in catalog(db, table).items():
            assert bound == "DEFAULT" or bound.count("-01 00:00:00+00") == 2, (name, bound)
    expected = Counter(part_name("metrics", ym_of(t)) for _, _, t in data.metrics)
    assert rows_by_partition(db, "metrics") == dict(expected)

    # a second raw connection in the same zone reads the same instants
    import psycopg2
    dsn = tenant_url.split("?")[0]
    schema = tenant_url.split("schema=")[1]
    conn = psycopg2.connect(dsn)
    try:
        cur = conn.cursor()
        cur.execute("SET TimeZone = %s", (zone,))
        cur.execute("SET search_path = " + schema)
        cur.execute("SELECT count(*) FROM metrics_p2027_01 WHERE collected_at < "
                    "timestamptz '2027-01-01 00:00:00+00'")
        assert cur.fetchone()[0] == 0
        live = {p.name: p for p in PartitionManager(db).live("metrics")}
        cur.execute("SELECT extract(epoch FROM %s::timestamptz), "
                    "extract(epoch FROM %s::timestamptz)",
                    (live["metrics_p2027_03"].start, live["metrics_p2027_03"].end))
        assert [int(x) for x in cur.fetchone()] == [
            int(at(2027, 3, 1).timestamp()), int(at(2027, 4, 1).timestamp())]
    finally:
        conn.close()
    for p in PartitionManager(db).live("metrics"):     # metricstore's reader, zone set
        if not p.is_default:
            assert p.start.utcoffset() == timedelta(0) and p.start.day == 1
            assert (p.start.hour, p.start.minute) == (0, 0)
            assert p.name == part_name("metrics", ym_of(p.start))
