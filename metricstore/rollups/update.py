"""The write path's tier update: runs inside the write transaction, from
exactly the rows that were inserted.

The writer hands each chunk of staged rows to :meth:`TierUpdater.add`,
which keeps it as arrays of 5-minute, hourly and daily buckets (numpy; of
rows repeating a key the first wins, as in the raw insert), and after each
flush's raw insert, in the same transaction, the number of rows it stored
to :meth:`~TierUpdater.flushed`: a flush inserted whole takes the batch
states built from its rows, one inserted not at all (a re-send) builds
nothing and changes nothing, and a partly inserted one is recomputed from
raw.

The update then merges each bucket's batch state into the
stored one (in time order; counter samples that interleave with stored ones
are recomputed from raw instead), does the same one level up for hours and
days, and upserts. A re-sent batch inserts nothing and so changes no tier.
"""

import gc
import struct
from contextlib import contextmanager
from itertools import groupby, repeat
from operator import floordiv, itemgetter

import numpy as np

from . import store
from .rebuild_helpers import coarsen
from .sketch import HAS_ZERO, INV_LOG_GAMMA, ZERO, EncodedSketch, Sketch, Store
from .state import State
from .tiers import TIER_1D, TIER_1H, TIER_5M, TIER_MAX_GAP_US, US

W5 = TIER_5M.width_us
WIDTHS = (W5, TIER_1H.width_us, TIER_1D.width_us)
_HEAD, _ZERO_COUNT = struct.Struct("<BiH"), struct.Struct("<I")
_SERIES, _TIME = itemgetter(0, 1), itemgetter(3)
_SID, _MID, _VALUE = itemgetter(0), itemgetter(1), itemgetter(2)
_ROW_KEY = itemgetter(0, 1, 3)


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


VECTOR_MIN_ROWS = 256          # smaller chunks: chunk_states (numpy costs more)


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


def bucket_arrays(sid, mid, v, t, widths=(W5,)):
    """:class:`BucketArrays` of :func:`chunk_arrays`' output (all numpy), one
    for each bucket width in ``widths``."""
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
    out = [_buckets(sid, mid, v, t, same_series, step, w) for w in widths]
    return out[0] if len(widths) == 1 else out


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
                        minlength=int(span.sum()))
    return BucketArrays(
        np.stack([sid[starts], mid[starts], b[starts] * width, count, t[starts], t[ends - 1],
                  pairs, zero, kmin, span, base]),
        np.stack([total, low, high, v[starts], v[ends - 1], inc, elapsed]), cells)


class BucketArrays:
    """A chunk's 5-minute states as arrays (~100 bytes a bucket, against
    ~600 as :class:`State` objects): ``ints`` rows sid, mid, bucket, count,
    first_at, last_at, pairs, zeros, sketch offset, span, cell base;
    ``floats`` rows sum, min, max, first, last, increase, elapsed; ``cells``
    the sketch bins of every bucket, concatenated."""
    __slots__ = ("ints", "floats", "cells")

    def __init__(self, ints, floats, cells):
        self.ints, self.floats, self.cells = ints, floats, cells

    def states(self, counters):
        """``{(sid, mid, bucket us): State}`` (one Python step a bucket)."""
        narrow = not len(self.cells) or int(self.cells.max()) <= 0xFFFF
        if narrow:
            raw = self.cells.astype("<u2").tobytes()
        else:
            cells = self.cells.tolist()
        head, zero_count = _HEAD.pack, _ZERO_COUNT.pack
        new_sketch, empty = Sketch.__new__, Store
        out = {}
        for (g_sid, g_mid, g_b, cnt, fa, la, p_, z, km, sp, bs), (tot, lo, hi, fv, lv, i_, e_) \
                in zip(zip(*self.ints.tolist()), zip(*self.floats.tolist())):
            if narrow:
                # Its encoding, as Sketch.encode writes it (flags, offset, length,
                # uint16 counts, the zero count when there are zeros); bins
                # decoded only if a merge needs them.
                sketch = EncodedSketch(head(HAS_ZERO if z else 0, km if sp else 0, sp)
                                       + raw[2 * bs:2 * (bs + sp)]
                                       + (zero_count(z) if z else b""))
            else:
                sketch = new_sketch(Sketch)
                sketch.pos = Store(km, cells[bs:bs + sp]) if sp else empty()
                sketch.neg, sketch.zero, sketch.blob = empty(), z, None
            counter = g_mid in counters
            out[g_sid, g_mid, g_b] = State(g_b, cnt, tot, lo, hi, fa, fv, la, lv,
                                           i_ if counter else None, e_ if counter else None,
                                           p_ if counter else None, sketch)
        return out


class TierUpdater:
    """Keeps the tiers in step with one ``record_many`` call.

    ``counters``: ids of the counter metric types (their states carry the
    reset-aware increase). Holds the rows staged since the last flush.
    """

    def __init__(self, db, counters):
        self.db = db
        self.counters = frozenset(counters)
        self.pending = []           # staged chunks; states built only if rows went in

    def add(self, rows):
        """Staged rows ``(sid, mid, value, us)`` in any order: kept as arrays
        of 5-minute, hourly and daily buckets until the flush says whether
        any went in (a re-send builds no state); chunks the arrays cannot
        take (small, or with negative values) become 5-minute states now."""
        if not rows:
            return
        arrays = chunk_arrays(rows) if len(rows) >= VECTOR_MIN_ROWS else None
        self.pending.append(bucket_arrays(*arrays, WIDTHS) if arrays is not None
                            else chunk_states(sorted(rows, key=_ROW_KEY), self.counters))

    def _states(self, chunks, level=0):
        """``(deltas, redo)``: the states of the staged chunks at ``level``
        (0: 5 minutes, 1: hours, 2: days), and the buckets staged twice with
        interleaving rows (recomputed from finer rows)."""
        deltas, redo = {}, set()
        for chunk in chunks:
            states = chunk if isinstance(chunk, dict) else chunk[level].states(self.counters)
            for key, new in states.items():
                old = deltas.get(key)
                if old is None:
                    deltas[key] = new
                elif key in redo:
                    continue
                elif new.first_at > old.last_at:
                    old.absorb(new)
                elif new.last_at < old.first_at:
                    deltas[key] = new.absorb(old)
                else:                        # a key staged twice
                    redo.add(key)
        return deltas, redo

    def flushed(self, inserted, staged=None):
        """Inside the flush's transaction, after the raw insert: update the tiers.

        ``inserted``: the number of staged rows the insert stored: all of
        them (each batch state is exact), none (a re-send: nothing to do, and
        no state is even built), or some (every bucket of the flush is
        recomputed from raw). ``staged``: how many distinct rows were staged
        (default: the rows the 5-minute states hold).
        """
        chunks, self.pending = self.pending, []
        if not inserted:
            return
        with _no_cyclic_gc():
            self._update(chunks, inserted, staged)

    def _update(self, chunks, inserted, staged=None):
        deltas, redo = self._states(chunks)
        if staged is None:
            staged = sum(s.count for s in deltas.values())
        whole = not redo and inserted == staged
        # Every staged row went in: the hourly and daily batch states come
        # straight from the rows (as the 5-minute ones do), not from merging.
        coarse = None
        if whole and all(not isinstance(c, dict) for c in chunks):
            coarse = {TIER_1H: self._states(chunks, 1), TIER_1D: self._states(chunks, 2)}
        self.apply(deltas, redo, whole, coarse)

    def apply(self, deltas, redo, whole, coarse=None):
        """Merge the batch states into the tiers (``whole``: every staged row
        was stored), else recompute every touched bucket from raw."""
        db, counters = self.db, self.counters
        if whole:
            delta = {k: v for k, v in deltas.items() if k not in redo}
            redo = set(redo)
        else:
            delta, redo = {}, set(deltas) | redo
        finer = None
        for tier in (TIER_5M, TIER_1H, TIER_1D):
            width = tier.width_us
            if finer is not None:            # one level up: merge the batch states
                if coarse is not None:
                    delta, staged_twice = coarse[tier]
                else:
                    delta, staged_twice = coarsen(delta, width), ()
                redo = {(s, m, b - b % width) for s, m, b in redo} | set(staged_twice)
                for key in redo:
                    delta.pop(key, None)
            merged, interleaved = merge_stored(db, tier, delta, counters)
            redo |= interleaved
            if finer is None:
                merged.update(store.from_raw(db, sorted(redo), width, counters))
            else:
                merged.update(store.from_finer(db, finer, sorted(redo), width))
            store.write_states(db, tier, merged)
            finer = tier


def lookup_ranges(keys, width_us):
    """Ranges ``(sid, mid, lo, hi)`` that find the stored rows of ``keys``:
    one span a series (a batch of new samples: one index range scan that
    finds at most its boundary bucket), or one range a key where the span
    would read many buckets the batch does not touch."""
    series = {}
    for s, m, b in keys:
        series.setdefault((s, m), []).append(b)
    out = []
    for (s, m), buckets in series.items():
        lo, hi = min(buckets), max(buckets)
        if (hi - lo) // width_us + 1 <= 2 * len(buckets):
            out.append((s, m, lo, hi + 1))
        else:
            out.extend((s, m, b, b + 1) for b in buckets)
    return sorted(out)


@contextmanager
def _no_cyclic_gc():
    """The cyclic garbage collector paused while a flush builds its states:
    they hold no reference cycles, and the collections their allocations
    set off traverse every live object of the caller (a 254 k-row batch:
    half the tier update's time). Resumed on exit, exceptions included."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def merge_stored(db, tier, delta, counters):
    """Batch states merged into the stored rows of the same buckets; returns
    ``(states, keys to recompute)`` (counter samples interleaving stored ones)."""
    out, again = dict(delta), set()
    if not delta:
        return out, again
    stored = store.tier_states(db, tier, lookup_ranges(delta, tier.width_us))
    for key, old in stored.items():
        new = out.get(key)
        if new is None:                      # inside a looked-up span, not in the batch
            continue
        if new.first_at > old.last_at:
            out[key] = old.absorb(new)
        elif new.last_at < old.first_at:
            out[key] = new.copy_into(new.start).absorb(old)   # the batch state stays as is
        elif key[1] in counters:
            del out[key]
            again.add(key)
        else:
            out[key] = old.absorb(new)       # gauges merge in any order
    return out, again
