"""A mergeable quantile sketch: DDSketch-style logarithmic bins.

A value ``v > 0`` falls in bin ``k = ceil(log_gamma(v))`` with
``gamma = (1 + a) / (1 - a)``; the bin's representative ``2 gamma^k / (gamma + 1)``
is within relative error ``a`` of every value in it. Negative values use a
mirrored store; ``|v| < ZERO`` counts as zero. Two sketches merge by adding
bin counts, so a coarser bucket's sketch is exactly the merge of its parts.

Encoding (``bytes``, both engines): a flags byte, the positive store as
``<offset int32><length uint16>`` plus dense counts (uint16, or uint32 when
flag ``WIDE``), then the zero count and the negative store when present.
A 5-minute bucket of a smooth gauge takes ~30-40 bytes.
"""

import math
from bisect import bisect_right
from collections import Counter
import struct
from array import array
from itertools import accumulate, repeat
from operator import add, mul

ALPHA = 0.01                           # stated relative error of a quantile
GAMMA = (1 + ALPHA) / (1 - ALPHA)
LOG_GAMMA = math.log(GAMMA)
INV_LOG_GAMMA = 1 / LOG_GAMMA
ZERO = 1e-9                            # |v| below this counts as 0
WIDE, HAS_ZERO, HAS_NEG = 1, 2, 4
_STORE = struct.Struct("<iH")
_ZERO = struct.Struct("<I")
_HALF = 2 / (GAMMA + 1)


def key(v):
    """Bin index of ``|v|`` (``|v| >= ZERO``)."""
    return math.ceil(math.log(v) * INV_LOG_GAMMA)


def representative(k):
    """The value a bin stands for (relative error <= ALPHA to all it holds)."""
    return _HALF * GAMMA ** k


class Store:
    """Dense counts of consecutive bins from ``offset``."""
    __slots__ = ("offset", "counts")

    def __init__(self, offset=0, counts=None):
        self.offset = offset
        self.counts = counts if counts is not None else []

    def __bool__(self):
        return bool(self.counts)

    def add_key(self, k, n=1):
        counts = self.counts
        if not counts:
            self.offset, self.counts = k, [n]
            return
        i = k - self.offset
        if i < 0:
            self.counts = [0] * -i + counts
            self.offset = k
            self.counts[0] += n
        elif i >= len(counts):
            counts.extend([0] * (i - len(counts) + 1))
            counts[i] += n
        else:
            counts[i] += n

    def merge(self, other):
        if not other.counts:
            return
        if not self.counts:
            self.offset, self.counts = other.offset, list(other.counts)
            return
        low = min(self.offset, other.offset)
        high = max(self.offset + len(self.counts), other.offset + len(other.counts))
        if low < self.offset or high > self.offset + len(self.counts):
            grown = [0] * (high - low)
            i = self.offset - low
            grown[i:i + len(self.counts)] = self.counts
            self.offset, self.counts = low, grown
        i = other.offset - self.offset
        j = i + len(other.counts)
        self.counts[i:j] = map(add, self.counts[i:j], other.counts)

    def total(self):
        return sum(self.counts)


class Sketch:
    """Counts per logarithmic bin; ``add``, ``merge``, ``quantile``, ``encode``.
    ``blob``: the encoding when known (set by a builder, cleared by a change)."""
    __slots__ = ("pos", "neg", "zero", "blob")

    def __init__(self):
        self.pos, self.neg, self.zero, self.blob = Store(), Store(), 0, None

    def _own(self):
        """About to change: the stored encoding no longer holds."""
        self.blob = None

    @classmethod
    def of(cls, values):
        s = cls()
        for v in values:
            s.add(v)
        return s

    def add(self, v):
        self._own()
        if v >= ZERO:
            self.pos.add_key(math.ceil(math.log(v) * INV_LOG_GAMMA))
        elif v <= -ZERO:
            self.neg.add_key(math.ceil(math.log(-v) * INV_LOG_GAMMA))
        else:
            self.zero += 1

    def add_many(self, values):
        """Add every value of a sequence (faster than :meth:`add` one by one)."""
        if not values:
            return
        self._own()
        if min(values) < ZERO:
            positive = [v for v in values if v >= ZERO]
            for v in values:
                if v < ZERO:
                    self.add(v)
            values = positive
            if not values:
                return
        counted = Counter(map(math.ceil, map(mul, map(math.log, values),
                                             repeat(INV_LOG_GAMMA))))
        low, high = min(counted), max(counted)
        counts = [0] * (high - low + 1)
        for k, c in counted.items():
            counts[k - low] = c
        self.pos.merge(Store(low, counts))

    def merge(self, other):
        """Add ``other``'s counts to this sketch (in place); returns self."""
        self._own()
        self.pos.merge(other.pos)
        self.neg.merge(other.neg)
        self.zero += other.zero
        return self

    @property
    def count(self):
        return self.pos.total() + self.neg.total() + self.zero

    def _at_rank(self, rank):
        """Representative of the value of 0-based ``rank`` in ascending order."""
        neg = self.neg.counts
        if neg:
            cum = list(accumulate(reversed(neg)))          # most negative first
            if rank < cum[-1]:
                return -representative(self.neg.offset + len(neg) - 1
                                       - bisect_right(cum, rank))
            rank -= cum[-1]
        if rank < self.zero:
            return 0.0
        rank -= self.zero
        counts = self.pos.counts
        if not counts:
            return 0.0
        cum = list(accumulate(counts))
        i = bisect_right(cum, rank)
        return representative(self.pos.offset + min(i, len(counts) - 1))

    def quantile(self, q, low=None, high=None):
        """The ``q`` quantile interpolated like ``percentile_cont`` (rank
        ``q * (n - 1)``), clamped to ``[low, high]`` (the exact min and max)
        when given; None when empty. Within ALPHA relative error of the exact
        answer when its two neighbouring order statistics share a sign."""
        if self.neg or self.zero:
            n = self.count
            at = self._at_rank
        else:                                 # the common case: one cumulative pass
            counts = self.pos.counts
            cum = list(accumulate(counts))
            n = cum[-1] if cum else 0
            last, offset = len(counts) - 1, self.pos.offset

            def at(rank):
                return representative(offset + min(bisect_right(cum, rank), last))
        if not n:
            return None
        rank = q * (n - 1)
        lo = int(rank)
        value = at(lo)
        frac = rank - lo
        if frac and lo + 1 < n:
            value += (at(lo + 1) - value) * frac
        if low is not None and value < low:
            value = low
        if high is not None and value > high:
            value = high
        return value

    def encode(self):
        if self.blob is not None:
            return self.blob
        try:                                 # narrow counts unless one passes 65535
            pos, neg = array("H", self.pos.counts), array("H", self.neg.counts)
            wide = 0
        except OverflowError:
            pos, neg = array("I", self.pos.counts), array("I", self.neg.counts)
            wide = WIDE
        flags = wide | (HAS_ZERO if self.zero else 0) | (HAS_NEG if self.neg else 0)
        parts = [bytes((flags,)), _STORE.pack(self.pos.offset, len(pos)), pos.tobytes()]
        if self.zero:
            parts.append(_ZERO.pack(self.zero))
        if self.neg:
            parts += [_STORE.pack(self.neg.offset, len(neg)), neg.tobytes()]
        return b"".join(parts)

    @classmethod
    def decode(cls, data):
        data = bytes(data)
        s = cls()
        flags = data[0]
        kind = "I" if flags & WIDE else "H"
        size = 4 if flags & WIDE else 2
        at = 1

        def store(at):
            offset, n = _STORE.unpack_from(data, at)
            at += _STORE.size
            counts = array(kind)
            counts.frombytes(data[at:at + n * size])
            return Store(offset, counts.tolist()), at + n * size

        s.pos, at = store(at)
        if flags & HAS_ZERO:
            (s.zero,) = _ZERO.unpack_from(data, at)
            at += _ZERO.size
        if flags & HAS_NEG:
            s.neg, at = store(at)
        return s


class EncodedSketch(Sketch):
    """A sketch known by its encoding: bins decoded only when read or
    changed (a new bucket's sketch is written back as it was built)."""
    __slots__ = ()

    def __init__(self, blob):
        self.blob = blob

    def __getattr__(self, name):          # pos / neg / zero not set yet
        if name not in ("pos", "neg", "zero"):
            raise AttributeError(name)
        decoded = Sketch.decode(self.blob)
        self.pos, self.neg, self.zero = decoded.pos, decoded.neg, decoded.zero
        return getattr(self, name)

    def _own(self):
        self.pos                          # decode before the encoding is dropped
        self.blob = None
