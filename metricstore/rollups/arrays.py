"""A batch's bucket states as numpy arrays: the write path's tier work
without a Python object per row or per bucket.

:func:`chunk_arrays` turns staged rows ``(sid, mid, value, us)`` into
sorted arrays, :func:`bucket_arrays` reduces them to one
:class:`BucketArrays` of 5-minute buckets, :func:`merge_buckets` merges
bucket arrays (across chunks, or into wider buckets) the way
``State.absorb`` merges in time order, and :class:`ArrayDelta` stands for
a level's ``{key: State}`` dict, making State objects only where a stored
row must be merged. :func:`chunk_states` is the per-bucket Python path for
small chunks and negative values. All times are epoch microseconds (UTC).
"""

from itertools import compress, groupby, repeat
from operator import floordiv, itemgetter

import numpy as np

from .sketch import HAS_ZERO, INV_LOG_GAMMA, ZERO, EncodedSketch, Sketch, Store
from .state import State
from .tiers import TIER_5M, TIER_MAX_GAP_US, US

W5 = TIER_5M.width_us
# A sketch encoding's head: flags, then the positive store's offset and length.
_HEAD_DTYPE = np.dtype([("flags", "u1"), ("offset", "<i4"), ("length", "<u2")])
_ENCODE_CELLS = 16_384         # sketch bins encoded at a time (~0.5 MB of scratch)
_MOVE_CELLS = 16_384           # sketch bins merged at a time (~0.5 MB of scratch)
_SERIES, _TIME = itemgetter(0, 1), itemgetter(3)
_SID, _MID, _VALUE = itemgetter(0), itemgetter(1), itemgetter(2)


def chunk_states(rows, counters):
    """``{(sid, mid, 5-minute bucket us): State}`` of rows sorted by (sid, mid,
    us), one bucket at a time (small chunks, negative values)."""
    out = {}
    of_rows = State.of_rows
    # Group boundaries found with C-level iteration only (no Python call per row).
    marks = zip(map(_SERIES, rows), map(floordiv, map(_TIME, rows), repeat(W5)))
    i = 0
    for ((sid, mid), b), group in groupby(marks):
        n = len(list(group))
        key = (sid, mid, b * W5)
        new = of_rows(key[2], rows[i:i + n], mid in counters)
        i += n
        old = out.get(key)                   # only if the chunk was not sorted
        out[key] = new if old is None else old.absorb(new)
    return out


def chunk_states_np(rows, counters):
    """:func:`chunk_states` in numpy: the same states (counts, min, max,
    first, last, counter pairs summed in time order, the same sketch bins),
    one Python step per bucket instead of several per row. None when the
    rows are not sorted or hold negative values (the caller falls back)."""
    arrays = chunk_arrays(rows)
    if arrays is None:
        return None
    return bucket_arrays(*arrays).states(frozenset(counters))


def chunk_arrays(rows):
    """``(sid, mid, value, us)`` arrays of staged rows (32 bytes a row),
    sorted by (sid, mid, us) (stably: of rows repeating a key the first
    stays first), or None when a value is negative."""
    # fromiter over itemgetters allocates no container object, so it triggers
    # no garbage collection (zip(*rows) did: 3x the time over a 254 k-row batch).
    n = len(rows)
    sid, mid, t = (np.fromiter(map(getter, rows), np.int64, n) for getter in (_SID, _MID, _TIME))
    v = np.fromiter(map(_VALUE, rows), np.float64, n)
    if (v <= -ZERO).any():
        return None
    same_series = (sid[1:] == sid[:-1]) & (mid[1:] == mid[:-1])
    step = t[1:] - t[:-1]
    if (~same_series & ((sid[1:] < sid[:-1]) | ((sid[1:] == sid[:-1]) & (mid[1:] < mid[:-1])))).any() \
            or (same_series & (step < 0)).any():
        order = np.lexsort((t, mid, sid))          # stable
        sid, mid, v, t = sid[order], mid[order], v[order], t[order]
    return sid, mid, v, t


def bucket_arrays(sid, mid, v, t, width=W5):
    """:class:`BucketArrays` of :func:`chunk_arrays`' output (all numpy) in
    buckets of ``width`` us."""
    n = len(v)
    same_series = (sid[1:] == sid[:-1]) & (mid[1:] == mid[:-1])
    step = t[1:] - t[:-1]
    keep = np.ones(n, dtype=bool)            # of rows repeating a key the first wins
    keep[1:] = ~(same_series & (step == 0))
    if not keep.all():
        sid, mid, v, t = sid[keep], mid[keep], v[keep], t[keep]
        n = len(v)
        same_series = (sid[1:] == sid[:-1]) & (mid[1:] == mid[:-1])
        step = t[1:] - t[:-1]
    return _buckets(sid, mid, v, t, same_series, step, width)


def _buckets(sid, mid, v, t, same_series, step, width):
    n = len(v)
    b = t // width
    same = same_series & (b[1:] == b[:-1])
    starts = np.flatnonzero(np.concatenate(([True], ~same)))
    ends = np.append(starts[1:], n)
    group = np.repeat(np.arange(len(starts)), ends - starts)
    count = ends - starts
    total = np.add.reduceat(v, starts)
    low, high = np.minimum.reduceat(v, starts), np.maximum.reduceat(v, starts)
    # Counter pairs inside a bucket, summed in time order (bincount adds in index order).
    ok = same & (step <= TIER_MAX_GAP_US)
    later = group[1:]
    ngroups = len(starts)
    delta = np.where(v[1:] >= v[:-1], v[1:] - v[:-1], v[1:])
    inc = np.bincount(later, weights=np.where(ok, delta, 0.0), minlength=ngroups)
    elapsed = np.bincount(later, weights=np.where(ok, step / US, 0.0), minlength=ngroups)
    pairs = np.bincount(later, weights=ok, minlength=ngroups).astype(np.int64)
    # Sketch bins: ceil(log_gamma(v)) of v >= ZERO; smaller values count as zero.
    pos = v >= ZERO
    zero = np.bincount(group, weights=~pos, minlength=ngroups).astype(np.int64)
    with np.errstate(divide="ignore"):
        k = np.ceil(np.log(np.where(pos, v, 1.0)) * INV_LOG_GAMMA).astype(np.int64)
    big = np.iinfo(np.int64).max
    kmin = np.minimum.reduceat(np.where(pos, k, big), starts)
    kmax = np.maximum.reduceat(np.where(pos, k, -big), starts)
    has = kmin <= kmax
    span = np.where(has, kmax - kmin + 1, 0)
    base = np.cumsum(span) - span
    cells = np.bincount((base[group] + k - np.where(has, kmin, 0)[group])[pos],
                        minlength=int(span.sum())).astype(np.uint32)   # <= the chunk's rows
    return BucketArrays(
        np.stack([sid[starts], mid[starts], b[starts] * width, count, t[starts], t[ends - 1],
                  pairs, zero, kmin, span, base]),
        np.stack([total, low, high, v[starts], v[ends - 1], inc, elapsed]), cells)


class BucketArrays:
    """A chunk's 5-minute states as arrays (~100 bytes a bucket, against
    ~600 as :class:`State` objects): ``ints`` rows sid, mid, bucket, count,
    first_at, last_at, pairs, zeros, sketch offset, span, cell base;
    ``floats`` rows sum, min, max, first, last, increase, elapsed; ``cells``
    the sketch bins of every bucket, concatenated in bucket order (uint32
    in a chunk)."""
    __slots__ = ("ints", "floats", "cells")

    def __init__(self, ints, floats, cells):
        self.ints, self.floats, self.cells = ints, floats, cells

    def narrow(self):
        """Whether every bin count fits the uint16 encoding."""
        return not len(self.cells) or int(self.cells.max()) <= 0xFFFF

    def subset(self, index):
        """The buckets at positions ``index``, their bins copied out in
        bucket order (as every BucketArrays keeps them)."""
        ints = self.ints[:, index]
        span, base = ints[9], ints[10]
        first = np.cumsum(span) - span
        cells = self.cells[np.repeat(base - first, span) + np.arange(int(span.sum()))]
        ints[10] = first
        return BucketArrays(ints, self.floats[:, index], cells)

    def encoded(self):
        """Every bucket's sketch encoding (bytes), exactly as
        :meth:`states` and ``Sketch.encode`` write it, built in numpy a few
        thousand bins at a time (bounded scratch memory). Only for
        :meth:`narrow` arrays."""
        span = self.ints[9]
        ends = np.cumsum(span)
        out, lo, n = [], 0, len(span)
        while lo < n:
            hi = max(lo + 1, int(np.searchsorted(ends, ends[lo] - span[lo] + _ENCODE_CELLS,
                                                 side="right")))
            out += self._encoded(lo, hi)
            lo = hi
        return out

    def _encoded(self, lo, hi):
        zero, offset, span, base = self.ints[7:11, lo:hi]
        first = int(base[0])
        cells = self.cells[first:int(base[-1] + span[-1])]
        has_zero = zero > 0
        size = 7 + 2 * span + 4 * has_zero
        ends = np.cumsum(size)
        starts = ends - size
        buf = np.zeros(int(ends[-1]), dtype=np.uint8)
        head = np.zeros(len(size), dtype=_HEAD_DTYPE)
        head["flags"] = np.where(has_zero, HAS_ZERO, 0)
        head["offset"] = np.where(span > 0, offset, 0)
        head["length"] = span
        buf[(starts[:, None] + np.arange(7)).ravel()] = head.view(np.uint8)
        # Bucket g's counts are cells[base[g]:base[g] + span[g]], in bucket order.
        at = np.repeat(starts + 7 - 2 * (base - first), 2 * span)
        at += np.arange(len(at))
        buf[at] = cells.astype("<u2").view(np.uint8)
        at = (starts + 7 + 2 * span)[has_zero]
        buf[(at[:, None] + np.arange(4)).ravel()] = zero[has_zero].astype("<u4").view(np.uint8)
        data = buf.tobytes()
        return [data[a:b] for a, b in zip(starts.tolist(), ends.tolist())]

    def rows(self, counters, keep=None):
        """Tier rows ``(sid, mid, bucket us, *COLUMNS)`` in key order, the
        same values :meth:`states` gives (``keep``: a bool mask of the
        buckets wanted). Only for :meth:`narrow` arrays."""
        sid, mid, b, cnt, fa, la, pairs = self.ints[:7].tolist()
        tot, lo, hi, fv, lv, inc, el = self.floats.tolist()
        n = len(sid)
        if counters:
            is_counter = [m in counters for m in mid]
            inc, el, pairs = ([x if c else None for x, c in zip(col, is_counter)]
                              for col in (inc, el, pairs))
        else:
            inc = el = pairs = [None] * n
        out = zip(sid, mid, b, cnt, tot, lo, hi, fa, fv, la, lv, inc, el, pairs,
                  self.encoded())
        return list(out if keep is None else compress(out, keep.tolist()))

    def states(self, counters):
        """``{(sid, mid, bucket us): State}`` (one Python step a bucket).
        Sketches keep the encoding :meth:`encoded` built, decoded only if a
        merge needs their bins; a count past 65535 makes plain bins."""
        if self.narrow():
            sketches = map(EncodedSketch, self.encoded())
        else:
            cells, empty = self.cells.tolist(), Store
            sketches = []
            for km, sp, bs, z in zip(*self.ints[[8, 9, 10, 7]].tolist()):
                sketch = Sketch.__new__(Sketch)
                sketch.pos = Store(km, cells[bs:bs + sp]) if sp else empty()
                sketch.neg, sketch.zero, sketch.blob = empty(), z, None
                sketches.append(sketch)
        out = {}
        for (g_sid, g_mid, g_b, cnt, fa, la, p_), (tot, lo, hi, fv, lv, i_, e_), sketch \
                in zip(zip(*self.ints[:7].tolist()), zip(*self.floats.tolist()), sketches):
            counter = g_mid in counters
            out[g_sid, g_mid, g_b] = State(g_b, cnt, tot, lo, hi, fa, fv, la, lv,
                                           i_ if counter else None, e_ if counter else None,
                                           p_ if counter else None, sketch)
        return out


def merge_buckets(parts, width):
    """``(BucketArrays, redo)``: the buckets of ``parts`` (each with unique
    keys) merged into buckets of ``width`` (a multiple of theirs), as
    ``State.absorb`` merges them in time order: counts, sums, extremes, first
    and last, zeros, sketch bins added, counter pairs across members counted
    when their gap is at most the tier gap. ``redo``: keys whose members
    interleave in time (a bucket staged twice; its merged values are not
    to be used)."""
    if len(parts) == 1:
        ints, floats, cells = parts[0].ints, parts[0].floats, parts[0].cells
    else:
        shift = np.cumsum([0] + [len(p.cells) for p in parts[:-1]])
        ints = np.concatenate([p.ints for p in parts], axis=1)
        ints[10] += np.repeat(shift, [p.ints.shape[1] for p in parts])
        floats = np.concatenate([p.floats for p in parts], axis=1)
        cells = np.concatenate([p.cells for p in parts])
    sid, mid, b, first_at = ints[0], ints[1], ints[2], ints[4]
    b = b - b % width
    if len(parts) > 1:
        order = np.lexsort((first_at, b, mid, sid))
        ints, floats, b = ints[:, order], floats[:, order], b[order]
        sid, mid, first_at = ints[0], ints[1], ints[4]
    n = len(b)
    same = (sid[1:] == sid[:-1]) & (mid[1:] == mid[:-1]) & (b[1:] == b[:-1])
    if len(parts) == 1 and not same.any() and (ints[2] == b).all():
        return parts[0], set()               # nothing to merge
    last_at = ints[5]
    starts = np.flatnonzero(np.concatenate(([True], ~same)))
    ends = np.append(starts[1:], n)
    groups = len(starts)
    member_group = np.repeat(np.arange(groups), ends - starts)
    clash = same & (first_at[1:] <= last_at[:-1])
    redo = set(zip(sid[1:][clash].tolist(), mid[1:][clash].tolist(), b[1:][clash].tolist()))
    count, pairs, zero = (np.add.reduceat(ints[i], starts) for i in (3, 6, 7))
    total, inc, elapsed = (np.add.reduceat(floats[i], starts) for i in (0, 5, 6))
    low, high = np.minimum.reduceat(floats[1], starts), np.maximum.reduceat(floats[2], starts)
    # The pair joining one member's last sample to the next member's first.
    later, earlier = floats[3][1:], floats[4][:-1]
    gap = first_at[1:] - last_at[:-1]
    ok = same & (gap <= TIER_MAX_GAP_US)
    joins = member_group[1:]
    inc += np.bincount(joins, weights=np.where(ok, np.where(later >= earlier, later - earlier,
                                                              later), 0.0), minlength=groups)
    elapsed += np.bincount(joins, weights=np.where(ok, gap / US, 0.0), minlength=groups)
    pairs += np.bincount(joins, weights=ok, minlength=groups).astype(np.int64)
    # Sketch bins: each member's counts moved onto its group's offset.
    offset, span, base = ints[8], ints[9], ints[10]
    has = span > 0
    big = np.iinfo(np.int64).max
    kmin = np.minimum.reduceat(np.where(has, offset, big), starts)
    kmax = np.maximum.reduceat(np.where(has, offset + span - 1, -big), starts)
    any_bins = kmin <= kmax
    new_span = np.where(any_bins, kmax - kmin + 1, 0)
    new_base = np.cumsum(new_span) - new_span
    # Bin j of member m sits at cells[base[m] + j] and goes to
    # new_base[g] + offset[m] - kmin[g] + j of its group g; moved a few
    # thousand bins at a time (bounded scratch memory, as in encoding).
    shift = np.where(has, (new_base - np.where(any_bins, kmin, 0))[member_group]
                     + np.where(has, offset, 0), 0)
    wide = int(count.sum()) >= 1 << 32
    new_cells = np.zeros(int(new_span.sum()), dtype=np.int64 if wide else np.uint32)
    last = np.cumsum(span)
    lo = 0
    while lo < n:
        hi = max(lo + 1, int(np.searchsorted(last, last[lo] - span[lo] + _MOVE_CELLS,
                                             side="right")))
        sp = span[lo:hi]
        within = np.arange(int(sp.sum())) - np.repeat(np.cumsum(sp) - sp, sp)
        np.add.at(new_cells, np.repeat(shift[lo:hi], sp) + within,
                  cells[np.repeat(base[lo:hi], sp) + within])
        lo = hi
    out_ints = np.stack([sid[starts], mid[starts], b[starts], count, first_at[starts],
                         last_at[ends - 1], pairs, zero, np.where(any_bins, kmin, big),
                         new_span, new_base])
    out_floats = np.stack([total, low, high, floats[3][starts], floats[4][ends - 1], inc,
                           elapsed])
    return BucketArrays(out_ints, out_floats, new_cells), redo


class ArrayDelta:
    """One level's batch states as :class:`BucketArrays` (unique keys, in
    key order), used like the ``{key: State}`` dict it stands for: State
    objects are made only for the buckets a stored row touches, every
    other bucket goes to its table as a row built from the arrays."""

    def __init__(self, arrays, counters):
        self.arrays, self.counters = arrays, counters
        self.index = {k: i for i, k in enumerate(zip(*arrays.ints[:3].tolist()))}
        self.dropped = set()

    def __iter__(self):
        return (k for k in self.index if k not in self.dropped)

    def __len__(self):
        return len(self.index) - len(self.dropped)

    def __contains__(self, key):
        return key in self.index and key not in self.dropped

    def pop(self, key, default=None):
        """Leave bucket ``key`` out (it is recomputed instead)."""
        if key in self:
            self.dropped.add(key)
        return default

    def samples(self):
        """The distinct rows the states hold."""
        return int(self.arrays.ints[3].sum())

    def split(self, touched):
        """``({key: State} of ``touched``, tier rows of every other bucket
        still in)``."""
        a = self.arrays
        index = [self.index[k] for k in touched]
        if not a.narrow():                   # a count passes 65535: Sketch.encode
            rest = a.states(self.counters)
            states = {k: rest.pop(k) for k in touched}
            return states, [k + rest[k].row() for k in self if k in rest]
        states = a.subset(index).states(self.counters) if index else {}
        keep = None
        if index or self.dropped:
            keep = np.ones(len(self.index), dtype=bool)
            keep[index + [self.index[k] for k in self.dropped]] = False
        return states, a.rows(self.counters, keep)
