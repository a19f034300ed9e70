"""UTC helpers: every instant in metricstore is an aware UTC datetime.

Naive datetimes are refused (they would silently take the host's zone).
Partition and bucket bounds are computed here, in Python, never from a
database session's time zone.
"""

import math
from datetime import datetime, timedelta, timezone

UTC = timezone.utc
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_US = timedelta(microseconds=1)

from .errors import TimeError  # noqa: E402


def utcnow():
    """The current time as an aware UTC datetime."""
    return datetime.now(UTC)


def to_utc(value, name="datetime"):
    """Return ``value`` (an aware datetime) converted to UTC.

    Raises :class:`TimeError` for naive datetimes and non-datetimes.
    """
    if not isinstance(value, datetime):
        raise TimeError("%s must be a timezone-aware datetime, got %r; pass e.g. "
                        "datetime(2026, 1, 31, 12, 0, tzinfo=timezone.utc)"
                        % (name, value))
    if value.tzinfo is None or value.utcoffset() is None:
        raise TimeError("%s %s is naive (no time zone); pass an aware datetime, e.g. "
                        "value.replace(tzinfo=timezone.utc) if it is already UTC"
                        % (name, value.isoformat()))
    return value.astimezone(UTC)


def to_micros(value):
    """Aware datetime -> integer microseconds since the Unix epoch (exact)."""
    return (value - EPOCH) // ONE_US


def from_micros(micros):
    """Integer microseconds since the Unix epoch -> aware UTC datetime."""
    return EPOCH + timedelta(microseconds=micros)


def month_start(value):
    """First instant (UTC) of the calendar month holding ``value``."""
    value = to_utc(value)
    return datetime(value.year, value.month, 1, tzinfo=UTC)


def add_months(start, months):
    """``start`` (a month start) moved by ``months`` calendar months."""
    index = start.year * 12 + (start.month - 1) + months
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def months_between(first, last):
    """Month starts from the month of ``first`` to that of ``last``, inclusive."""
    month, end = month_start(first), month_start(last)
    out = []
    while month <= end:
        out.append(month)
        month = add_months(month, 1)
    return out


def bucket_floor_micros(micros, every_micros):
    """Start (epoch microseconds) of the UTC-aligned bucket holding ``micros``."""
    return micros - micros % every_micros


def to_timedelta(value, name="interval"):
    """Accept a timedelta or a number of seconds; refuse non-positive widths."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise TimeError("%s must be finite, got %r" % (name, value))
        value = timedelta(seconds=value)
    if not isinstance(value, timedelta):
        raise TimeError("%s must be a timedelta or seconds, got %r; pass e.g. "
                        "timedelta(hours=1)" % (name, value))
    if value <= timedelta(0) or value % ONE_US:
        raise TimeError("%s must be a positive whole number of microseconds, got %r"
                        % (name, value))
    return value


def check_range(start, end):
    """Validate a half-open ``[start, end)`` range; return both in UTC."""
    start, end = to_utc(start, "start"), to_utc(end, "end")
    if end < start:
        raise TimeError("end %s is before start %s; ranges are [start, end)"
                        % (end.isoformat(), start.isoformat()))
    return start, end


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text):
    """'15s', '5m', '1h', '7d', '2w' (or plain seconds) -> timedelta."""
    text = str(text).strip().lower()
    try:
        if text and text[-1] in _UNITS:
            seconds = float(text[:-1]) * _UNITS[text[-1]]
        else:
            seconds = float(text)
    except ValueError:
        raise TimeError("duration %r is not understood; use e.g. 15s, 5m, 1h, 7d" % text) \
            from None
    return to_timedelta(seconds, "duration %r" % text)


def parse_when(text, now=None):
    """'now', '-24h' / '-7d' (relative to now), or ISO-8601 with an offset -> aware UTC."""
    now = now or utcnow()
    text = str(text).strip()
    if text.lower() == "now":
        return now
    if text[:1] in "+-" and text[1:2].isdigit() and text[-1:].lower() in _UNITS:
        delta = parse_duration(text[1:])
        return now - delta if text[0] == "-" else now + delta
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise TimeError("time %r is not understood; use ISO-8601 with an offset "
                        "(2026-11-26T10:00:00+00:00), 'now' or a relative time like -24h"
                        % text) from None
    return to_utc(value, "time %r" % text)
