"""MonthlyStrategy: which UTC calendar-month partitions should exist.

Pure tests (no database): the clock is walked across month and year
boundaries, a leap February and non-UTC zones. Expected months come from
``time.gmtime`` of the epoch seconds and ``calendar.monthrange``, not from
the datetime arithmetic the strategy uses.
"""

import calendar
import time
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metricstore.errors import TimeError
from metricstore.partitioning import MonthlyStrategy

UTC = timezone.utc
IST = timezone(timedelta(hours=5, minutes=30))     # +05:30
PST = timezone(timedelta(hours=-8))                # -08:00
ZONES = [UTC, IST, PST, timezone(timedelta(hours=14)), timezone(timedelta(hours=-12)),
         ZoneInfo("Asia/Kolkata"), ZoneInfo("America/Los_Angeles"),
         ZoneInfo("Australia/Lord_Howe")]

strategy = MonthlyStrategy()


# -- the independent oracle ---------------------------------------------------------
def utc_year_month(instant):
    """(year, month) of ``instant`` on the UTC calendar, via the C library."""
    t = time.gmtime(instant.timestamp())
    return t.tm_year, t.tm_mon


def next_year_month(ym, n=1):
    year, month = ym
    for _ in range(n):
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return year, month


def month_start_epoch(ym):
    return calendar.timegm((ym[0], ym[1], 1, 0, 0, 0))


def assert_exact_utc_month_start(dt, ym):
    """``dt`` is the first microsecond of ``ym`` on the UTC calendar, in UTC."""
    assert dt.utcoffset() == timedelta(0), dt
    assert (dt.year, dt.month, dt.day, dt.hour, dt.minute, dt.second,
            dt.microsecond) == (ym[0], ym[1], 1, 0, 0, 0, 0), dt
    assert dt.timestamp() == month_start_epoch(ym)


def expected_wanted(now, ahead=3):
    first = utc_year_month(now)
    return [next_year_month(first, i) for i in range(ahead + 1)]


# -- names ----------------------------------------------------------------------------
@pytest.mark.parametrize("start, name", [
    (datetime(2026, 11, 1, tzinfo=UTC), "metrics_p2026_11"),
    (datetime(2027, 1, 1, tzinfo=UTC), "metrics_p2027_01"),
    (datetime(2028, 2, 1, tzinfo=UTC), "metrics_p2028_02"),
    (datetime(999, 12, 1, tzinfo=UTC), "metrics_p0999_12"),
])
def test_names_are_zero_padded_and_locale_free(start, name):
    assert strategy.name("metrics", start) == name


def test_names_sort_in_time_order():
    starts = [datetime(y, m, 1, tzinfo=UTC) for y in (2026, 2027) for m in range(1, 13)]
    names = [strategy.name("server_snapshots", s) for s in starts]
    assert names == sorted(names)
    assert len(set(names)) == 24


# -- bounds ---------------------------------------------------------------------------
@pytest.mark.parametrize("year, month, days", [
    (2026, 12, 31), (2027, 1, 31), (2027, 2, 28), (2028, 2, 29), (2028, 4, 30),
    (2100, 2, 28), (2000, 2, 29),
])
def test_bounds_span_exactly_one_calendar_month(year, month, days):
    start, end = strategy.bounds(datetime(year, month, 1, tzinfo=UTC))
    assert_exact_utc_month_start(start, (year, month))
    assert_exact_utc_month_start(end, next_year_month((year, month)))
    assert end - start == timedelta(days=days)
    assert calendar.monthrange(year, month)[1] == days


def test_leap_february_2028_has_29_days_and_march_follows():
    feb = datetime(2028, 2, 1, tzinfo=UTC)
    start, end = strategy.bounds(feb)
    assert end == datetime(2028, 3, 1, tzinfo=UTC)
    assert (end - start).days == 29
    leap_day = datetime(2028, 2, 29, 23, 59, 59, 999999, tzinfo=UTC)
    assert strategy.wanted(leap_day)[0] == feb
    assert strategy.wanted(leap_day + timedelta(microseconds=1))[0] == end


def test_consecutive_bounds_tile_the_time_axis():
    month = datetime(2026, 10, 1, tzinfo=UTC)
    for _ in range(40):                      # through 2028's leap February
        start, end = strategy.bounds(month)
        assert start == month
        assert strategy.bounds(end)[0] == end
        assert (end - start).days == calendar.monthrange(start.year, start.month)[1]
        month = end
    assert month == datetime(2030, 2, 1, tzinfo=UTC)


# -- wanted(): walking the clock -------------------------------------------------------
def test_december_to_january_rolls_the_year():
    last = datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    assert strategy.wanted(last) == [datetime(2026, 12, 1, tzinfo=UTC),
                                     datetime(2027, 1, 1, tzinfo=UTC),
                                     datetime(2027, 2, 1, tzinfo=UTC),
                                     datetime(2027, 3, 1, tzinfo=UTC)]
    first = last + timedelta(microseconds=1)
    assert strategy.wanted(first) == [datetime(2027, 1, 1, tzinfo=UTC),
                                      datetime(2027, 2, 1, tzinfo=UTC),
                                      datetime(2027, 3, 1, tzinfo=UTC),
                                      datetime(2027, 4, 1, tzinfo=UTC)]


def test_walking_the_clock_hourly_from_october_2026_to_april_2028():
    now = datetime(2026, 10, 1, 0, 0, tzinfo=UTC) - timedelta(minutes=30)
    end = datetime(2028, 4, 2, tzinfo=UTC)
    step = timedelta(hours=7, minutes=13)    # lands on every hour of the day over time
    seen = set()
    while now < end:
        wanted = strategy.wanted(now)
        expected = expected_wanted(now)
        assert len(wanted) == 4
        for got, ym in zip(wanted, expected):
            assert_exact_utc_month_start(got, ym)
        seen.add(expected[0])
        now += step
    assert (2027, 1) in seen and (2028, 2) in seen and len(seen) == 20


@pytest.mark.parametrize("now, ym", [
    # 00:30 on 1 January in India is still 31 December (19:00) in UTC
    (datetime(2027, 1, 1, 0, 30, tzinfo=IST), (2026, 12)),
    # 05:29:59 on 1 January in India: the last second of December in UTC
    (datetime(2027, 1, 1, 5, 29, 59, tzinfo=IST), (2026, 12)),
    (datetime(2027, 1, 1, 5, 30, tzinfo=IST), (2027, 1)),
    # 23:30 on 30 November in California is already 1 December in UTC
    (datetime(2026, 11, 30, 23, 30, tzinfo=PST), (2026, 12)),
    (datetime(2026, 12, 31, 16, 0, tzinfo=PST), (2027, 1)),
    (datetime(2026, 12, 31, 15, 59, 59, tzinfo=PST), (2026, 12)),
    # leap day near midnight in both zones
    (datetime(2028, 2, 29, 23, 45, tzinfo=PST), (2028, 3)),
    (datetime(2028, 3, 1, 0, 15, tzinfo=IST), (2028, 2)),
    (datetime(2028, 3, 1, 4, 0, tzinfo=ZoneInfo("Asia/Kolkata")), (2028, 2)),
    (datetime(2026, 11, 30, 23, 0, tzinfo=ZoneInfo("America/Los_Angeles")), (2026, 12)),
])
def test_current_month_is_the_utc_month_whatever_the_zone_of_now(now, ym):
    assert utc_year_month(now) == ym          # the oracle agrees with the table
    wanted = strategy.wanted(now)
    assert_exact_utc_month_start(wanted[0], ym)
    start, end = strategy.bounds(wanted[0])
    assert_exact_utc_month_start(end, next_year_month(ym))
    for got, expected in zip(wanted, expected_wanted(now)):
        assert_exact_utc_month_start(got, expected)


@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31),
                    timezones=st.sampled_from(ZONES)))
def test_bounds_are_exact_utc_month_starts_for_any_instant(now):
    for got, ym in zip(strategy.wanted(now), expected_wanted(now)):
        assert_exact_utc_month_start(got, ym)
        start, end = strategy.bounds(got)
        assert_exact_utc_month_start(end, next_year_month(ym))
    first_start, first_end = strategy.bounds(strategy.wanted(now)[0])
    assert first_start.timestamp() <= now.timestamp() < first_end.timestamp()


@pytest.mark.parametrize("ahead", [0, 1, 3, 12])
def test_ahead_sets_how_many_months_follow_the_current_one(ahead):
    now = datetime(2026, 11, 20, 8, tzinfo=UTC)
    wanted = MonthlyStrategy(ahead=ahead).wanted(now)
    assert len(wanted) == ahead + 1
    for got, ym in zip(wanted, expected_wanted(now, ahead)):
        assert_exact_utc_month_start(got, ym)


def test_months_holding_data_are_wanted_in_utc_terms():
    now = datetime(2026, 6, 10, tzinfo=UTC)
    data = [datetime(2025, 6, 14, 12, tzinfo=UTC),             # a year ago
            datetime(2026, 2, 1, 1, 0, tzinfo=IST),            # 31 Jan 19:30 UTC
            datetime(2027, 1, 31, 20, 0, tzinfo=PST)]          # 1 Feb 04:00 UTC
    wanted = strategy.wanted(now, data)
    expected = sorted({utc_year_month(d) for d in data} | set(expected_wanted(now)))
    assert len(wanted) == len(expected) == 7
    for got, ym in zip(wanted, expected):
        assert_exact_utc_month_start(got, ym)


# -- retention cutoff ------------------------------------------------------------------
@pytest.mark.parametrize("days", [1, 7, 30, 365, 3660])
def test_cutoff_is_exactly_retention_days_before_now(days):
    now = datetime(2028, 3, 30, 13, 37, 11, 123456, tzinfo=UTC)
    cutoff = strategy.cutoff(now, days)
    assert now.timestamp() - cutoff.timestamp() == days * 86400
    assert cutoff.microsecond == 123456         # keeps the time of day: exact, not monthly


def test_cutoff_in_a_leap_march_lands_on_the_leap_day():
    assert strategy.cutoff(datetime(2028, 3, 30, 6, tzinfo=UTC), 30) == \
        datetime(2028, 2, 29, 6, tzinfo=UTC)


def test_wanted_drops_months_wholly_before_the_cutoff_only():
    now = datetime(2026, 6, 10, tzinfo=UTC)
    jan, apr, may = (datetime(2026, m, 1, tzinfo=UTC) for m in (1, 4, 5))
    # April ends at 1 May 00:00; with the cutoff exactly there April is all expired
    assert strategy.wanted(now, [jan, apr, may], cutoff=may) == \
        [datetime(2026, m, 1, tzinfo=UTC) for m in (5, 6, 7, 8, 9)]
    # one microsecond earlier, April's last microsecond is still young: keep April
    almost = may - timedelta(microseconds=1)
    assert strategy.wanted(now, [jan, apr, may], cutoff=almost) == \
        [datetime(2026, m, 1, tzinfo=UTC) for m in (4, 5, 6, 7, 8, 9)]


def test_wanted_with_a_thirty_day_cutoff_keeps_the_boundary_month():
    now = datetime(2026, 6, 10, tzinfo=UTC)
    cutoff = strategy.cutoff(now, 30)                            # 11 May
    data = [datetime(2026, m, 15, tzinfo=UTC) for m in (3, 4, 5)]
    assert strategy.wanted(now, data, cutoff) == \
        [datetime(2026, m, 1, tzinfo=UTC) for m in (5, 6, 7, 8, 9)]


def test_naive_now_is_refused():
    with pytest.raises(TimeError):
        strategy.wanted(datetime(2026, 6, 10))
