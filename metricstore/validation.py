"""Checking rows before they are written; every problem becomes a RowError.

The checks run once per row on the ingest hot path, so they are written as
plain comparisons; the slow diagnosis (why a datetime is bad) runs only for
rows that fail.
"""

import math
import operator
from dataclasses import dataclass
from datetime import datetime, timedelta

from .models import COUNTER, STATUSES
from .timeutil import EPOCH, ONE_US, to_micros

DEFAULT_MAX_SKEW = timedelta(minutes=5)
# The largest magnitude a metric value may have. Both engines store values as
# 8-byte floats: every integer up to 2^53 is exact there (10**30 would not be),
# and sums, averages and counter increases of even 10^12 such samples stay
# below 1e29, far inside the float range, so no aggregate can overflow on
# either engine (PostgreSQL raises "value out of range", SQLite returns inf).
MAX_VALUE = float(2 ** 53)
MAX_CONNECTIONS = 2 ** 31 - 1        # server_snapshots.connection_count is an INTEGER
# A write keeps the first this-many RowErrors (and counts every bad row), so
# a million bad rows cost bounded memory.
MAX_ROW_ERRORS = 1000
MIN_TIME = datetime(2000, 1, 1, tzinfo=EPOCH.tzinfo)
MIN_MICROS = to_micros(MIN_TIME)
NONNEGATIVE_UNITS = ("count", "ms", "sec", "req", "bytes", "req/s")


@dataclass(frozen=True)
class RowError:
    """One rejected row: its 0-based ``position`` in the batch, field and reason."""
    position: int
    field: str
    reason: str
    row: object = None

    def __str__(self):
        return "row %d: %s: %s" % (self.position, self.field, self.reason)


class RowErrors:
    """The row errors of one write, in bounded memory: the first ``limit``
    RowErrors are kept (``kept``), every one is counted (``total``), and so
    is every bad row (``rows``; a row may have several problems). Valid rows
    older than the retention cutoff are counted in ``expired`` (not errors)."""
    __slots__ = ("kept", "total", "rows", "expired", "limit")

    def __init__(self, limit=MAX_ROW_ERRORS):
        self.kept, self.total, self.rows, self.expired, self.limit = [], 0, 0, 0, limit

    def add(self, problems):
        """Record the RowErrors of one bad row."""
        self.rows += 1
        self.total += len(problems)
        room = self.limit - len(self.kept)
        if room > 0:
            self.kept.extend(problems[:room])


@dataclass(frozen=True)
class MetricRule:
    """What a metric's values may be: id, kind and the allowed [low, high]."""
    id: int
    name: str
    kind: str
    unit: str
    low: float
    high: float

    @classmethod
    def from_type(cls, metric_type):
        """Percentages 0..100; counters and counts, times, bytes 0..2^53; others ±2^53."""
        unit = metric_type.unit or ""
        low, high = -MAX_VALUE, MAX_VALUE
        if unit == "%":
            low, high = 0.0, 100.0
        elif metric_type.kind == COUNTER or unit in NONNEGATIVE_UNITS:
            low = 0.0
        return cls(metric_type.id, metric_type.name, metric_type.kind, unit, low, high)

    def describe_range(self):
        if self.high == MAX_VALUE:
            return ">= %s and <= 2^53" % _bound(self.low)
        return "%s..%s" % (_bound(self.low), _bound(self.high))


def _bound(value):
    if abs(value) == MAX_VALUE:
        return "-2^53" if value < 0 else "2^53"
    return "%d" % value if float(value).is_integer() else "%g" % value


def _shown(value):
    """``repr(value)``, shortened for integers of hundreds of digits."""
    text = repr(value)
    return text if len(text) <= 40 else "%s...(%d digits)" % (text[:12], len(text))


FINEST_BUCKET_US = 300_000_000


@dataclass(frozen=True)
class TimeBounds:
    """The collected_at values a write stores, in epoch microseconds:
    ``[low, high]``; ``low`` is the retention cutoff when one is given. A
    valid row before ``low`` (but not before 2000) is expired, not an error."""
    low: int
    high: int
    retention_days: int = None

    @classmethod
    def at(cls, now, max_skew, retention_days=None):
        low = MIN_MICROS
        if retention_days:
            # Rounded up to the finest rollup bucket (5 min): a write never
            # touches a bucket whose older raw rows retention may have deleted.
            cutoff = to_micros(now - timedelta(days=retention_days))
            low = max(low, -(-cutoff // FINEST_BUCKET_US) * FINEST_BUCKET_US)
        return cls(low, to_micros(now + max_skew), retention_days)

    def expired(self, micros):
        """Whether a time (epoch us) lies before the retention cutoff."""
        return micros < self.low


def time_problem(value, bounds):
    """Why ``value`` is not an acceptable collected_at (None if it is fine;
    being older than the retention cutoff is not a problem: see
    :meth:`TimeBounds.expired`)."""
    if not isinstance(value, datetime):
        return "must be an aware datetime, got %r" % (value,)
    if value.tzinfo is None or value.utcoffset() is None:
        return ("naive datetime %s; attach a zone, e.g. value.replace(tzinfo=timezone.utc)"
                % value.isoformat())
    micros = (value - EPOCH) // ONE_US
    if micros < MIN_MICROS:
        return "%s is before %s; check the collector's clock" % (
            value.isoformat(), MIN_TIME.date())
    if micros > bounds.high:
        return ("%s is in the future by more than the allowed skew; check the collector's "
                "clock or raise max_skew" % value.isoformat())
    return None


def server_id_of(value):
    """``value`` as a plain int id (numpy and other integer types too), else None."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def value_problem(value, rule):
    """Why ``value`` is not acceptable for ``rule`` (None if it is fine)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "must be a number, got %r" % (value,)
    if isinstance(value, float) and not math.isfinite(value):
        return "must be finite, got %r" % (value,)
    if abs(value) > MAX_VALUE:            # exact comparison, however large an int
        return ("%s is beyond 2^53 in magnitude, the limit for every metric: values are "
                "8-byte floats on both engines (exact only up to 2^53) and bounded so "
                "that sums and averages cannot overflow; scale the unit (e.g. bytes to "
                "MB)" % _shown(value))
    if not rule.low <= value <= rule.high:
        return "%s is out of range for %s (%s, unit %r)" % (
            _shown(value), rule.name, rule.describe_range(), rule.unit)
    return None


def unknown_metric(name, rules):
    return "unknown metric %r; known metrics: %s" % (name, ", ".join(sorted(rules)))


def unknown_server(server_id):
    return ("unknown server id %r; register it first with "
            "MetricRepository.add_server(name)" % (server_id,))


def status_problem(status):
    if status not in STATUSES:
        return "unknown status %r; use one of %s" % (status, ", ".join(STATUSES))
    return None
