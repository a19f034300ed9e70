"""Writing samples and snapshots (issue 4, "Writing (the collector)").

``record`` / ``record_many`` / ``record_snapshot`` / ``record_snapshots`` on
the engine ``DATABASE_URL`` selects: inserted and duplicate counts, re-sent
batches, atomic rejection with every bad row listed, ``on_error='skip'``,
each validation rule with its message, batches larger than one chunk, aware
datetimes in several zones, and (PostgreSQL) the write path creating the
month's partition so the default partition stays empty.

Expected outcomes come from plain Python over the rows each test wrote; what
is stored is read back with raw SQL, not through the repository.
"""

import math
import re
import tracemalloc
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import metricstore
import metricstore.ingest
from metricstore import (MetricRepository, MetricstoreError, Sample, SnapshotSample,
                         ValidationError)

UTC = timezone.utc
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Well in the past (never beyond the skew), in the middle of a month.
BASE = datetime(2025, 3, 12, 9, 30, tzinfo=UTC)
LONG = 120_001          # rows of a batch longer than record_many's chunks

PROPERTY = settings(max_examples=30, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


# -- helpers ---------------------------------------------------------------------------
def count(db, table="metrics"):
    return db.execute_sql("SELECT count(*) FROM %s" % table).fetchone()[0]


def as_utc(value):
    """A stored collected_at (epoch microseconds on SQLite, timestamptz on
    PostgreSQL) as an aware UTC datetime."""
    if isinstance(value, int):
        return EPOCH + timedelta(microseconds=value)
    return value.astimezone(UTC)


def stored_metrics(db, server_id):
    """{(metric name, collected_at UTC): value} of one server, read with raw SQL."""
    rows = db.execute_sql(
        "SELECT t.name, m.collected_at, m.value FROM metrics m "
        "JOIN metric_types t ON t.id = m.metric_type_id WHERE m.server_id = %s"
        % db.param, (server_id,)).fetchall()
    return {(name, as_utc(t)): value for name, t, value in rows}


def stored_snapshots(db, server_id):
    """{collected_at UTC: (cpu, memory, connections, status)} of one server."""
    rows = db.execute_sql(
        "SELECT collected_at, cpu_percent, memory_percent, connection_count, status "
        "FROM server_snapshots WHERE server_id = %s" % db.param, (server_id,)).fetchall()
    return {as_utc(t): tuple(rest) for t, *rest in rows}


def known_metric_names(db):
    return sorted(r[0] for r in db.execute_sql("SELECT name FROM metric_types").fetchall())


def fresh_server(repo):
    return repo.add_server("srv-" + uuid.uuid4().hex)


def at(seconds):
    return BASE + timedelta(seconds=seconds)


@pytest.fixture
def repo(db):
    # The fixed dates of these tests (2025) must be inside the retention window:
    # rows older than the cutoff are not stored (counted as expired).
    metricstore.set_retention_days(db, 3660)
    return MetricRepository(db)


# -- servers ---------------------------------------------------------------------------
def test_add_server_returns_the_same_id_for_the_same_name(db, repo):
    first = repo.add_server("sql-prod-01")
    again = repo.add_server("sql-prod-01")
    other = repo.add_server("sql-prod-02")
    assert first == again
    assert other != first
    assert count(db, "servers") == 2
    assert sorted(db.execute_sql("SELECT id, name FROM servers").fetchall()) == sorted(
        [(first, "sql-prod-01"), (other, "sql-prod-02")])


@pytest.mark.parametrize("name", ["", "   "])
def test_add_server_rejects_an_empty_name(db, repo, name):
    with pytest.raises(MetricstoreError, match="name"):
        repo.add_server(name)
    assert count(db, "servers") == 0


# -- inserted and duplicates -----------------------------------------------------------
def test_record_stores_one_sample_of_several_metrics(db, repo):
    sid = repo.add_server("a")
    t = at(0)
    values = {"cpu_percent": 12.5, "memory_percent": 70.0, "connection_count": 31}
    result = repo.record(sid, t, values)
    assert (result.inserted, result.duplicates, result.rejected) == (3, 0, [])
    assert stored_metrics(db, sid) == {(name, t): v for name, v in values.items()}


def test_record_many_accepts_sample_tuples_and_plain_tuples(db, repo):
    sid = repo.add_server("a")
    rows = [Sample(sid, "cpu_percent", 1.0, at(0)), (sid, "cpu_percent", 2.0, at(1))]
    result = repo.record_many(rows)
    assert (result.inserted, result.duplicates) == (2, 0)
    assert stored_metrics(db, sid) == {("cpu_percent", at(0)): 1.0,
                                       ("cpu_percent", at(1)): 2.0}


def test_resending_a_batch_inserts_nothing_twice(db, repo):
    sid = repo.add_server("a")
    batch = [(sid, name, float(i % 100), at(i)) for i in range(200)
             for name in ("cpu_percent", "disk_io_reads")]
    first = repo.record_many(batch)
    before = count(db)
    again = repo.record_many(batch)
    assert (first.inserted, first.duplicates) == (400, 0)
    assert (again.inserted, again.duplicates) == (0, 400)
    assert count(db) == before == 400


def test_duplicates_within_one_batch_are_stored_once(db, repo):
    sid = repo.add_server("a")
    batch = [(sid, "cpu_percent", 5.0, at(0)), (sid, "cpu_percent", 6.0, at(1)),
             (sid, "cpu_percent", 5.0, at(0)), (sid, "cpu_percent", 5.0, at(0))]
    result = repo.record_many(batch)
    assert (result.inserted, result.duplicates) == (2, 2)
    assert count(db) == 2


def test_a_stored_row_is_kept_when_a_resend_carries_another_value(db, repo):
    sid = repo.add_server("a")
    repo.record_many([(sid, "cpu_percent", 5.0, at(0))])
    result = repo.record_many([(sid, "cpu_percent", 99.0, at(0))])
    assert (result.inserted, result.duplicates) == (0, 1)
    assert stored_metrics(db, sid) == {("cpu_percent", at(0)): 5.0}


METRIC_NAMES = ("cpu_percent", "memory_percent", "disk_io_reads", "connection_count")
KEYS = st.tuples(st.sampled_from(METRIC_NAMES), st.integers(0, 40))


@PROPERTY
@given(stored_keys=st.lists(KEYS, max_size=30),
       batch_keys=st.lists(KEYS, max_size=60))
def test_inserted_and_duplicates_follow_the_stored_keys(db, repo, stored_keys, batch_keys):
    """A batch with rows already stored and rows repeated inside it: inserted
    counts the keys neither stored nor seen earlier in the batch."""
    sid = fresh_server(repo)

    def value(name, second):        # a key always carries the same value here
        return float(second % 90) + (0.25 if name == "cpu_percent" else 0.0)

    def rows(keys):
        return [(sid, name, value(name, s), at(s)) for name, s in keys]

    repo.record_many(rows(stored_keys))
    table_before = count(db)
    result = repo.record_many(rows(batch_keys))

    seen = set(stored_keys)
    expected_new = 0
    for key in batch_keys:
        if key not in seen:
            expected_new += 1
            seen.add(key)
    assert result.inserted == expected_new
    assert result.duplicates == len(batch_keys) - expected_new
    assert result.rejected == []
    assert count(db) == table_before + expected_new
    assert stored_metrics(db, sid) == {(name, at(s)): value(name, s) for name, s in seen}


def test_record_snapshot_is_idempotent(db, repo):
    sid = repo.add_server("a")
    first = repo.record_snapshot(sid, at(0), cpu_percent=40.5, memory_percent=60.0,
                                 connection_count=12, status="warning")
    again = repo.record_snapshot(sid, at(0), cpu_percent=40.5, memory_percent=60.0,
                                 connection_count=12, status="warning")
    assert (first.inserted, first.duplicates) == (1, 0)
    assert (again.inserted, again.duplicates) == (0, 1)
    assert stored_snapshots(db, sid) == {at(0): (40.5, 60.0, 12, "warning")}


def test_record_snapshots_counts_inserted_and_duplicates(db, repo):
    sid = repo.add_server("a")
    batch = [SnapshotSample(sid, at(i), float(i), 50.0, i, "online") for i in range(10)]
    batch += [dict(server_id=sid, collected_at=at(10), cpu_percent=None,
                   memory_percent=None, connection_count=None, status="offline")]
    batch += batch[:3]                                   # repeated inside the batch
    first = repo.record_snapshots(batch)
    assert (first.inserted, first.duplicates) == (11, 3)
    before = count(db, "server_snapshots")
    again = repo.record_snapshots(batch)
    assert (again.inserted, again.duplicates) == (0, 14)
    assert count(db, "server_snapshots") == before == 11
    expected = {at(i): (float(i), 50.0, i, "online") for i in range(10)}
    expected[at(10)] = (None, None, None, "offline")
    assert stored_snapshots(db, sid) == expected


# -- atomic rejection and on_error='skip' ----------------------------------------------
def test_a_bad_row_in_the_middle_writes_nothing(db, repo):
    sid = repo.add_server("a")
    repo.record_many([(sid, "cpu_percent", 1.0, at(-1))])
    before = count(db)
    batch = [(sid, "cpu_percent", float(i), at(i)) for i in range(100)]
    batch[50] = (sid, "cpu_percent", float("nan"), at(50))
    with pytest.raises(ValidationError) as caught:
        repo.record_many(batch)
    assert count(db) == before == 1
    assert [(e.position, e.field) for e in caught.value.errors] == [(50, "value")]


def test_a_bad_snapshot_in_the_middle_writes_nothing(db, repo):
    sid = repo.add_server("a")
    batch = [SnapshotSample(sid, at(i), 10.0, 20.0, 3, "online") for i in range(20)]
    batch[7] = SnapshotSample(sid, at(7), 10.0, 20.0, 3, "sleeping")
    with pytest.raises(ValidationError) as caught:
        repo.record_snapshots(batch)
    assert count(db, "server_snapshots") == 0
    assert [(e.position, e.field) for e in caught.value.errors] == [(7, "status")]


def test_the_validation_error_lists_every_bad_row(db, repo):
    sid = repo.add_server("a")
    naive = datetime(2025, 3, 12, 9, 30)
    batch = [
        (sid, "cpu_percent", 10.0, at(0)),
        (sid, "cpu_percent", 101.0, at(1)),            # 1: percentage above 100
        (sid, "cpu_percent", 10.0, at(2)),
        (sid, "no_such_metric", 1.0, at(3)),           # 3: unknown metric
        (sid, "disk_io_reads", -5, naive),             # 4: negative counter AND naive
        (999_999, "cpu_percent", 1.0, at(5)),          # 5: unknown server
        (sid, "memory_percent", 50.0, at(6)),
    ]
    with pytest.raises(ValidationError) as caught:
        repo.record_many(batch)
    errors = caught.value.errors
    assert sorted((e.position, e.field) for e in errors) == [
        (1, "value"), (3, "metric"), (4, "collected_at"), (4, "value"), (5, "server_id")]
    assert all(e.reason for e in errors)
    message = str(caught.value)
    assert "4 invalid row(s) (5 problems)" in message
    for e in errors:                                   # each bad row, by position
        assert str(e) in message
    assert "101.0" in message and "'no_such_metric'" in message and "999999" in message
    assert "nothing was written" in message
    assert "on_error='skip'" in message                # the way out
    assert count(db) == 0


def test_skip_stores_the_good_rows_and_returns_the_rejected_ones(db, repo):
    sid = repo.add_server("a")
    batch = [(sid, "cpu_percent", float(i), at(i)) for i in range(10)]
    bad = {2: (sid, "cpu_percent", math.inf, at(2)),
           5: (sid, "disk_io_reads", -1, at(5)),
           9: (sid, "cpu_percent", "9", at(9))}
    for position, row in bad.items():
        batch[position] = row
    result = repo.record_many(batch, on_error="skip")
    good = [row for i, row in enumerate(batch) if i not in bad]
    assert result.inserted == len(good) == 7
    assert result.duplicates == 0
    assert [(e.position, e.field) for e in result.rejected] == [
        (2, "value"), (5, "value"), (9, "value")]
    assert [e.row for e in result.rejected] == list(bad.values())
    assert stored_metrics(db, sid) == {(name, t): v for _, name, v, t in good}


def test_skip_on_snapshots_returns_the_rejected_positions(db, repo):
    sid = repo.add_server("a")
    batch = [SnapshotSample(sid, at(i), 1.0, 2.0, 3, "online") for i in range(6)]
    batch[0] = SnapshotSample(sid, at(0), -1.0, 2.0, 3, "online")
    batch[4] = SnapshotSample(sid, at(4), 1.0, 2.0, -3, "online")
    result = repo.record_snapshots(batch, on_error="skip")
    assert result.inserted == 4
    assert [(e.position, e.field) for e in result.rejected] == [
        (0, "cpu_percent"), (4, "connection_count")]
    assert sorted(stored_snapshots(db, sid)) == [at(i) for i in (1, 2, 3, 5)]


BAD_ROWS = {
    "nan": lambda sid, t: (sid, "cpu_percent", float("nan"), t),
    "over 100": lambda sid, t: (sid, "memory_percent", 100.5, t),
    "negative counter": lambda sid, t: (sid, "disk_io_writes", -1, t),
    "unknown metric": lambda sid, t: (sid, "cpu", 1.0, t),
    "unknown server": lambda sid, t: (-sid, "cpu_percent", 1.0, t),
    "naive": lambda sid, t: (sid, "cpu_percent", 1.0, t.replace(tzinfo=None)),
    "string": lambda sid, t: (sid, "cpu_percent", "1", t),
    "future": lambda sid, t: (sid, "cpu_percent", 1.0, datetime.now(UTC) + timedelta(days=1)),
}


@PROPERTY
@given(slots=st.lists(st.tuples(st.sampled_from(METRIC_NAMES), st.integers(0, 30),
                                st.one_of(st.none(), st.sampled_from(sorted(BAD_ROWS)))),
                      min_size=1, max_size=40))
def test_raise_rejects_the_whole_batch_and_skip_keeps_the_good_rows(db, repo, slots):
    sid = fresh_server(repo)
    rows = [BAD_ROWS[bad](sid, at(s)) if bad else (sid, name, float(s), at(s))
            for name, s, bad in slots]
    bad_positions = [i for i, (_, _, bad) in enumerate(slots) if bad]
    good_keys = {(name, at(s)): float(s) for name, s, bad in reversed(slots) if not bad}
    before = count(db)
    if bad_positions:
        with pytest.raises(ValidationError) as caught:
            repo.record_many(iter(rows))
        assert sorted({e.position for e in caught.value.errors}) == bad_positions
        assert count(db) == before
    result = repo.record_many(iter(rows), on_error="skip")
    assert sorted({e.position for e in result.rejected}) == bad_positions
    assert result.inserted == len(good_keys)
    assert result.duplicates == len(slots) - len(bad_positions) - len(good_keys)
    assert stored_metrics(db, sid) == good_keys


def test_skip_with_only_bad_rows_writes_nothing(db, repo):
    sid = repo.add_server("a")
    result = repo.record_many([(sid, "cpu_percent", -1, at(0))], on_error="skip")
    assert (result.inserted, result.duplicates, len(result.rejected)) == (0, 0, 1)
    assert count(db) == 0


def test_an_iterable_that_fails_midway_writes_nothing(db, repo):
    sid = repo.add_server("a")

    def failing():
        yield from rows_of(sid, 3)
        raise RuntimeError("collector lost its source")

    with pytest.raises(RuntimeError):
        repo.record_many(failing())
    assert count(db) == 0
    # nothing of the failed batch is left over for the next one
    assert repo.record_many(rows_of(sid, 2, start=100)).inserted == 2
    assert sorted(t for _, t in stored_metrics(db, sid)) == [at(100), at(101)]


def test_on_error_takes_raise_or_skip(db, repo):
    sid = repo.add_server("a")
    with pytest.raises(metricstore.QueryError, match="on_error"):
        repo.record_many([(sid, "cpu_percent", 1.0, at(0))], on_error="ignore")
    assert count(db) == 0


def test_a_zero_skew_accepts_now_and_refuses_any_future_instant(db):
    now = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)
    repo = MetricRepository(db, max_skew=timedelta(0), clock=lambda: now)
    sid = repo.add_server("a")
    assert repo.record_many([(sid, "cpu_percent", 1.0, now)]).inserted == 1
    with pytest.raises(metricstore.ValidationError, match="future"):
        repo.record_many([(sid, "cpu_percent", 1.0, now + timedelta(microseconds=1))])
    with pytest.raises(metricstore.QueryError, match="max_skew"):
        MetricRepository(db, max_skew=timedelta(seconds=-1))


# -- each validation rule, with its message --------------------------------------------
def rejection(repo, row):
    """The RowErrors of a one-row batch (which must be rejected)."""
    with pytest.raises(ValidationError) as caught:
        repo.record_many([row])
    return caught.value.errors


METRIC_RULES = [
    # rule, the row (given a server id), the field blamed, words of the reason
    ("naive datetime", lambda s: (s, "cpu_percent", 1.0, datetime(2025, 3, 12, 9, 30)),
     "collected_at", ["naive", "tzinfo", "zone"]),
    ("not a datetime", lambda s: (s, "cpu_percent", 1.0, "2025-03-12T09:30:00Z"),
     "collected_at", ["aware datetime"]),
    ("before 2000", lambda s: (s, "cpu_percent", 1.0, datetime(1999, 12, 31, tzinfo=UTC)),
     "collected_at", ["clock"]),
    ("NaN", lambda s: (s, "cpu_percent", float("nan"), at(0)), "value", ["finite", "nan"]),
    ("+inf", lambda s: (s, "cpu_percent", math.inf, at(0)), "value", ["finite", "inf"]),
    ("-inf", lambda s: (s, "page_life_expectancy", -math.inf, at(0)), "value",
     ["finite", "inf"]),
    ("+inf, no upper bound", lambda s: (s, "wait_time_ms", math.inf, at(0)), "value",
     ["finite", "inf"]),
    ("percent above 100", lambda s: (s, "cpu_percent", 101, at(0)), "value",
     ["101", "out of range", "cpu_percent", "0..100"]),
    ("percent below 0", lambda s: (s, "cpu_percent", -1, at(0)), "value",
     ["-1", "out of range", "cpu_percent", "0..100"]),
    ("memory percent above 100", lambda s: (s, "memory_percent", 100.5, at(0)), "value",
     ["100.5", "out of range", "memory_percent", "0..100"]),
    ("negative counter", lambda s: (s, "disk_io_reads", -5, at(0)), "value",
     ["-5", "out of range", "disk_io_reads", ">= 0"]),
    ("negative connection_count", lambda s: (s, "connection_count", -1, at(0)), "value",
     ["-1", "out of range", "connection_count", ">= 0"]),
    ("string value", lambda s: (s, "cpu_percent", "12", at(0)), "value",
     ["must be a number", "'12'"]),
    ("None value", lambda s: (s, "cpu_percent", None, at(0)), "value", ["must be a number"]),
    ("bool True", lambda s: (s, "cpu_percent", True, at(0)), "value",
     ["must be a number", "True"]),
    ("bool False", lambda s: (s, "disk_io_reads", False, at(0)), "value",
     ["must be a number", "False"]),
    ("unknown server", lambda s: (999_999, "cpu_percent", 1.0, at(0)), "server_id",
     ["unknown server", "999999", "add_server"]),
    ("server id as string", lambda s: (str(s), "cpu_percent", 1.0, at(0)), "server_id",
     ["unknown server", "add_server"]),
    ("server id as bool", lambda s: (True, "cpu_percent", 1.0, at(0)), "server_id",
     ["unknown server"]),
    ("wrong shape", lambda s: (s, "cpu_percent", 1.0), "row",
     ["expected (server_id, metric, value, collected_at)"]),
]


def test_each_metric_rule_rejects_with_its_message(db, repo):
    sid = repo.add_server("a")
    wrong = []
    for rule, make_row, field, words in METRIC_RULES:
        errors = rejection(repo, make_row(sid))
        if [(e.position, e.field) for e in errors] != [(0, field)]:
            wrong.append((rule, errors))
        elif not all(word in errors[0].reason for word in words):
            wrong.append((rule, errors[0].reason, words))
    assert wrong == []
    assert count(db) == 0


def test_an_unknown_metric_error_lists_the_known_metrics(db, repo):
    sid = repo.add_server("a")
    (error,) = rejection(repo, (sid, "cpu_pct", 1.0, at(0)))
    assert error.field == "metric"
    assert "'cpu_pct'" in error.reason
    names = known_metric_names(db)
    assert len(names) == 9
    assert ", ".join(names) in error.reason


EDGES = [("cpu_percent", 0), ("cpu_percent", 100), ("memory_percent", 99.5),
         ("disk_io_reads", 0), ("disk_io_reads", 10 ** 12), ("connection_count", 0),
         ("wait_time_ms", 0.5), ("page_life_expectancy", 2 ** 53)]


def test_values_on_the_edges_of_their_range_are_accepted(db, repo):
    sid = repo.add_server("a")
    rows = [(sid, name, value, at(i)) for i, (name, value) in enumerate(EDGES)]
    assert repo.record_many(rows).inserted == len(EDGES)
    assert stored_metrics(db, sid) == {(name, t): v for _, name, v, t in rows}


SNAPSHOT_RULES = [
    ("cpu above 100", dict(cpu_percent=101.0), "cpu_percent", ["101", "0..100"]),
    ("cpu below 0", dict(cpu_percent=-1), "cpu_percent", ["-1", "0..100"]),
    ("memory above 100", dict(memory_percent=100.01), "memory_percent", ["0..100"]),
    ("memory NaN", dict(memory_percent=float("nan")), "memory_percent", ["finite"]),
    ("cpu inf", dict(cpu_percent=math.inf), "cpu_percent", ["finite"]),
    ("cpu as string", dict(cpu_percent="50"), "cpu_percent", ["must be a number"]),
    ("cpu as bool", dict(cpu_percent=True), "cpu_percent", ["must be a number"]),
    ("infinite connections", dict(connection_count=math.inf), "connection_count",
     ["finite"]),
    ("negative connections", dict(connection_count=-1), "connection_count",
     ["-1", "0..2147483647"]),
    ("fractional connections", dict(connection_count=2.5), "connection_count",
     ["whole number", "2.5"]),
    ("connections as bool", dict(connection_count=False), "connection_count",
     ["must be a number"]),
    ("unknown status", dict(status="sleeping"), "status",
     ["unknown status", "'sleeping'", "online, warning, critical, offline, unknown"]),
    ("status None", dict(status=None), "status", ["unknown status"]),
    ("naive datetime", dict(collected_at=datetime(2025, 3, 12, 9, 30)), "collected_at",
     ["naive", "tzinfo", "zone"]),
    ("unknown server", dict(server_id=999_999), "server_id", ["unknown server", "999999"]),
]


def test_each_snapshot_rule_rejects_with_its_message(db, repo):
    sid = repo.add_server("a")
    wrong = []
    for rule, change, field, words in SNAPSHOT_RULES:
        fields = dict(server_id=sid, collected_at=at(0), cpu_percent=10.0,
                      memory_percent=20.0, connection_count=5, status="online")
        fields.update(change)
        with pytest.raises(ValidationError) as caught:
            repo.record_snapshots([SnapshotSample(**fields)])
        errors = caught.value.errors
        if [(e.position, e.field) for e in errors] != [(0, field)]:
            wrong.append((rule, errors))
        elif not all(word in errors[0].reason for word in words):
            wrong.append((rule, errors[0].reason, words))
    assert wrong == []
    assert count(db, "server_snapshots") == 0


def test_record_snapshot_rejects_an_unknown_status(db, repo):
    sid = repo.add_server("a")
    with pytest.raises(ValidationError, match="unknown status 'asleep'"):
        repo.record_snapshot(sid, at(0), cpu_percent=1.0, status="asleep")
    assert count(db, "server_snapshots") == 0


# -- the future: max_skew --------------------------------------------------------------
def test_a_timestamp_beyond_the_default_skew_is_rejected(db):
    repo = MetricRepository(db, max_skew=timedelta(minutes=5))
    sid = repo.add_server("a")
    now = datetime.now(UTC)
    (error,) = rejection(repo, (sid, "cpu_percent", 1.0, now + timedelta(minutes=10)))
    assert error.field == "collected_at"
    assert "future" in error.reason and "max_skew" in error.reason
    assert repo.record_many([(sid, "cpu_percent", 1.0, now + timedelta(minutes=1))]
                            ).inserted == 1
    with pytest.raises(ValidationError, match="max_skew"):
        repo.record_snapshot(sid, now + timedelta(minutes=10), cpu_percent=1.0)
    # five minutes is also the default
    (error,) = rejection(MetricRepository(db), (sid, "cpu_percent", 1.0,
                                                now + timedelta(minutes=10)))
    assert error.field == "collected_at"


def test_a_custom_max_skew_moves_the_limit(db):
    repo = MetricRepository(db, max_skew=timedelta(hours=2))
    sid = repo.add_server("a")
    now = datetime.now(UTC)
    rejection(MetricRepository(db), (sid, "cpu_percent", 1.0, now + timedelta(hours=1)))
    assert repo.record_many([(sid, "cpu_percent", 1.0, now + timedelta(hours=1))]
                            ).inserted == 1
    (error,) = rejection(repo, (sid, "cpu_percent", 1.0, now + timedelta(hours=3)))
    assert error.field == "collected_at"


def test_the_skew_limit_is_exact(db):
    now = BASE                      # a fixed clock: the limit is now + max_skew
    for skew in (timedelta(microseconds=1), timedelta(seconds=30), timedelta(hours=6)):
        repo = MetricRepository(db, max_skew=skew, clock=lambda: now)
        sid = repo.add_server("a")
        limit = now + skew
        assert repo.record_many([(sid, "cpu_percent", 1.0, limit)]).inserted == 1
        (error,) = rejection(repo, (sid, "cpu_percent", 2.0, limit + timedelta(microseconds=1)))
        assert error.field == "collected_at", skew


# -- batches larger than one chunk -----------------------------------------------------
def rows_of(sid, n, start=0, bad_at=None):
    """A generator of ``n`` rows (one per second), the row at ``bad_at`` invalid."""
    for i in range(start, start + n):
        value = -1.0 if i == bad_at else float(i % 100)
        yield (sid, "cpu_percent", value, at(i))


def test_a_generator_longer_than_a_chunk_is_consumed_and_stored(db, repo):
    sid = repo.add_server("a")
    n = LONG
    assert n > 2 * metricstore.ingest.CHUNK_ROWS     # three chunks at least
    rows = rows_of(sid, n)
    result = repo.record_many(rows)
    assert next(rows, None) is None                 # consumed to the end
    assert (result.inserted, result.duplicates) == (n, 0)
    assert count(db) == n
    first, last = db.execute_sql(
        "SELECT MIN(collected_at), MAX(collected_at) FROM metrics").fetchone()
    assert (as_utc(first), as_utc(last)) == (at(0), at(n - 1))
    again = repo.record_many(rows_of(sid, n))
    assert (again.inserted, again.duplicates) == (0, n)
    assert count(db) == n


def test_a_bad_row_in_the_last_chunk_rolls_back_the_earlier_chunks(db, repo):
    sid = repo.add_server("a")
    repo.record_many(rows_of(sid, 10, start=-10))
    before = count(db)
    n = LONG
    assert n > 2 * metricstore.ingest.CHUNK_ROWS
    with pytest.raises(ValidationError) as caught:
        repo.record_many(rows_of(sid, n, bad_at=n - 1))
    assert [(e.position, e.field) for e in caught.value.errors] == [(n - 1, "value")]
    assert count(db) == before == 10
    # the table still takes the same batch once it is fixed
    assert repo.record_many(rows_of(sid, n)).inserted == n


def test_positions_count_across_chunks(db, repo, monkeypatch):
    monkeypatch.setattr(metricstore.ingest, "CHUNK_ROWS", 1_000)
    sid = repo.add_server("a")
    bad = [0, 999, 1_000, 2_500, 4_999]
    rows = [(sid, "cpu_percent", -1.0 if i in bad else 1.0, at(i)) for i in range(5_000)]
    with pytest.raises(ValidationError) as caught:
        repo.record_many(iter(rows))
    assert [e.position for e in caught.value.errors] == bad
    assert count(db) == 0
    result = repo.record_many(iter(rows), on_error="skip")
    assert result.inserted == 5_000 - len(bad)
    assert [e.position for e in result.rejected] == bad


def test_a_long_batch_is_streamed_not_held_in_memory(db, repo, monkeypatch):
    """With small chunks, writing a generator peaks far below what the same
    rows take as a list: record_many holds one chunk at a time."""
    monkeypatch.setattr(metricstore.ingest, "CHUNK_ROWS", 2_000)
    sid = repo.add_server("a")
    n = 60_000
    tracemalloc.start()
    try:
        as_list = list(rows_of(sid, n, start=n))
        _, list_peak = tracemalloc.get_traced_memory()
        del as_list
        tracemalloc.reset_peak()
        base, _ = tracemalloc.get_traced_memory()
        result = repo.record_many(rows_of(sid, n))
        _, write_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.inserted == n
    assert write_peak - base < list_peak / 3, (write_peak - base, list_peak)


# -- time zones ------------------------------------------------------------------------
def test_aware_datetimes_in_any_zone_are_stored_as_utc_instants(db, repo):
    sid = repo.add_server("a")
    india = timezone(timedelta(hours=5, minutes=30))
    pacific = timezone(timedelta(hours=-8))
    local_india = datetime(2025, 3, 12, 15, 0, 0, 250_000, tzinfo=india)
    local_pacific = datetime(2025, 3, 12, 1, 30, 0, 0, tzinfo=pacific)
    utc_india = datetime(2025, 3, 12, 9, 30, 0, 250_000, tzinfo=UTC)
    utc_pacific = datetime(2025, 3, 12, 9, 30, 0, 0, tzinfo=UTC)
    assert repo.record_many([(sid, "cpu_percent", 1.0, local_india),
                             (sid, "cpu_percent", 2.0, local_pacific)]).inserted == 2
    assert stored_metrics(db, sid) == {("cpu_percent", utc_india): 1.0,
                                       ("cpu_percent", utc_pacific): 2.0}
    # the same instants written in other zones are duplicates
    again = repo.record_many([(sid, "cpu_percent", 1.0, utc_india),
                              (sid, "cpu_percent", 2.0, local_pacific.astimezone(india))])
    assert (again.inserted, again.duplicates) == (0, 2)
    repo.record_snapshot(sid, local_pacific, cpu_percent=3.0)
    assert list(stored_snapshots(db, sid)) == [utc_pacific]


ZONES = st.sampled_from([timedelta(0), timedelta(hours=5, minutes=30), timedelta(hours=-8),
                         timedelta(hours=14), timedelta(hours=-12), timedelta(minutes=45)])


@PROPERTY
@given(offsets=st.lists(st.integers(0, 10 ** 11), min_size=1, max_size=20, unique=True),
       zones=st.lists(ZONES, min_size=20, max_size=20))
def test_stored_instants_do_not_depend_on_the_input_zone(db, repo, offsets, zones):
    sid = fresh_server(repo)
    instants = [BASE + timedelta(microseconds=us) for us in offsets]
    rows = [(sid, "memory_percent", float(i % 100), t.astimezone(timezone(z)))
            for i, (t, z) in enumerate(zip(instants, zones))]
    assert repo.record_many(rows).inserted == len(rows)
    assert stored_metrics(db, sid) == {("memory_percent", t): float(i % 100)
                                       for i, t in enumerate(instants)}


# -- PostgreSQL: the write path makes the month's partition ----------------------------
def partitions(db, table):
    return {r[0] for r in db.execute_sql(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = %s::regclass", (table,)).fetchall()}


@pytest.mark.postgres
def test_rows_for_a_month_without_partition_never_land_in_the_default(db, repo):
    metricstore.set_retention_days(db, 400)
    today = datetime.now(UTC)
    index = today.year * 12 + today.month - 1 - 8               # 8 months back
    month = datetime(index // 12, index % 12 + 1, 10, 12, 0, tzinfo=UTC)
    before = {t: partitions(db, t) for t in ("metrics", "server_snapshots")}
    sid = repo.add_server("a")
    rows = [(sid, "cpu_percent", float(i), month + timedelta(minutes=i)) for i in range(50)]
    assert repo.record_many(rows).inserted == 50
    assert repo.record_snapshots(
        [SnapshotSample(sid, month + timedelta(minutes=i), 1.0, 2.0, 3, "online")
         for i in range(5)]).inserted == 5
    for table in ("metrics", "server_snapshots"):
        assert count(db, table + "_default") == 0
        assert partitions(db, table) - before[table], "no partition was created"
        holders = {re.sub(r"_\d{6,}$", "", r[0].rsplit(".", 1)[-1])   # Citus: the shard
                   for r in db.execute_sql(
                       "SELECT DISTINCT tableoid::regclass::text FROM %s" % table).fetchall()}
        assert len(holders) == 1 and holders <= partitions(db, table) - before[table]
    assert count(db) == 50


# -- review findings: nothing silently dropped, partitions only where rows are ----------
class Float(float):
    """Like numpy.float64: a float subclass."""


class Int(int):
    """Like numpy.int64 or an IntEnum: an int subclass."""


def test_number_subclasses_are_stored_not_silently_dropped(db, repo):
    sid = repo.add_server("a")
    rows = [(sid, "cpu_percent", Float(12.5), at(0)), (Int(sid), "cpu_percent", Int(7), at(1)),
            (sid, "cpu_percent", 3.0, at(2))]
    result = repo.record_many(rows)
    assert (result.inserted, result.duplicates, result.rejected) == (3, 0, [])
    assert sorted(stored_metrics(db, sid).values()) == [3.0, 7.0, 12.5]


def test_every_row_is_either_written_or_rejected(db, repo):
    sid = repo.add_server("a")
    rows = [(sid, "cpu_percent", Float("nan"), at(0)), (sid, "cpu_percent", Float(1.0), at(1)),
            (Int(sid + 99), "cpu_percent", 1.0, at(2)), (sid, "cpu_percent", 2.0, at(3))]
    result = repo.record_many(rows, on_error="skip")
    assert result.inserted + result.duplicates + len({e.position for e in result.rejected}) \
        == len(rows)
    assert {e.position for e in result.rejected} == {0, 2}


def test_rows_older_than_the_retention_are_counted_as_expired_not_stored(db):
    """Issue 10 item 5; tests/test_ingest_retention.py has the full rules."""
    now = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)
    repo = MetricRepository(db, clock=lambda: now)
    sid = repo.add_server("a")
    metricstore.set_retention_days(db, 7)
    result = repo.record_many([(sid, "cpu_percent", 1.0, now - timedelta(days=8)),
                               (sid, "cpu_percent", 1.0, now - timedelta(days=6))])
    assert (result.inserted, result.expired, result.rejected_rows) == (1, 1, 0)
    assert count(db) == 1


@pytest.mark.postgres
def test_far_apart_rows_create_partitions_only_for_their_own_months(db):
    now = datetime.now(timezone.utc)
    repo = MetricRepository(db)
    metricstore.set_retention_days(db, 3660)
    sid = repo.add_server("a")
    before = {r[0] for r in db.execute_sql(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'metrics'::regclass")}
    old = datetime(2018, 5, 17, 3, 0, tzinfo=timezone.utc)
    repo.record_many([(sid, "cpu_percent", 1.0, old), (sid, "cpu_percent", 2.0, now)])
    after = {r[0] for r in db.execute_sql(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'metrics'::regclass")}
    assert after - before == {"metrics_p2018_05"}
