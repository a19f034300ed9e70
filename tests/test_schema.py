"""The provisioned schema as the database catalog reports it (issue 2, items 3-4;
story 3.1, AC 1-4): tables, columns, keys, indexes and, on PostgreSQL, the
monthly range partitions."""

import re
from datetime import datetime, timezone

import pytest

from metricstore import provision
from metricstore.dialects import dialect_for
from metricstore.models import (MODELS, MaintenanceRun, Metric, MetricType, Server,
                                ServerSnapshot, TenantSettings)
from metricstore.partitioning import MARKER

UTC = timezone.utc
SERIES = ("metrics", "server_snapshots")


@pytest.fixture
def db(shared_db):
    """The catalog tests only read, so they share one provisioned tenant."""
    return shared_db


def columns(db, table):
    return dialect_for(db).table_columns(db, table)


def indexes(db, table):
    return dialect_for(db).table_indexes(db, table)


def primary_key(db, backend, table):
    """Primary key columns in key order (not INCLUDEd ones), read from the catalog."""
    if backend == "sqlite":
        rows = db.execute_sql("SELECT name FROM pragma_table_info(?) WHERE pk > 0 "
                              "ORDER BY pk", (table,)).fetchall()
    else:
        rows = db.execute_sql(
            "SELECT a.attname FROM pg_index x, unnest(x.indkey) WITH ORDINALITY k(n, o) "
            "JOIN pg_attribute a ON a.attnum = k.n "
            "WHERE x.indrelid = %s::regclass AND x.indisprimary "
            "AND a.attrelid = x.indrelid AND k.o <= x.indnkeyatts ORDER BY k.o",
            ('"%s"' % table,)).fetchall()
    return tuple(r[0] for r in rows)


# -- tables and columns ---------------------------------------------------------

EXPECTED_COLUMNS = {
    "metric_types": {"id", "name", "unit", "description", "kind"},
    "metrics": {"server_id", "metric_type_id", "value", "collected_at"},
    "server_snapshots": {"server_id", "cpu_percent", "memory_percent", "connection_count",
                         "status", "collected_at"},
    "servers": {"id", "name", "created_at"},
    "tenant_settings": {"id", "retention_days", "retention_5m_days", "retention_1h_days",
                        "retention_1d_days", "updated_at"},
}


@pytest.mark.parametrize("table", sorted(EXPECTED_COLUMNS))
def test_table_has_exactly_the_specified_columns(db, table):
    assert set(columns(db, table)) == EXPECTED_COLUMNS[table]


def test_metrics_has_a_natural_key_instead_of_a_surrogate_id(db):
    assert "id" not in columns(db, "metrics")
    assert "id" not in columns(db, "server_snapshots")


@pytest.mark.parametrize("table,column", [
    ("metrics", "server_id"), ("metrics", "metric_type_id"), ("metrics", "value"),
    ("metrics", "collected_at"), ("server_snapshots", "server_id"),
    ("server_snapshots", "status"), ("server_snapshots", "collected_at"),
    ("metric_types", "name"), ("metric_types", "kind"), ("servers", "name"),
    ("tenant_settings", "retention_days"),
])
def test_required_columns_are_not_null(db, table, column):
    _, notnull = columns(db, table)[column]
    assert notnull


@pytest.mark.parametrize("table,column", [
    ("metric_types", "unit"), ("metric_types", "description"),
    ("server_snapshots", "cpu_percent"), ("server_snapshots", "memory_percent"),
    ("server_snapshots", "connection_count"),
])
def test_optional_columns_are_nullable(db, table, column):
    _, notnull = columns(db, table)[column]
    assert not notnull


@pytest.mark.parametrize("table,column", [
    ("metrics", "collected_at"), ("server_snapshots", "collected_at"),
    ("servers", "created_at"), ("tenant_settings", "updated_at"),
])
def test_time_columns_are_timestamptz_on_postgresql_and_integer_on_sqlite(db, backend,
                                                                          table, column):
    type_, _ = columns(db, table)[column]
    expected = "timestamp with time zone" if backend == "postgresql" else "INTEGER"
    assert type_ == expected


def test_metric_value_is_a_double_precision_number(db, backend):
    type_, _ = columns(db, "metrics")["value"]
    assert type_ == ("double precision" if backend == "postgresql" else "REAL")


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_model_columns_match_the_migrated_table(db, model):
    """Models and migrations cannot drift apart: same columns, same nullability."""
    catalog = columns(db, model._meta.table_name)
    assert set(model._meta.columns) == set(catalog)
    pk_fields = set(model._meta.get_primary_keys())
    for name, field in model._meta.columns.items():
        if field in pk_fields:
            continue
        _, notnull = catalog[name]
        assert notnull == (not field.null), name


def test_every_model_is_checked():
    assert set(MODELS) == {Server, MetricType, Metric, ServerSnapshot, TenantSettings,
                           MaintenanceRun}


def test_model_primary_keys_match_the_catalog(db, backend):
    for model in MODELS:
        expected = tuple(f.column_name for f in model._meta.get_primary_keys())
        assert primary_key(db, backend, model._meta.table_name) == expected, model


# -- keys and indexes ------------------------------------------------------------------

@pytest.mark.parametrize("table", SERIES)
def test_server_time_index_exists(db, table):
    """AC 4: an index leading with (server_id, collected_at) serves time-range reads."""
    leading = [cols[:2] for _, cols in indexes(db, table).values()]
    assert ("server_id", "collected_at") in leading


def test_metrics_has_a_plain_server_time_index(db):
    assert (False, ("server_id", "collected_at")) in indexes(db, "metrics").values()


def test_snapshots_server_time_index_is_the_primary_key(db, backend):
    assert primary_key(db, backend, "server_snapshots") == ("server_id", "collected_at")
    assert list(indexes(db, "server_snapshots").values()) == [
        (True, ("server_id", "collected_at"))]


def test_metrics_primary_key_is_server_metric_time(db, backend):
    assert primary_key(db, backend, "metrics") == (
        "server_id", "metric_type_id", "collected_at")


def test_metrics_unique_key_is_server_metric_time(db):
    unique = [cols for is_unique, cols in indexes(db, "metrics").values() if is_unique]
    assert unique == [("server_id", "metric_type_id", "collected_at")]


@pytest.mark.parametrize("table", SERIES)
def test_every_unique_key_includes_server_id_and_collected_at(db, table):
    unique = [cols for is_unique, cols in indexes(db, table).values() if is_unique]
    assert unique, "no unique key on %s" % table
    for cols in unique:
        assert "server_id" in cols and "collected_at" in cols, cols


@pytest.mark.parametrize("table", ["metric_types", "servers"])
def test_names_are_unique(db, table):
    assert (True, ("name",)) in indexes(db, table).values()


def redundant_pairs(index_map):
    """(covered, covering) pairs: an index whose keys lead another index's keys.

    A non-unique index is covered by any index that starts with its columns;
    a unique one only by an index with the same columns.
    """
    out = []
    items = sorted(index_map.items())
    for name_a, (unique_a, cols_a) in items:
        for name_b, (_, cols_b) in items:
            if name_a == name_b:
                continue
            same = cols_a == cols_b
            prefix = cols_b[:len(cols_a)] == cols_a
            if same or (prefix and not unique_a):
                out.append((name_a, name_b))
    return out


def test_redundancy_check_finds_prefix_and_exact_duplicates():
    found = redundant_pairs({
        "pk": (True, ("server_id", "metric_type_id", "collected_at")),
        "by_server": (False, ("server_id",)),
        "by_server_type": (False, ("server_id", "metric_type_id")),
        "by_time": (False, ("collected_at",)),
        "uq_server": (True, ("server_id",)),
    })
    assert ("by_server", "pk") in found
    assert ("by_server_type", "pk") in found
    assert ("by_server", "uq_server") in found and ("uq_server", "by_server") in found
    assert not any(a == "by_time" for a, _ in found)
    assert ("uq_server", "pk") not in found


@pytest.mark.parametrize("table", sorted(EXPECTED_COLUMNS) + ["maintenance_runs"])
def test_no_index_is_covered_by_another(db, table):
    assert redundant_pairs(indexes(db, table)) == []


# -- SQLite storage -------------------------------------------------------------------

@pytest.mark.sqlite_only
@pytest.mark.parametrize("table", SERIES)
def test_sqlite_series_tables_are_clustered_without_rowid(db, table):
    (sql,) = db.execute_sql("SELECT sql FROM sqlite_master WHERE type = 'table' "
                            "AND name = ?", (table,)).fetchone()
    assert re.search(r"\)\s*WITHOUT\s+ROWID\s*$", sql, re.IGNORECASE), sql


@pytest.mark.sqlite_only
def test_sqlite_other_tables_keep_their_rowid(db):
    (sql,) = db.execute_sql("SELECT sql FROM sqlite_master WHERE type = 'table' "
                            "AND name = 'metric_types'").fetchone()
    assert "WITHOUT ROWID" not in sql.upper()


# -- PostgreSQL partitioning -------------------------------------------------------------

def month_starts(first_year, first_month, count):
    """``count`` consecutive UTC month starts from (year, month)."""
    out = []
    for i in range(count):
        years, month0 = divmod(first_month - 1 + i, 12)
        out.append(datetime(first_year + years, month0 + 1, 1, tzinfo=UTC))
    return out


def test_month_starts_roll_over_the_year():
    assert month_starts(2026, 11, 4) == [
        datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC), datetime(2027, 2, 1, tzinfo=UTC)]


BOUND = re.compile(r"^FOR VALUES FROM \('([^']+)'\) TO \('([^']+)'\)$")


def parse_pg_timestamptz(text):
    """'2026-11-01 00:00:00+00' (or +05:30) -> aware datetime."""
    text = text.replace(" ", "T", 1)
    if re.search(r"[+-]\d\d$", text):
        text += ":00"
    value = datetime.fromisoformat(text)
    assert value.utcoffset() is not None, text
    return value


def partitions(db, table):
    """[(name, bound expression, comment)] of ``table`` from pg_inherits."""
    return db.execute_sql(
        "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid), "
        "obj_description(c.oid, 'pg_class') "
        "FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = %s::regclass ORDER BY c.relname", (table,)).fetchall()


@pytest.mark.postgres
@pytest.mark.parametrize("table", SERIES)
def test_series_tables_are_range_partitioned_on_collected_at(db, table):
    rows = db.execute_sql(
        "SELECT p.partstrat, p.partnatts, a.attname FROM pg_partitioned_table p "
        "JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0] "
        "WHERE p.partrelid = %s::regclass", (table,)).fetchall()
    assert rows == [("r", 1, "collected_at")]


@pytest.mark.postgres
@pytest.mark.parametrize("table", ["metric_types", "servers", "tenant_settings"])
def test_small_tables_are_not_partitioned(db, table):
    (n,) = db.execute_sql("SELECT count(*) FROM pg_partitioned_table "
                          "WHERE partrelid = %s::regclass", (table,)).fetchone()
    assert n == 0


@pytest.mark.postgres
@pytest.mark.parametrize("table", SERIES)
def test_monthly_partitions_cover_this_utc_month_and_three_ahead(db, table):
    now = datetime.now(UTC)
    starts = month_starts(now.year, now.month, 5)
    expected = set(zip(starts[:-1], starts[1:]))
    got = set()
    for _, expr, _ in partitions(db, table):
        if expr == "DEFAULT":
            continue
        match = BOUND.match(expr)
        assert match, expr
        got.add((parse_pg_timestamptz(match.group(1)), parse_pg_timestamptz(match.group(2))))
    assert got == expected
    for start, end in got:       # bounds sit exactly on UTC midnight of the 1st
        for bound in (start, end):
            utc = bound.astimezone(UTC)
            assert (utc.day, utc.hour, utc.minute, utc.second, utc.microsecond) == \
                (1, 0, 0, 0, 0)


@pytest.mark.postgres
@pytest.mark.parametrize("table", SERIES)
def test_a_default_partition_catches_everything_else(raw_db, table):
    db = raw_db
    provision(db)
    defaults = [name for name, expr, _ in partitions(db, table) if expr == "DEFAULT"]
    assert len(defaults) == 1
    far = datetime(1999, 12, 31, 23, 59, tzinfo=UTC)
    cols = "server_id, metric_type_id, value" if table == "metrics" else "server_id, status"
    vals = "1, 1, 1.0" if table == "metrics" else "1, 'online'"
    db.execute_sql("INSERT INTO %s (%s, collected_at) VALUES (%s, %%s)" % (table, cols, vals),
                   (far,))
    (n,) = db.execute_sql('SELECT count(*) FROM "%s"' % defaults[0]).fetchone()
    assert n == 1


@pytest.mark.postgres
@pytest.mark.parametrize("table", SERIES)
def test_every_created_partition_carries_the_ownership_marker(db, table):
    parts = partitions(db, table)
    assert len(parts) == 5          # default + current month + 3 ahead
    assert [comment for _, _, comment in parts] == [MARKER] * len(parts)


@pytest.mark.postgres
def test_partition_a_human_created_is_not_marked(raw_db):
    db = raw_db
    provision(db)
    db.execute_sql("CREATE TABLE metrics_manual PARTITION OF metrics "
                   "FOR VALUES FROM ('2001-01-01 00:00:00+00:00') "
                   "TO ('2001-02-01 00:00:00+00:00')")
    comments = {name: comment for name, _, comment in partitions(db, "metrics")}
    assert comments["metrics_manual"] is None
    assert sum(c == MARKER for c in comments.values()) == 5


@pytest.mark.postgres
def test_metrics_primary_key_includes_value_for_index_only_scans(db, backend):
    pk = primary_key(db, backend, "metrics")
    includes = dialect_for(db).index_includes(db, "metrics")
    (pk_name,) = [name for name, (unique, cols) in indexes(db, "metrics").items()
                  if unique and cols == pk]
    assert includes[pk_name] == ("value",)


@pytest.mark.postgres
@pytest.mark.parametrize("table", SERIES)
def test_partitions_inherit_the_keys(db, table):
    parent = sorted(cols for _, cols in indexes(db, table).values())
    for name, _, _ in partitions(db, table):
        assert sorted(cols for _, cols in indexes(db, name).values()) == parent, name


@pytest.mark.postgres
def test_tables_live_in_the_tenant_schema(db):
    rows = db.execute_sql("SELECT table_name FROM information_schema.tables "
                          "WHERE table_schema = %s", (db.schema,)).fetchall()
    assert set(EXPECTED_COLUMNS) <= {r[0] for r in rows}
