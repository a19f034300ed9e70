"""Citus (issue 11): the dialect, schema-based sharding, ``distribute``.

The Citus tests need a real cluster: ``METRICSTORE_CITUS_URL`` names its
coordinator (e.g. ``postgresql://root@127.0.0.1:9700/test``); without it
they skip with the reason. Each gets a fresh tenant schema there
(``citus_url``). Every answer is checked against plain Python over the rows
the test wrote. The tests that need no Citus run on the DATABASE_URL engine.
"""

import re
from datetime import timedelta

import pytest

import metricstore
from metricstore import ConfigurationError, MetricRepository, SnapshotSample
from metricstore import queries as Q
from metricstore.cli import main
from metricstore.connection import connect
from metricstore.dialects import (CitusDialect, CitusSchemaDialect, PostgresDialect,
                                  dialect_for)
from metricstore.partitioning import PartitionManager
from metricstore.rollups.rebuild import rebuild, tier_status
from metricstore.rollups.sketch import ALPHA
from metricstore.rollups.store import tier_rows
from reference import exact_quantile
from metricstore.rollups.tiers import TIER_1H, TIERS
from metricstore.status import status
from metricstore.timeutil import month_start, to_micros, utcnow

NOW = utcnow().replace(microsecond=0)
STEP = timedelta(seconds=15)
SHARDS = 4                        # small: distributing is DDL on every shard
METRICS = ("cpu_percent", "memory_percent", "connection_count")


def kinds(db, schema):
    """``{table: (citus_table_type, distribution column, colocation id)}``."""
    rows = db.execute_sql(
        "SELECT c.relname, t.citus_table_type, t.distribution_column, t.colocation_id "
        "FROM public.citus_tables t JOIN pg_class c ON c.oid = t.table_name "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s "
        "AND NOT c.relispartition", (schema,)).fetchall()
    return {name: tuple(rest) for name, *rest in rows}


def analyzed(db, table):
    """Whether every shard placement of ``table`` has statistics (was ANALYZEd)."""
    rows = db.execute_sql(
        "SELECT success, result FROM run_command_on_placements(%s::regclass, "
        "$$SELECT reltuples >= 0 FROM pg_class WHERE oid = '%%s'::regclass$$)",
        (table,)).fetchall()
    return bool(rows) and all(row == (True, "t") for row in rows)


def schema_of(url):
    return re.search(r"schema=(\w+)", url).group(1)


def plain_schema_tenant(url):
    """A tenant provisioned in a plain (not distributed) schema, unsharded."""
    admin = connect(url.split("?")[0])
    admin.execute_sql("CREATE SCHEMA %s" % schema_of(url))
    admin.close()
    db = connect(url)
    db.connect()
    metricstore.provision(db)
    return db


def fleet(repo, servers=6, points=40):
    """Servers with samples of METRICS, snapshots for all but the last, and
    one server with nothing; returns (ids, rows, snapshots, silent id)."""
    ids = [repo.add_server("srv-%d" % i) for i in range(servers)]
    rows, snaps = [], []
    for k, sid in enumerate(ids[:-1]):
        for i in range(points):
            t = NOW - STEP * (i + k)                      # servers end at different times
            for j, metric in enumerate(METRICS):
                rows.append((sid, metric, float((i * 7 + k * 3 + j) % 97), t))
            if k < servers - 2:
                snaps.append(SnapshotSample(sid, t, float(i % 100), float(k), i, "online"))
    assert repo.record_many(rows).inserted == len(rows)
    assert repo.record_snapshots(snaps).inserted == len(snaps)
    return ids, rows, snaps, ids[-1]


def check_queries(repo, ids, rows, snaps, silent):
    """Every query the issue names, against plain Python over ``rows``."""
    cpu = [(sid, t, v) for sid, m, v, t in rows if m == "cpu_percent"]
    last = {}
    for sid, t, v in cpu:
        if sid not in last or t > last[sid][0]:
            last[sid] = (t, v)
    got = repo.latest("cpu_percent")
    assert [(r.server_id, r.collected_at, r.value) for r in got] == \
        [(sid, *last[sid]) for sid in sorted(last)]
    some = ids[1:3]
    assert [r.server_id for r in repo.latest("cpu_percent", server_ids=some)] == some

    newest = {}
    for s in snaps:
        if s.server_id not in newest or s.collected_at > newest[s.server_id].collected_at:
            newest[s.server_id] = s
    entries = repo.latest_snapshots(now=NOW)
    assert [e.server_id for e in entries] == ids
    for e in entries:
        want = newest.get(e.server_id)
        assert e.collected_at == (want.collected_at if want else None)
        assert e.cpu_percent == (want.cpu_percent if want else None)

    start, end = NOW - timedelta(minutes=5), NOW + STEP
    in_range = {}
    for sid, t, v in cpu:
        if start <= t < end:
            in_range.setdefault(sid, []).append(v)
    avg = {sid: sum(v) / len(v) for sid, v in in_range.items()}
    want = sorted(avg, key=lambda sid: (-avg[sid], sid))[:3]
    top = repo.top("cpu_percent", start, end, n=3)
    assert [r.server_id for r in top] == want
    assert [r.value for r in top] == pytest.approx([avg[s] for s in want])
    low = repo.top("cpu_percent", start, end, n=2, stat="max", ascending=True)
    mx = {sid: max(v) for sid, v in in_range.items()}
    assert [r.server_id for r in low] == sorted(mx, key=lambda s: (mx[s], s))[:2]

    assert [s.id for s in repo.silent_servers(NOW - timedelta(minutes=1))] == [silent]
    cut = NOW - STEP * 2                # servers 3+ stopped before it (k >= 3 ends earlier)
    active = {sid for sid, _, _, t in rows if t >= cut} | \
        {s.server_id for s in snaps if s.collected_at >= cut}
    assert [s.id for s in repo.silent_servers(cut)] == [i for i in ids if i not in active]

    series = list(repo.series(ids[0], "cpu_percent", NOW - timedelta(hours=1), end))
    assert [(p.collected_at, p.value) for p in series] == \
        sorted((t, v) for sid, t, v in cpu if sid == ids[0] and t < end)


# -- the dialect is chosen once ------------------------------------------------------

@pytest.mark.postgres
def test_plain_postgresql_keeps_the_postgres_dialect_and_its_index_probes(db):
    if db.execute_sql("SELECT 1 FROM pg_extension WHERE extname = 'citus'").fetchone():
        pytest.skip("DATABASE_URL names a Citus database: the Citus tests cover it")
    dialect = dialect_for(db)
    assert type(dialect) is PostgresDialect and dialect.name == "postgresql"
    assert "LATERAL" in dialect.latest and "LATERAL" in dialect.latest_snapshots


def test_citus_is_detected_once_on_first_use(citus_url):
    db = connect(citus_url)
    deferred = dialect_for(db)
    assert db.is_closed()                  # choosing waits for the first real use
    assert deferred.name == "citus" and deferred.version.startswith("13.")
    dialect = dialect_for(db)
    assert type(dialect) is CitusDialect and dialect_for(db) is dialect   # cached
    db.close()


def test_distribute_off_citus_names_the_fix(db):
    with pytest.raises(ConfigurationError, match="Citus"):
        metricstore.distribute(db)


# -- (a) schema-based sharding: one tenant = one distributed schema ---------------------

def test_provisioning_a_tenant_schema_makes_it_a_distributed_schema(citus_url):
    db = connect(citus_url)
    db.connect()
    report = metricstore.provision(db)
    assert report.engine == "citus"
    schema = schema_of(citus_url)
    (group,) = db.execute_sql("SELECT colocationid FROM pg_dist_schema "
                              "WHERE schemaid = %s::regnamespace", (schema,)).fetchone()
    tables = kinds(db, schema)
    for table in ("servers", "metrics", "server_snapshots", "tenant_settings",
                  "maintenance_runs", "migratehistory"):
        assert tables[table][0] == "schema" and tables[table][2] == group
    assert analyzed(db, "servers") and analyzed(db, "metric_types")
    assert metricstore.provision(db).migrations_applied == []      # idempotent
    db.close()


def test_a_distributed_schema_tenant_answers_like_plain_python(citus_url):
    db = connect(citus_url)
    db.connect()
    assert type(dialect_for(db)) is CitusDialect          # no schema yet
    metricstore.provision(db)
    assert type(dialect_for(db)) is CitusSchemaDialect    # provisioning made one
    repo = MetricRepository(db, clock=lambda: NOW)
    ids, rows, snaps, silent = fleet(repo)
    again = repo.record_many(rows)
    assert (again.inserted, again.duplicates) == (0, len(rows))
    check_queries(repo, ids, rows, snaps, silent)
    db.close()
    # Every query is a router query there: the single node's probes stand.
    fresh = connect(citus_url)
    fresh.connect()
    dialect = dialect_for(fresh)
    assert type(dialect) is CitusSchemaDialect and "LATERAL (SELECT" in dialect.latest
    check_queries(MetricRepository(fresh, clock=lambda: NOW), ids, rows, snaps, silent)
    plan = "\n".join(r[0] for r in fresh.execute_sql(
        "EXPLAIN " + dialect.sql(dialect.latest, filter=""), {"mid": 1}).fetchall())
    assert re.search(r"Task Count: 1\b", plan), plan
    fresh.close()


# -- (b) row-based sharding of one large tenant ----------------------------------------

def test_distribute_makes_reference_and_colocated_tables_idempotently(citus_url, capsys):
    db = connect(citus_url)
    db.connect()
    report = metricstore.distribute(db, shard_count=SHARDS)
    assert "001_initial" in report.provisioned.migrations_applied
    tables = kinds(db, schema_of(citus_url))
    for table in ("servers", "metric_types", "tenant_settings", "maintenance_runs",
                  "migratehistory"):
        assert tables[table][0] == "reference", table
    assert tables["metrics"][:2] == ("distributed", "server_id")
    assert tables["server_snapshots"][:2] == ("distributed", "server_id")
    assert tables["metrics"][2] == tables["server_snapshots"][2]       # co-located
    (shards,) = db.execute_sql("SELECT count(*) FROM pg_dist_shard WHERE logicalrelid = "
                               "'metrics'::regclass").fetchone()
    assert shards == SHARDS
    assert analyzed(db, "servers") and analyzed(db, "metric_types")
    assert metricstore.distribute(db).changed == []
    db.close()
    assert main(["distribute", citus_url]) == 0
    assert "already distributed: nothing to do" in capsys.readouterr().out


def test_distribute_again_shards_a_table_a_later_migration_added(citus_url):
    db = connect(citus_url)
    db.connect()
    metricstore.distribute(db, shard_count=SHARDS)
    # A tier table as the rollups migration makes one: partitioned by time,
    # keyed by server_id.
    db.execute_sql("CREATE TABLE rollup_test (server_id int, bucket timestamptz, v float, "
                   "PRIMARY KEY (server_id, bucket)) PARTITION BY RANGE (bucket)")
    db.execute_sql("CREATE TABLE rollup_test_default PARTITION OF rollup_test DEFAULT")
    assert metricstore.distribute(db).changed == ["rollup_test (distributed by server_id)"]
    tables = kinds(db, schema_of(citus_url))
    assert tables["rollup_test"] == ("distributed", "server_id", tables["metrics"][2])
    db.close()


def test_a_distributed_tenant_answers_like_plain_python(citus_url):
    db = connect(citus_url)
    db.connect()
    metricstore.distribute(db, shard_count=SHARDS)
    repo = MetricRepository(db, clock=lambda: NOW)
    ids, rows, snaps, silent = fleet(repo)
    again = repo.record_many(rows)
    assert (again.inserted, again.duplicates) == (0, len(rows))
    mixed = rows[:10] + [(ids[0], "cpu_percent", 1.0, NOW + STEP)]
    assert (lambda r: (r.inserted, r.duplicates))(repo.record_many(mixed)) == (1, 10)
    check_queries(repo, ids, rows + mixed[-1:], snaps, silent)

    d = dialect_for(db)
    metric_times = [t for _, _, _, t in rows + mixed[-1:]]
    assert d.row_count(db, "metrics") == (len(rows) + 1, True)
    snap_times = [s.collected_at for s in snaps]
    for table, times in (("metrics", metric_times), ("server_snapshots", snap_times)):
        first, last = db.execute_sql(d.time_span.format(table=table)).fetchone()
        assert (d.time_result(first), d.time_result(last)) == (min(times), max(times))
    db.close()


def test_status_of_a_sharded_tenant_with_rollup_tiers(citus_url):
    db = connect(citus_url)
    db.connect()
    metricstore.distribute(db, shard_count=SHARDS)
    repo = MetricRepository(db, clock=lambda: NOW)
    _, rows, snaps, _ = fleet(repo, servers=3, points=5)
    result = status(db, now=NOW)
    assert result.rows["metrics"] == (len(rows), True)
    five = {t.name: t for t in result.tiers}["5m"]
    # the metrics' series, and each snapshot column's series (rollups.snapshots)
    snapshot_series = {(s.server_id, column, to_micros(s.collected_at) // 300_000_000)
                       for s in snaps for column in ("cpu_percent", "memory_percent",
                                                     "connection_count")
                       if getattr(s, column) is not None}
    assert five.rows == len({(s, m, to_micros(t) // 300_000_000) for s, m, _, t in rows}) \
        + len(snapshot_series)
    assert five.lag == timedelta(0)
    db.close()


# -- the rollup tiers, in both models ------------------------------------------------

def rollup_fleet(repo):
    """Three servers, a gauge and a counter (with resets) every 15 s for 26 h."""
    ids = [repo.add_server("roll-%d" % i) for i in range(3)]
    rows = []
    for sid in ids:
        c = 0
        for i in range(1, 26 * 240):
            t = NOW - STEP * i
            c = 5 if i % 997 == 0 else c + (i * 7919 + sid) % 50
            rows.append((sid, "cpu_percent", float((i * 31 + sid * 7) % 97), t))
            rows.append((sid, "disk_io_reads", float(c), t))
    assert repo.record_many(rows).inserted == len(rows)
    return ids, rows


def check_rollups(db, url, capsys):
    """Every rollup call (reads served from tiers, status, rebuild, the CLI)
    against plain Python over the rows written, or against the raw answer."""
    repo = MetricRepository(db, clock=lambda: NOW)
    ids, rows = rollup_fleet(repo)
    start, end = NOW - timedelta(hours=25, minutes=7, seconds=3), NOW
    hour = timedelta(hours=1)
    cpu = {sid: [(t, v) for s, m, v, t in rows if s == sid and m == "cpu_percent"
                 and start <= t < end] for sid in ids}

    got = repo.buckets(ids[0], "cpu_percent", start, end, hour,
                       stats=("avg", "max", "count", "p95"))
    assert "1h" in got.resolution and got.error == ALPHA
    groups = {}
    for t, v in cpu[ids[0]]:
        groups.setdefault(t.replace(minute=0, second=0), []).append(v)
    assert [b.start for b in got] == sorted(groups)
    for b in got:
        values = groups[b.start]
        assert (b.count, b.max) == (len(values), max(values))
        assert b.avg == pytest.approx(sum(values) / len(values), rel=1e-12)
        assert abs(b.p95 - exact_quantile(values, 0.95)) <= ALPHA * exact_quantile(values, 0.95)

    summary = repo.summary(ids[1], "cpu_percent", start, end, stats=("avg", "count", "p50"))
    values = [v for _, v in cpu[ids[1]]]
    assert summary.resolution != "raw" and summary["count"] == len(values)
    assert summary["avg"] == pytest.approx(sum(values) / len(values), rel=1e-12)
    assert abs(summary["p50"] - exact_quantile(values, 0.5)) <= ALPHA * exact_quantile(values, 0.5)

    served = repo.rate(ids[2], "disk_io_reads", start, end, hour)
    raw = repo.rate(ids[2], "disk_io_reads", start, end, hour, resolution="raw")
    assert served.resolution != "raw" and len(served) == len(raw) > 20
    assert [(x.start, x.pairs) for x in served] == [(x.start, x.pairs) for x in raw]
    assert [x.rate for x in served] == pytest.approx([x.rate for x in raw], rel=1e-12)

    for stat, of in (("avg", lambda v: sum(v) / len(v)), ("max", max),
                     ("p95", lambda v: exact_quantile(v, 0.95))):
        want = {sid: of([v for _, v in cpu[sid]]) for sid in ids}
        top = repo.top("cpu_percent", start, end, n=3, stat=stat)
        assert top.resolution != "raw", stat
        assert sorted(r.server_id for r in top) == sorted(ids)
        for r in top:
            bound = ALPHA * want[r.server_id] if stat == "p95" else 1e-9 * want[r.server_id]
            assert abs(r.value - want[r.server_id]) <= bound, stat

    for stat in ("avg", "max", "p95"):
        heat = repo.heatmap("cpu_percent", start, end, hour, stat=stat)
        assert heat.resolution != "raw" and sorted(heat.rows) == sorted(ids), stat
        for sid in ids:
            per_server = {b.start: b.stats[stat] for b in repo.buckets(
                sid, "cpu_percent", start, end, hour, stats=(stat,))}
            cells = dict(zip(heat.starts, heat.rows[sid]))
            assert {t for t, v in cells.items() if v is not None} == set(per_server), stat
            assert [cells[t] for t in sorted(per_server)] == pytest.approx(
                [per_server[t] for t in sorted(per_server)], rel=1e-12), stat

    tiers = {t.name: t for t in tier_status(db, now=NOW)}
    for tier in TIERS:
        w = tier.width_us
        buckets = {(s, m, to_micros(t) // w * w) for s, m, _, t in rows}
        assert (tiers[tier.name].rows, tiers[tier.name].exact) == (len(buckets), True)
        assert to_micros(tiers[tier.name].first) == min(b for *_, b in buckets)
        assert tiers[tier.name].lag == timedelta(0)

    mid = repo.metric_rules()["disk_io_reads"].id
    before = tier_rows(db, TIER_1H, [(ids[2], mid, 0, 2 ** 62)])
    db.execute_sql("DELETE FROM rollup_1h")
    rebuild(db, NOW - timedelta(days=2), NOW, now=NOW)
    assert tier_rows(db, TIER_1H, [(ids[2], mid, 0, 2 ** 62)]) == before
    assert main(["rollups", "status", "--url", url]) == 0
    assert "5m" in capsys.readouterr().out
    assert main(["rollups", "rebuild", "--start", "-1d", "--url", url]) == 0
    assert "rebuilt" in capsys.readouterr().out
    assert tier_rows(db, TIER_1H, [(ids[2], mid, 0, 2 ** 62)]) == before
    assert main(["status", "--url", url]) in (0, 1)          # 1: no maintenance run yet
    assert "rollup_5m:" in capsys.readouterr().out


def test_rollup_tiers_on_a_tenant_sharded_by_server(citus_url, capsys):
    db = connect(citus_url)
    db.connect()
    metricstore.distribute(db, shard_count=SHARDS)
    tables = kinds(db, schema_of(citus_url))
    for tier in TIERS:
        assert tables[tier.table] == ("distributed", "server_id", tables["metrics"][2])
    check_rollups(db, citus_url, capsys)
    db.close()


def test_rollup_tiers_on_a_distributed_schema_tenant(citus_url, capsys):
    db = connect(citus_url)
    db.connect()
    metricstore.provision(db)
    assert type(dialect_for(db)) is CitusSchemaDialect
    assert kinds(db, schema_of(citus_url))["rollup_5m"][0] == "schema"
    check_rollups(db, citus_url, capsys)
    db.close()


def test_one_server_queries_are_router_queries(citus_url):
    db = connect(citus_url)
    db.connect()
    metricstore.distribute(db, shard_count=SHARDS)
    repo = MetricRepository(db, clock=lambda: NOW)
    ids = fleet(repo, servers=3, points=5)[0]
    d = dialect_for(db)
    plan = "\n".join(r[0] for r in db.execute_sql(
        "EXPLAIN " + d.sql(Q.SERIES), {"sid": ids[0], "mid": 1, "start": NOW - STEP * 9,
                                       "end": NOW, "limit": 10}).fetchall())
    assert re.search(r"Task Count: 1\b", plan), plan
    latest = "\n".join(r[0] for r in db.execute_sql(
        "EXPLAIN " + d.sql(d.latest, filter=""), {"mid": 1}).fetchall())
    assert "Task Count: %d" % SHARDS in latest       # one task per shard, in parallel
    assert "Limit" in latest and "Index" in latest    # each one probes every server
    db.close()


def test_one_server_tier_reads_are_router_queries(citus_url):
    """buckets, summary and rate served from the tiers (and raw at the
    edges) send every statement of the read to the server's shard only."""
    db = connect(citus_url)
    db.connect()
    metricstore.distribute(db, shard_count=SHARDS)
    repo = MetricRepository(db, clock=lambda: NOW)
    ids, _ = rollup_fleet(repo)
    sent = []
    execute, d = db.execute_sql, dialect_for(db)
    copy_out = d._copy_out

    def spy(sql, params=None, *args, **kwargs):
        if re.search(r"\b(rollup_\w+|metrics)\b", sql) and \
                sql.lstrip().upper().startswith("SELECT"):
            sent.append((sql, params))
        return execute(sql, params, *args, **kwargs)

    def copy_spy(db_, sql, params, *args):       # reads by binary COPY (rollups/columns.py)
        sent.append((sql, params))
        return copy_out(db_, sql, params, *args)

    db.execute_sql, d._copy_out = spy, copy_spy
    start, end = NOW - timedelta(hours=25, minutes=7, seconds=3), NOW
    got = repo.buckets(ids[1], "cpu_percent", start, end, timedelta(hours=1),
                       stats=("avg", "p95"))
    assert "1h" in got.resolution and "raw" in got.resolution
    repo.summary(ids[1], "cpu_percent", start, end, stats=("avg", "p95"))
    rates = repo.rate(ids[1], "disk_io_reads", start, end, timedelta(hours=1))
    assert rates.resolution != "raw"
    del db.execute_sql, d._copy_out
    # buckets and summary: one statement each (tier and raw segments); rate:
    # its raw and tier lookups
    assert len(sent) >= 5 and sum("rollup_" in sql and "metrics" in sql for sql, _ in sent) >= 2
    for sql, params in sent:
        plan = "\n".join(r[0] for r in db.execute_sql("EXPLAIN " + sql, params).fetchall())
        assert re.search(r"Task Count: 1\b", plan) and "Subplan" not in plan, (sql, plan)
    db.close()


def test_sizes_and_counts_come_from_the_shards(citus_url):
    db = connect(citus_url)
    db.connect()
    metricstore.distribute(db, shard_count=SHARDS)
    repo = MetricRepository(db, clock=lambda: NOW)
    rows = fleet(repo, servers=4, points=300)[1]
    d = dialect_for(db)
    assert d.row_count(db, "metrics") == (len(rows), True)
    (on_shards,) = db.execute_sql(
        "SELECT sum(s.shard_size) FROM pg_catalog.citus_shards s JOIN pg_class c "
        "ON c.oid = s.table_name JOIN pg_inherits i ON i.inhrelid = c.oid "
        "WHERE i.inhparent = 'metrics'::regclass").fetchone()
    assert d.table_bytes(db, "metrics") == on_shards > len(rows) * 20
    month = next(p for p in PartitionManager(db).live("metrics")
                 if not p.is_default and p.start == month_start(NOW))
    in_month = sum(1 for *_, t in rows if month_start(t) == month.start)
    assert PartitionManager(db).figures(month)[0] == in_month
    db.close()


def test_distributing_a_loaded_tenant_moves_its_rows_and_leaves_nothing_behind(citus_url):
    db = plain_schema_tenant(citus_url)
    repo = MetricRepository(db, clock=lambda: NOW)
    ids, rows, snaps, silent = fleet(repo)
    assert dialect_for(db).citus_kind(db, "metrics") is None        # still local
    metricstore.distribute(db, shard_count=SHARDS)
    assert dialect_for(db).row_count(db, "metrics") == (len(rows), True)
    assert local_bytes(db, schema_of(citus_url)) == {}
    check_queries(repo, ids, rows, snaps, silent)
    db.close()


def local_bytes(db, schema):
    """Non-empty heap files of the tenant's tables on the coordinator itself
    (a distributed table's coordinator relation should hold nothing)."""
    return dict(db.execute_sql(
        "SELECT c.relname, pg_relation_size(c.oid) FROM pg_class c JOIN pg_namespace n "
        "ON n.oid = c.relnamespace JOIN pg_dist_partition p ON p.logicalrelid = c.oid "
        "WHERE n.nspname = %s AND c.relkind = 'r' AND p.partmethod = 'h' "
        "AND pg_relation_size(c.oid) > 0", (schema,)).fetchall())


def test_rows_moved_out_of_the_default_partition_leave_no_coordinator_copy(citus_url):
    db = connect(citus_url)
    db.connect()
    metricstore.distribute(db, shard_count=SHARDS, retention_days=3660)
    repo = MetricRepository(db, clock=lambda: NOW)
    sid = repo.add_server("backfilled")
    old = month_start(month_start(NOW) - timedelta(days=75))        # no partition for it
    db.execute_sql("INSERT INTO metrics SELECT %s, 1, g, %s + g * interval '1 minute' "
                   "FROM generate_series(0, 499) g", (sid, old))     # bypasses metricstore
    manager = PartitionManager(db, clock=lambda: NOW)
    assert manager.default_rows("metrics") == 500
    plan = metricstore.maintain(db, dry_run=True, now=NOW).plan
    assert [(c.name, c.waiting_rows) for c in plan.create if c.table == "metrics"] == \
        [("metrics_p%04d_%02d" % (old.year, old.month), 500)]
    result = metricstore.maintain(db, now=NOW)
    assert result.moved == 500 and manager.default_rows("metrics") == 0
    name = "metrics_p%04d_%02d" % (old.year, old.month)
    assert dialect_for(db).citus_kind(db, name) == "distributed"
    assert local_bytes(db, schema_of(citus_url)) == {}
    month = next(p for p in manager.live("metrics") if p.name == name)
    rows, size = manager.figures(month)
    assert rows == 500 and size > 0
    assert [p.value for p in repo.series(sid, "cpu_percent", old, old + timedelta(days=1))] \
        == [float(g) for g in range(500)]
    db.close()


def worker_url(db, url):
    """The same tenant URL on the first worker node."""
    host, port = db.execute_sql("SELECT nodename, nodeport FROM pg_dist_node "
                                "WHERE groupid > 0 ORDER BY groupid LIMIT 1").fetchone()
    return re.sub(r"@[^/]+/", "@%s:%d/" % (host, port), url)


def test_a_collector_on_a_worker_registers_servers_and_writes_samples(citus_url):
    db = connect(citus_url)
    db.connect()
    metricstore.distribute(db, shard_count=SHARDS)
    sid = MetricRepository(db).add_server("srv-a")
    worker = connect(worker_url(db, citus_url))
    worker.connect()
    assert not dialect_for(worker).is_coordinator(worker)
    repo = MetricRepository(worker, clock=lambda: NOW)
    assert repo.add_server("srv-a") == sid                          # already registered
    new = repo.add_server("srv-new")           # its id is drawn on the coordinator
    assert new not in (None, sid) and repo.add_server("srv-new") == new
    assert MetricRepository(db).add_server("srv-new") == new
    assert [s.name for s in repo.servers()] == ["srv-a", "srv-new"]
    rows = [(s, "cpu_percent", float(i), NOW - STEP * i) for s in (sid, new) for i in range(50)]
    assert repo.record_many(rows).inserted == 100
    assert repo.record_many(rows).duplicates == 100
    assert metricstore.get_retention_days(worker) == 30            # reference table
    worker.close()
    for s in (sid, new):
        back = MetricRepository(db).series(s, "cpu_percent", NOW - STEP * 60, NOW + STEP)
        assert [p.value for p in back] == [float(i) for i in reversed(range(50))]
    db.close()


def test_a_collector_on_the_worker_of_a_distributed_schema_registers_servers(citus_url):
    db = connect(citus_url)
    db.connect()
    metricstore.provision(db)
    (node,) = db.execute_sql(
        "SELECT DISTINCT nodename || ':' || nodeport FROM pg_catalog.citus_shards "
        "WHERE table_name = 'servers'::regclass").fetchall()
    worker = connect(re.sub(r"@[^/]+/", "@%s/" % node[0], citus_url))
    worker.connect()
    repo = MetricRepository(worker, clock=lambda: NOW)
    ids = [repo.add_server("w-%d" % i) for i in range(3)]
    assert len(set(ids)) == 3 and [repo.add_server("w-%d" % i) for i in range(3)] == ids
    assert [(s.id, s.name) for s in MetricRepository(db).servers()] == \
        [(i, "w-%d" % k) for k, i in enumerate(ids)]
    assert repo.record_many([(ids[1], "cpu_percent", 5.0, NOW)]).inserted == 1
    worker.close()
    db.close()


def test_a_distributed_schema_cannot_be_resharded_in_place(citus_url):
    db = connect(citus_url)
    db.connect()
    metricstore.provision(db)
    with pytest.raises(ConfigurationError, match="distributed schema"):
        metricstore.distribute(db)
    db.close()
