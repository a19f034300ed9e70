"""provision(db): migrations applied and recorded, seeds, settings and (on
PostgreSQL) partitions; idempotent and safe under concurrency (issue 2,
items 1, 5 and 7; story 3.1, AC 8)."""

import multiprocessing
import traceback
from datetime import datetime, timezone

import pytest

import metricstore
from metricstore import ConfigurationError, provision, schema
from metricstore.partitioning import SERIES_TABLES
from metricstore.settings import get_retention_days, set_retention_days

UTC = timezone.utc
# Every migration shipped, oldest first, read from the folder (not a fixed list).
SHIPPED = sorted(p.name[:-3] for p in schema.migrations_dir().iterdir()
                 if p.name[:3].isdigit() and p.name.endswith(".py"))


def count(db, table):
    return db.execute_sql("SELECT count(*) FROM %s" % table).fetchone()[0]


def history(db):
    """Migration names as recorded in the history table, oldest first."""
    return [r[0] for r in db.execute_sql(
        "SELECT name FROM %s ORDER BY id" % schema.HISTORY_TABLE).fetchall()]


def retention_rows(db):
    return db.execute_sql("SELECT id, retention_days FROM tenant_settings").fetchall()


def tables(db):
    return set(db.get_tables(schema=getattr(db, "schema", None)))


def partition_count(db, backend):
    if backend != "postgresql":
        return 0
    return db.execute_sql(
        "SELECT count(*) FROM pg_inherits WHERE inhparent IN (%s)"
        % ", ".join("'%s'::regclass" % t for t in SERIES_TABLES)).fetchone()[0]



# -- migrations -------------------------------------------------------------------

def test_provision_applies_and_records_the_initial_migration(raw_db):
    assert SHIPPED[0] == "001_initial"
    report = provision(raw_db)
    assert report.migrations_applied == SHIPPED
    assert schema.applied(raw_db) == SHIPPED
    assert schema.pending(raw_db) == []
    assert history(raw_db) == SHIPPED
    assert {"metrics", "server_snapshots", "metric_types", "servers",
            "tenant_settings"} <= tables(raw_db)


def test_provision_reports_what_it_did(raw_db, backend):
    report = provision(raw_db)
    assert report.engine in {"sqlite": ("sqlite",), "postgresql": ("postgresql", "citus")}[backend]
    assert report.metric_types_written == 9
    assert report.retention_days == 30
    lines = list(report.lines())
    assert "migrations applied: " + ", ".join(SHIPPED) in lines
    assert "retention_days: 30" in lines


def test_fresh_database_has_the_migration_pending(raw_db):
    assert schema.pending(raw_db) == SHIPPED
    assert schema.applied(raw_db) == []
    assert schema.HISTORY_TABLE not in tables(raw_db)       # asking is read-only


def test_second_provision_is_a_no_op(db, backend):
    before = (history(db), count(db, "metric_types"), retention_rows(db),
              partition_count(db, backend))
    report = provision(db)
    assert report.migrations_applied == []
    assert report.metric_types_written == 0
    assert report.partitions_created == []
    assert report.retention_days == 30
    assert "migrations applied: none (up to date)" in list(report.lines())
    after = (history(db), count(db, "metric_types"), retention_rows(db),
             partition_count(db, backend))
    assert after == before


def test_provision_opens_and_closes_a_closed_database(tenant_url):
    db = metricstore.connect(tenant_url)
    assert db.is_closed()
    provision(db)
    assert db.is_closed()
    with db.connection_context():
        assert history(db) == SHIPPED


def test_migrations_ship_inside_the_package():
    folder = schema.migrations_dir()
    names = {p.name for p in folder.iterdir()}
    assert "001_initial.py" in names
    import metricstore.migrations as shipped
    assert shipped.__name__ == schema.MIGRATIONS_PACKAGE
    import metricstore.seeds.metric_types as seeds
    assert len(seeds.METRIC_TYPES) == 9


def test_provision_does_not_depend_on_the_working_directory(raw_db, tmp_path,
                                                            monkeypatch):
    empty = tmp_path / "somewhere_else"
    empty.mkdir()
    monkeypatch.chdir(empty)
    assert provision(raw_db).migrations_applied == SHIPPED
    assert count(raw_db, "metric_types") == 9


# -- retention setting -------------------------------------------------------------

def test_new_tenant_keeps_30_days_by_default(db):
    assert retention_rows(db) == [(1, 30)]
    assert get_retention_days(db) == 30


def test_retention_can_be_chosen_at_provisioning(raw_db):
    assert provision(raw_db, retention_days=7).retention_days == 7
    assert retention_rows(raw_db) == [(1, 7)]


def test_existing_tenant_keeps_its_retention_when_reprovisioned(raw_db):
    provision(raw_db, retention_days=7)
    assert provision(raw_db).retention_days == 7
    assert retention_rows(raw_db) == [(1, 7)]


def test_reprovisioning_with_a_retention_changes_it(db):
    assert provision(db, retention_days=90).retention_days == 90
    assert retention_rows(db) == [(1, 90)]


@pytest.mark.parametrize("days", [1, 3660])
def test_retention_bounds_are_accepted(raw_db, days):
    provision(raw_db, retention_days=days)
    assert get_retention_days(raw_db) == days


BAD_RETENTION = [0, -1, 3661, 5000, 1.5, 30.0, True, False, "30"]


def test_bad_retention_is_refused_and_nothing_is_provisioned(raw_db):
    for days in BAD_RETENTION:
        with pytest.raises(ConfigurationError) as err:
            provision(raw_db, retention_days=days)
        assert "retention_days" in str(err.value) and "1 to 3660" in str(err.value)
        assert repr(days) in str(err.value)
        assert "metric_types" not in tables(raw_db), days      # all or nothing
    assert provision(raw_db).migrations_applied == SHIPPED
    assert retention_rows(raw_db) == [(1, 30)]


def test_bad_retention_leaves_an_existing_tenant_unchanged(raw_db):
    provision(raw_db, retention_days=7)
    for days in BAD_RETENTION:
        with pytest.raises(ConfigurationError):
            provision(raw_db, retention_days=days)
        with pytest.raises(ConfigurationError):
            set_retention_days(raw_db, days)
    assert retention_rows(raw_db) == [(1, 7)]


def test_set_retention_days_changes_the_setting(db):
    set_retention_days(db, 45)
    assert retention_rows(db) == [(1, 45)]


# -- PostgreSQL partitions -------------------------------------------------------------

@pytest.mark.postgres
def test_provision_creates_default_and_monthly_partitions(raw_db):
    now = datetime.now(UTC)
    report = provision(raw_db)
    expected = set()
    for table in SERIES_TABLES:                 # raw tables and the rollup tiers
        expected.add(table + "_default")
        for i in range(4):
            years, month0 = divmod(now.month - 1 + i, 12)
            expected.add("%s_p%04d_%02d" % (table, now.year + years, month0 + 1))
    assert sorted(report.partitions_created) == sorted(expected)
    assert partition_count(raw_db, "postgresql") == 5 * len(SERIES_TABLES)


@pytest.mark.postgres
def test_provision_at_a_given_instant_creates_that_months_partitions(raw_db):
    report = provision(raw_db, now=datetime(2030, 11, 15, 23, 30, tzinfo=UTC))
    months = sorted(n for n in report.partitions_created if n.startswith("metrics_p"))
    assert months == ["metrics_p2030_11", "metrics_p2030_12", "metrics_p2031_01",
                      "metrics_p2031_02"]


@pytest.mark.sqlite_only
def test_sqlite_has_no_partitions(db):
    assert provision(db).partitions_created == []
    assert "partitions" not in "\n".join(provision(db).lines())


# -- concurrency ------------------------------------------------------------------------

WORKERS = 4


def _provision_in_child(url, barrier, results):
    try:
        db = metricstore.connect(url)
        db.connect()
        barrier.wait(timeout=60)
        report = provision(db)
        db.close()
        results.put(("ok", report.migrations_applied, report.metric_types_written,
                     report.partitions_created))
    except BaseException:  # report everything to the parent
        results.put(("error", traceback.format_exc(), 0, []))


@pytest.mark.slow
def test_concurrent_provisioning_of_a_fresh_tenant(tenant_url, backend):
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(WORKERS)
    results = ctx.Queue()
    procs = [ctx.Process(target=_provision_in_child, args=(tenant_url, barrier, results))
             for _ in range(WORKERS)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0

    errors = [o[1] for o in outcomes if o[0] != "ok"]
    assert errors == []
    assert sorted(o[1] for o in outcomes) == [[]] * (WORKERS - 1) + [SHIPPED]
    assert sum(o[2] for o in outcomes) == 9
    created = [name for o in outcomes for name in o[3]]
    assert len(created) == len(set(created))          # each partition created once

    db = metricstore.connect(tenant_url)
    with db.connection_context():
        assert history(db) == SHIPPED
        assert count(db, "metric_types") == 9
        assert retention_rows(db) == [(1, 30)]
        assert len(created) == partition_count(db, backend)
        assert partition_count(db, backend) == (5 * len(SERIES_TABLES)
                                                if backend == "postgresql" else 0)
