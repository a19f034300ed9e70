"""Which source serves which part of a time range: the coarsest tier that
fits, finer ones at the edges, raw samples for what no tier aligns with.

Pure functions of integer epoch microseconds, so plans are tested directly.
A tier may serve ``[a, b)`` when both ends are multiples of its width, the
width divides the requested bucket width (if any), and ``a`` is not before
its retention horizon; raw serves anything after the raw horizon.
"""

from dataclasses import dataclass

from .tiers import RAW


@dataclass(frozen=True)
class Source:
    """A tier (``name``, ``width_us``) or raw (``width_us`` 0), usable from ``horizon``."""
    name: str
    width_us: int
    horizon: int
    tier: object = None


@dataclass(frozen=True)
class Segment:
    source: Source
    lo: int
    hi: int


def _ceil(x, w):
    return -(-x // w) * w


def plan(lo, hi, sources):
    """Segments covering ``[lo, hi)``: ``sources`` coarsest first, raw last.
    Parts before every source's horizon are left out (their data is gone)."""
    if lo >= hi or not sources:
        return []
    head, rest = sources[0], sources[1:]
    if head.name == RAW:
        start = max(lo, head.horizon)
        return [Segment(head, start, hi)] if start < hi else []
    w = head.width_us
    a, b = _ceil(max(lo, head.horizon), w), hi // w * w
    if a >= b:
        return plan(lo, hi, rest)
    return plan(lo, a, rest) + [Segment(head, a, b)] + plan(b, hi, rest)


def usable(sources, every_us=None):
    """The sources whose width divides ``every_us`` (all when None), raw kept."""
    return [s for s in sources if s.name == RAW or every_us is None
            or every_us % s.width_us == 0]
