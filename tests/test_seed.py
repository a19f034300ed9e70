"""The seeded metric types (story 3.1, AC 6 and the dev notes; issue 2, item 6)."""

import pytest

from metricstore import ConfigurationError
from metricstore.seed import seed_metric_types
from metricstore.seeds.metric_types import METRIC_TYPES

AC6 = {"cpu_percent", "memory_percent", "disk_io_reads", "disk_io_writes", "wait_time_ms",
       "connection_count", "batch_requests_sec"}
FROM_THE_NOTES = {"page_life_expectancy", "blocked_processes"}
# Cumulative since the SQL Server instance started (sys.dm_io_virtual_file_stats,
# sys.dm_os_wait_stats, "Batch Requests/sec"): query them with rate().
COUNTERS = {"disk_io_reads", "disk_io_writes", "wait_time_ms", "batch_requests_sec"}
# Units the story fixes for the gauges (its "Seed Metric Types" note).
GAUGE_UNITS = {"cpu_percent": "%", "memory_percent": "%", "connection_count": "count",
               "page_life_expectancy": "sec", "blocked_processes": "count"}


def rows(db):
    """{name: (id, unit, description, kind)} as stored."""
    return {name: (id_, unit, description, kind) for id_, name, unit, description, kind
            in db.execute_sql("SELECT id, name, unit, description, kind "
                              "FROM metric_types").fetchall()}


def with_changed(name, index, value):
    """METRIC_TYPES with field ``index`` of metric ``name`` replaced."""
    out = []
    for row in METRIC_TYPES:
        if row[0] == name:
            row = row[:index] + (value,) + row[index + 1:]
        out.append(row)
    return out


def test_the_nine_metric_types_are_seeded(shared_db):
    assert set(rows(shared_db)) == AC6 | FROM_THE_NOTES
    assert len(rows(shared_db)) == 9


@pytest.mark.parametrize("name", sorted(AC6 | FROM_THE_NOTES))
def test_each_metric_type_has_unit_description_and_kind(shared_db, name):
    _, unit, description, kind = rows(shared_db)[name]
    assert unit and unit.strip() and len(unit) <= 20
    assert description and description.strip()
    assert kind == ("counter" if name in COUNTERS else "gauge")


@pytest.mark.parametrize("name,unit", sorted(GAUGE_UNITS.items()))
def test_gauge_units_follow_the_story(shared_db, name, unit):
    assert rows(shared_db)[name][1] == unit


def test_wait_time_is_in_milliseconds(shared_db):
    assert rows(shared_db)["wait_time_ms"][1] == "ms"


def test_counter_descriptions_say_they_are_cumulative(shared_db):
    for name in COUNTERS:
        assert "umulative" in rows(shared_db)[name][2], name


def test_reseeding_writes_nothing_and_duplicates_nothing(db):
    before = rows(db)
    assert seed_metric_types(db) == 0
    assert seed_metric_types(db) == 0
    assert rows(db) == before          # same ids too: nothing deleted and re-inserted


def test_a_changed_description_is_updated_in_place(db):
    before = rows(db)
    changed = with_changed("cpu_percent", 2, "CPU busy, percent of all schedulers")
    assert seed_metric_types(db, changed) == 1
    after = rows(db)
    assert after["cpu_percent"] == (before["cpu_percent"][0], "%",
                                    "CPU busy, percent of all schedulers", "gauge")
    assert {k: v for k, v in after.items() if k != "cpu_percent"} == \
        {k: v for k, v in before.items() if k != "cpu_percent"}
    assert seed_metric_types(db, changed) == 0


def test_a_changed_unit_and_kind_are_updated(db):
    changed = with_changed("blocked_processes", 1, "procs")
    changed = [r[:3] + ("counter",) if r[0] == "memory_percent" else r for r in changed]
    assert seed_metric_types(db, changed) == 2
    assert rows(db)["blocked_processes"][1] == "procs"
    assert rows(db)["memory_percent"][3] == "counter"


def test_shipped_seeds_restore_an_edited_row(db):
    db.execute_sql("UPDATE metric_types SET description = 'edited by hand' "
                   "WHERE name = 'connection_count'")
    assert seed_metric_types(db) == 1
    assert rows(db)["connection_count"][2] == "Active connection count"


def test_a_new_metric_type_is_inserted(db):
    extra = list(METRIC_TYPES) + [("log_flush_waits", "count", "Log flush waits", "counter")]
    assert seed_metric_types(db, extra) == 1
    assert len(rows(db)) == 10
    assert rows(db)["log_flush_waits"][1:] == ("count", "Log flush waits", "counter")


def test_seeding_never_deletes(db):
    assert seed_metric_types(db, METRIC_TYPES[:2]) == 0
    assert len(rows(db)) == 9


def test_a_bad_kind_is_refused_before_writing(db):
    before = rows(db)
    bad = with_changed("cpu_percent", 3, "histogram")
    with pytest.raises(ConfigurationError) as err:
        seed_metric_types(db, bad)
    assert "histogram" in str(err.value) and "gauge" in str(err.value)
    assert rows(db) == before


def test_seeding_an_empty_database_inserts_everything(raw_db):
    from metricstore import schema
    from metricstore.dialects import dialect_for
    dialect_for(raw_db).prepare(raw_db)      # the tenant schema, on PostgreSQL
    schema.migrate(raw_db)
    assert seed_metric_types(raw_db) == 9
    assert len(rows(raw_db)) == 9
