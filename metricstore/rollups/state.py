"""The mergeable state of one bucket of one series, and how states merge.

Times are integer epoch microseconds (UTC). Per bucket: count, sum, min,
max, first and last (time, value), a quantile :class:`Sketch`, and for
counters the reset-aware ``increase``, the ``elapsed`` seconds and the
number of ``pairs`` over consecutive samples inside the bucket that are at
most ``max_gap`` apart (raw ``rate()``'s definition). The pair that
straddles two buckets is not stored: it is formed when states merge in time
order (here, at write time for coarser tiers, or at read time) from the
earlier state's last and the later one's first sample, so rates from a tier
equal rates from raw.
"""

from dataclasses import dataclass, field
from operator import itemgetter

from .sketch import Sketch
from .tiers import TIER_MAX_GAP_US, US

COLUMNS = ("n", "total", "low", "high", "first_at", "first_v", "last_at", "last_v",
           "increase", "elapsed", "pairs", "sketch")


_TIME, _VALUE = itemgetter(3), itemgetter(2)


def _pairs(times, values, max_gap_us):
    """(increase, elapsed seconds, pairs) over consecutive samples <= max_gap apart."""
    inc = el = 0.0
    pairs = 0
    pt, pv = times[0], values[0]
    for t, v in zip(times[1:], values[1:]):
        if t - pt <= max_gap_us:
            inc += v - pv if v >= pv else v
            el += (t - pt) / US
            pairs += 1
        pt, pv = t, v
    return inc, el, pairs


def _delta(prev, value):
    return value - prev if value >= prev else value       # a drop is a reset


@dataclass(eq=False)
class State:
    """One bucket's state; ``increase``/``elapsed``/``pairs`` are None for gauges."""
    start: int
    count: int = 0
    sum: float = 0.0
    min: float = None
    max: float = None
    first_at: int = None
    first: float = None
    last_at: int = None
    last: float = None
    increase: float = None
    elapsed: float = None
    pairs: int = None
    sketch: Sketch = field(default_factory=Sketch)

    @classmethod
    def of_points(cls, start, points, counter=False, max_gap_us=TIER_MAX_GAP_US):
        """State of ``points`` ((time us, value) ascending, distinct times)."""
        s = cls(start)
        s.extend(points, counter, max_gap_us)
        return s

    @classmethod
    def of_point(cls, t, v, counter=False, sketch=True):
        """State of one sample (a raw point at a read's edge)."""
        s = cls(t, 1, v, v, v, t, v, t, v)
        if counter:
            s.increase, s.elapsed, s.pairs = 0.0, 0.0, 0
        if sketch:
            s.sketch.add(v)
        return s

    @classmethod
    def of_rows(cls, start, rows, counter=False, max_gap_us=TIER_MAX_GAP_US):
        """State of staged rows ``(sid, mid, value, us)`` of one series, sorted
        by time; of rows repeating a time the first wins (the raw insert's rule)."""
        times = list(map(_TIME, rows))
        if len(set(times)) != len(times):
            points, last = [], None
            for r in rows:
                if r[3] != last:
                    points.append((r[3], r[2]))
                    last = r[3]
            return cls.of_points(start, points, counter, max_gap_us)
        values = list(map(_VALUE, rows))
        s = cls(start, len(values), sum(values), min(values), max(values),
                times[0], values[0], times[-1], values[-1])
        s.sketch.add_many(values)
        if counter:
            s.increase, s.elapsed, s.pairs = _pairs(times, values, max_gap_us)
        return s

    def extend(self, points, counter=False, max_gap_us=TIER_MAX_GAP_US):
        """Add ``points`` that all come after this state's last sample."""
        if not points:
            return
        values = [v for _, v in points]
        self.sketch.add_many(values)
        low, high = min(values), max(values)
        if self.count:
            low, high = min(low, self.min), max(high, self.max)
        else:
            self.first_at, self.first = points[0]
        if counter:
            inc = self.increase or 0.0
            el = self.elapsed or 0.0
            pairs = self.pairs or 0
            pt, pv = (self.last_at, self.last) if self.count else points[0]
            for t, v in points if self.count else points[1:]:
                if t - pt <= max_gap_us:
                    inc += v - pv if v >= pv else v
                    el += (t - pt) / US
                    pairs += 1
                pt, pv = t, v
            self.increase, self.elapsed, self.pairs = inc, el, pairs
        total = self.sum
        for v in values:                     # in time order, as the raw SUM adds
            total += v
        self.count += len(values)
        self.sum, self.min, self.max = total, low, high
        self.last_at, self.last = points[-1]

    def row(self):
        """Values in :data:`COLUMNS` order, the sketch encoded."""
        return (self.count, self.sum, self.min, self.max, self.first_at, self.first,
                self.last_at, self.last, self.increase, self.elapsed, self.pairs,
                self.sketch.encode())

    @classmethod
    def from_row(cls, start, values, decode=True):
        (count, total, low, high, first_at, first, last_at, last, inc, el, pairs,
         sketch) = values
        return cls(start, count, total, low, high, first_at, first, last_at, last, inc, el,
                   pairs, Sketch.decode(sketch) if decode and sketch is not None else Sketch())

    def copy_into(self, start):
        out = State(start)
        out.absorb(self)
        return out

    def absorb(self, later, max_gap_us=TIER_MAX_GAP_US, ordered=True):
        """Merge ``later`` (whose samples all come after ours when ``ordered``)
        into this state. Counters need order; gauges merge in any order."""
        if not later.count:
            return self
        if not self.count:
            (self.count, self.sum, self.min, self.max, self.first_at, self.first,
             self.last_at, self.last, self.increase, self.elapsed, self.pairs) = (
                later.count, later.sum, later.min, later.max, later.first_at, later.first,
                later.last_at, later.last, later.increase, later.elapsed, later.pairs)
            self.sketch = Sketch().merge(later.sketch)
            return self
        if self.increase is not None and later.increase is not None:
            inc, el, pairs = (self.increase + later.increase, self.elapsed + later.elapsed,
                              self.pairs + later.pairs)
            gap = later.first_at - self.last_at
            if gap <= max_gap_us:
                inc += _delta(self.last, later.first)
                el += gap / US
                pairs += 1
            self.increase, self.elapsed, self.pairs = inc, el, pairs
        self.count += later.count
        self.sum += later.sum
        self.min = min(self.min, later.min)
        self.max = max(self.max, later.max)
        if later.first_at < self.first_at:
            self.first_at, self.first = later.first_at, later.first
        if later.last_at > self.last_at:
            self.last_at, self.last = later.last_at, later.last
        self.sketch.merge(later.sketch)
        return self

    def overlaps(self, other):
        """True when the two states' samples interleave in time."""
        return not (other.first_at > self.last_at or other.last_at < self.first_at)


def merge_ordered(start, states, max_gap_us=TIER_MAX_GAP_US):
    """One state from ``states`` sorted by time and not overlapping."""
    out = State(start)
    for s in states:
        out.absorb(s, max_gap_us)
    return out
