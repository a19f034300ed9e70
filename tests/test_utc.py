"""Instants are stored and returned in UTC (story 3.1, AC 7; issue 2, item 8).

Aware datetimes from any offset become the same UTC instant; naive ones are
refused with a message that says how to fix the call; values read back are
aware UTC datetimes on both engines, and ordering and ranges follow the
instant, not the wall-clock text.
"""

import calendar
from datetime import date, datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metricstore import MetricstoreError, TimeError
from metricstore.models import Metric, Server, ServerSnapshot
from metricstore.timeutil import to_utc

UTC = timezone.utc
IST = timezone(timedelta(hours=5, minutes=30))      # +05:30
PST = timezone(timedelta(hours=-8))                 # -08:00


def epoch_micros(dt):
    """Microseconds since 1970-01-01 UTC, computed without metricstore."""
    u = dt.utctimetuple()
    return calendar.timegm(u) * 1_000_000 + dt.microsecond


def test_epoch_micros_helper():
    assert epoch_micros(datetime(1970, 1, 1, 0, 0, 1, 5, tzinfo=UTC)) == 1_000_005
    assert epoch_micros(datetime(1970, 1, 1, 5, 30, tzinfo=IST)) == 0


# -- to_utc ------------------------------------------------------------------------

def test_offsets_convert_to_the_same_utc_instant():
    # 2026-03-08 09:30 UTC, written as local wall-clock time in two zones.
    india = datetime(2026, 3, 8, 15, 0, tzinfo=IST)
    pacific = datetime(2026, 3, 8, 1, 30, tzinfo=PST)
    for local in (india, pacific):
        utc = to_utc(local)
        assert utc.utcoffset() == timedelta(0)
        assert (utc.year, utc.month, utc.day, utc.hour, utc.minute) == (2026, 3, 8, 9, 30)
    assert to_utc(india) == to_utc(pacific)


def test_conversion_crosses_the_date_line():
    utc = to_utc(datetime(2026, 1, 1, 2, 0, tzinfo=IST))
    assert (utc.year, utc.month, utc.day, utc.hour, utc.minute) == (2025, 12, 31, 20, 30)
    utc = to_utc(datetime(2025, 12, 31, 20, 0, tzinfo=PST))
    assert (utc.year, utc.month, utc.day, utc.hour) == (2026, 1, 1, 4)


def test_utc_input_is_kept_to_the_microsecond():
    dt = datetime(2026, 7, 1, 12, 0, 0, 123456, tzinfo=UTC)
    assert to_utc(dt) == dt and to_utc(dt).microsecond == 123456


def test_naive_datetime_is_refused_with_the_fix():
    with pytest.raises(TimeError) as err:
        to_utc(datetime(2026, 3, 8, 9, 30), "collected_at")
    message = str(err.value)
    assert "collected_at" in message
    assert "naive" in message
    assert "tzinfo" in message


@pytest.mark.parametrize("value", ["2026-03-08T09:30:00+00:00", date(2026, 3, 8),
                                   1_700_000_000, None])
def test_non_datetimes_are_refused_with_an_example(value):
    with pytest.raises(TimeError) as err:
        to_utc(value)
    assert "tzinfo=timezone.utc" in str(err.value)


def test_time_error_is_a_metricstore_error_and_a_value_error():
    assert issubclass(TimeError, MetricstoreError)
    assert issubclass(TimeError, ValueError)


# -- through the ORM, on the selected engine ------------------------------------------

def add_server(db, name="sql01"):
    return Server.insert(name=name, created_at=datetime(2026, 1, 1, tzinfo=UTC)).execute(db)


def add_metric(db, server_id, collected_at, value=1.0, metric_type=1):
    Metric.insert(server=server_id, metric_type=metric_type, value=value,
                  collected_at=collected_at).execute(db)


def read_times(db, query=None):
    query = query if query is not None else Metric.select()
    return [m.collected_at for m in query.order_by(Metric.collected_at).bind(db)]


def assert_aware_utc(dt):
    assert dt.tzinfo is not None
    assert dt.utcoffset() == timedelta(0)


def test_round_trip_from_plus_0530_and_minus_0800(db):
    sid = add_server(db)
    india = datetime(2026, 3, 8, 15, 0, 0, 250000, tzinfo=IST)     # 09:30:00.25Z
    pacific = datetime(2026, 3, 8, 2, 45, 0, 7, tzinfo=PST)        # 10:45:00.000007Z
    add_metric(db, sid, india)
    add_metric(db, sid, pacific)
    got = read_times(db)
    assert got == [india, pacific]
    for dt in got:
        assert_aware_utc(dt)
    assert (got[0].hour, got[0].minute, got[0].microsecond) == (9, 30, 250000)
    assert (got[1].hour, got[1].minute, got[1].microsecond) == (10, 45, 7)


def test_server_created_at_round_trips_as_utc(db):
    created = datetime(2026, 5, 1, 8, 0, tzinfo=PST)
    sid = Server.insert(name="sql02", created_at=created).execute(db)
    server = Server.select().where(Server.id == sid).bind(db).get()
    assert server.created_at == created
    assert_aware_utc(server.created_at)


def test_snapshot_collected_at_round_trips_as_utc(db):
    sid = add_server(db)
    at = datetime(2026, 5, 1, 23, 59, 59, 999999, tzinfo=IST)
    ServerSnapshot.insert(server=sid, cpu_percent=12.5, status="online",
                          collected_at=at).execute(db)
    (snap,) = ServerSnapshot.select().bind(db)
    assert snap.collected_at == at
    assert_aware_utc(snap.collected_at)


def test_order_follows_the_instant_not_the_wall_clock_text(db):
    sid = add_server(db)
    # As local text these sort a < b < c; as instants c < a < b.
    a = datetime(2026, 3, 8, 9, 0, tzinfo=PST)      # 17:00Z
    b = datetime(2026, 3, 8, 10, 0, tzinfo=PST)     # 18:00Z
    c = datetime(2026, 3, 8, 11, 0, tzinfo=IST)     # 05:30Z
    assert a.isoformat() < b.isoformat() < c.isoformat()
    for i, dt in enumerate((a, b, c)):
        add_metric(db, sid, dt, value=float(i))
    assert read_times(db) == [c, a, b]
    newest_first = [m.value for m in Metric.select()
                    .order_by(Metric.collected_at.desc()).bind(db)]
    assert newest_first == [1.0, 0.0, 2.0]


def test_range_comparisons_use_the_instant(db):
    sid = add_server(db)
    a = datetime(2026, 3, 8, 9, 0, tzinfo=PST)      # 17:00Z
    b = datetime(2026, 3, 8, 10, 0, tzinfo=PST)     # 18:00Z
    c = datetime(2026, 3, 8, 11, 0, tzinfo=IST)     # 05:30Z
    for dt in (a, b, c):
        add_metric(db, sid, dt)
    # [06:00Z, 17:30Z) written in a third offset: holds only a.
    start = datetime(2026, 3, 8, 7, 0, tzinfo=timezone(timedelta(hours=1)))
    end = datetime(2026, 3, 8, 17, 30, tzinfo=UTC)
    in_range = Metric.select().where((Metric.collected_at >= start)
                                     & (Metric.collected_at < end))
    assert read_times(db, in_range) == [a]
    b_in_adelaide = datetime(2026, 3, 9, 3, 30, tzinfo=timezone(timedelta(hours=9, minutes=30)))
    at_b = Metric.select().where(Metric.collected_at == b_in_adelaide)
    assert read_times(db, at_b) == [b]
    between = Metric.select().where(Metric.collected_at.between(c, a))
    assert read_times(db, between) == [c, a]


def test_same_instant_from_two_offsets_is_the_same_key(db):
    """The unique key sees instants: a re-sent sample in another offset is a duplicate."""
    import peewee as pw
    sid = add_server(db)
    add_metric(db, sid, datetime(2026, 3, 8, 15, 0, tzinfo=IST))
    with pytest.raises(pw.IntegrityError):
        with db.atomic():
            add_metric(db, sid, datetime(2026, 3, 8, 1, 30, tzinfo=PST))
    assert len(read_times(db)) == 1


def test_naive_datetime_is_refused_by_the_orm(db):
    sid = add_server(db)
    with pytest.raises(TimeError) as err:
        add_metric(db, sid, datetime(2026, 3, 8, 9, 30))
    assert "tzinfo" in str(err.value)
    with pytest.raises(TimeError):
        Server.insert(name="naive", created_at=datetime(2026, 3, 8)).execute(db)
    assert read_times(db) == []


def test_naive_datetime_is_refused_in_a_filter(db):
    with pytest.raises(TimeError):
        list(Metric.select().where(Metric.collected_at >= datetime(2026, 3, 8)).bind(db))


@pytest.mark.sqlite_only
def test_sqlite_stores_integer_epoch_microseconds(db):
    sid = add_server(db)
    dt = datetime(2026, 3, 8, 15, 0, 0, 123456, tzinfo=IST)
    add_metric(db, sid, dt)
    (stored, kind) = db.execute_sql(
        "SELECT collected_at, typeof(collected_at) FROM metrics").fetchone()
    assert kind == "integer"
    assert stored == epoch_micros(dt)


@pytest.mark.postgres
def test_postgresql_stores_the_instant_as_timestamptz(db):
    sid = add_server(db)
    dt = datetime(2026, 3, 8, 15, 0, 0, 123456, tzinfo=IST)
    add_metric(db, sid, dt)
    (micros,) = db.execute_sql(
        "SELECT (extract(epoch FROM collected_at) * 1000000)::bigint FROM metrics"
    ).fetchone()
    assert micros == epoch_micros(dt)


# -- property: any aware datetime survives the round trip ---------------------------------

offsets = st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59).map(
    lambda minutes: timezone(timedelta(minutes=minutes)))
aware = st.datetimes(min_value=datetime(1900, 1, 2), max_value=datetime(2200, 12, 30),
                     timezones=offsets)


@settings(max_examples=50, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(instants=st.lists(aware, min_size=1, max_size=5,
                         unique_by=lambda dt: epoch_micros(dt)))
def test_round_trip_property(db, instants):
    db.execute_sql("DELETE FROM metrics")
    db.execute_sql("DELETE FROM servers")
    sid = add_server(db)
    for i, dt in enumerate(instants):
        add_metric(db, sid, dt, value=float(i))
    rows = list(Metric.select().order_by(Metric.collected_at).bind(db))
    expected = sorted(range(len(instants)), key=lambda i: epoch_micros(instants[i]))
    assert [r.value for r in rows] == [float(i) for i in expected]
    for row, i in zip(rows, expected):
        assert_aware_utc(row.collected_at)
        assert row.collected_at == instants[i]
        assert epoch_micros(row.collected_at) == epoch_micros(instants[i])
