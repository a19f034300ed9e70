"""The write path's tier update: runs inside the write transaction, from
exactly the rows that were inserted.

The writer hands each sorted chunk of staged rows to :meth:`TierUpdater.add`,
which builds the chunk's 5-minute states in Python (of rows repeating a key
the first wins, as in the raw insert), and after each flush's raw insert,
in the same transaction, what was inserted to :meth:`~TierUpdater.flushed`:
PostgreSQL's insert returns the count per (series, 5-minute bucket);
SQLite's the number of rows: a flush inserted whole takes the batch states
as built, one inserted not at all (a re-send) changes nothing, and a partly
inserted one is recomputed from raw.

The update then merges each bucket's batch state into the
stored one (in time order; counter samples that interleave with stored ones
are recomputed from raw instead), does the same one level up for hours and
days, and upserts. A re-sent batch inserts nothing and so changes no tier.
"""

from itertools import groupby, repeat
from operator import floordiv, itemgetter

import numpy as np

from ..timeutil import from_micros, month_start
from . import store
from .rebuild_helpers import coarsen
from .sketch import INV_LOG_GAMMA, ZERO, Sketch, Store
from .state import State
from .tiers import TIER_1D, TIER_1H, TIER_5M, TIER_MAX_GAP_US, US

W5 = TIER_5M.width_us
_SERIES, _TIME = itemgetter(0, 1), itemgetter(3)
REDO = -1


def chunk_states(rows, counters):
    """``{(sid, mid, 5-minute bucket us): State}`` of rows sorted by (sid, mid, us)."""
    if len(rows) >= VECTOR_MIN_ROWS:
        out = chunk_states_np(rows, counters)
        if out is not None:
            return out
    return _chunk_states(rows, counters)


def _chunk_states(rows, counters):
    """:func:`chunk_states` one bucket at a time (small or unsorted chunks,
    negative values)."""
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


VECTOR_MIN_ROWS = 256


def chunk_states_np(rows, counters):
    """:func:`chunk_states` in numpy: the same states (counts, min, max,
    first, last, counter pairs summed in time order, the same sketch bins),
    one Python step per bucket instead of several per row. None when the
    rows are not sorted or hold negative values (the caller falls back)."""
    n = len(rows)
    columns = list(zip(*rows))
    sid, mid, t = (np.array(columns[i], dtype=np.int64) for i in (0, 1, 3))
    v = np.array(columns[2], dtype=np.float64)
    if (v <= -ZERO).any():
        return None
    same_series = (sid[1:] == sid[:-1]) & (mid[1:] == mid[:-1])
    step = t[1:] - t[:-1]
    if (~same_series & ((sid[1:] < sid[:-1]) | ((sid[1:] == sid[:-1]) & (mid[1:] < mid[:-1])))).any() \
            or (same_series & (step < 0)).any():
        return None
    keep = np.ones(n, dtype=bool)            # of rows repeating a key the first wins
    keep[1:] = ~(same_series & (step == 0))
    if not keep.all():
        sid, mid, v, t = sid[keep], mid[keep], v[keep], t[keep]
        n = len(v)
        same_series = (sid[1:] == sid[:-1]) & (mid[1:] == mid[:-1])
        step = t[1:] - t[:-1]
    b = t // W5
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
                        minlength=int(span.sum())).tolist()
    counter_ids = frozenset(counters)
    new_sketch, empty = Sketch.__new__, Store
    out = {}
    for (g_sid, g_mid, g_b, cnt, tot, lo, hi, fa, fv, la, lv, i_, e_, p_, z, km, sp, bs) in zip(
            sid[starts].tolist(), mid[starts].tolist(), (b[starts] * W5).tolist(),
            count.tolist(), total.tolist(), low.tolist(), high.tolist(),
            t[starts].tolist(), v[starts].tolist(), t[ends - 1].tolist(), v[ends - 1].tolist(),
            inc.tolist(), elapsed.tolist(), pairs.tolist(), zero.tolist(), kmin.tolist(),
            span.tolist(), base.tolist()):
        sketch = new_sketch(Sketch)
        sketch.pos = Store(km, cells[bs:bs + sp]) if sp else empty()
        sketch.neg, sketch.zero = empty(), z
        counter = g_mid in counter_ids
        out[g_sid, g_mid, g_b] = State(g_b, cnt, tot, lo, hi, fa, fv, la, lv,
                                       i_ if counter else None, e_ if counter else None,
                                       p_ if counter else None, sketch)
    return out


class TierUpdater:
    """Keeps the tiers in step with one ``record_many`` call.

    ``counters``: ids of the counter metric types (their states carry the
    reset-aware increase). Holds one state per 5-minute bucket the rows
    staged since the last flush touch.
    """

    def __init__(self, db, counters):
        self.db = db
        self.counters = frozenset(counters)
        self.deltas = {}
        self.redo = set()           # buckets whose batch rows overlap: recompute

    def add(self, rows):
        """Staged rows ``(sid, mid, value, us)`` sorted by (sid, mid, us)."""
        deltas, redo = self.deltas, self.redo
        for key, new in chunk_states(rows, self.counters).items():
            old = deltas.get(key)
            if old is None:
                deltas[key] = new
            elif key in redo:
                continue
            elif new.first_at > old.last_at:
                old.absorb(new)
            elif new.last_at < old.first_at:
                deltas[key] = new.absorb(old)
            else:                            # a key staged twice
                redo.add(key)

    def months(self):
        """Month starts (UTC) of the buckets the staged rows touch."""
        return sorted({month_start(from_micros(k[2])) for k in self.deltas})

    def flushed(self, inserted):
        """Inside the flush's transaction, after the raw insert: update the tiers.

        ``inserted``: ``{(sid, mid, 5-minute bucket us): rows inserted}``
        (PostgreSQL), or the number of staged rows inserted (SQLite): all of
        them (each batch state is exact), none (a re-send: nothing to do),
        or some (every bucket of the flush is recomputed from raw).
        """
        deltas, redo = self.deltas, self.redo
        self.deltas, self.redo = {}, set()
        if not isinstance(inserted, dict):
            if not inserted:
                return
            whole = not redo and inserted == sum(s.count for s in deltas.values())
            inserted = {key: (s.count if whole else REDO) for key, s in deltas.items()}
        self.apply(deltas, redo, inserted)

    def apply(self, deltas, redo, inserted):
        db, counters = self.db, self.counters
        delta, again = {}, set(redo)
        for key, n in inserted.items():
            state = deltas.get(key)
            if n == REDO or state is None or state.count != n or key in redo:
                again.add(key)
            elif n:
                delta[key] = state
        redo, finer = again, None
        for tier in (TIER_5M, TIER_1H, TIER_1D):
            width = tier.width_us
            if finer is not None:            # one level up: merge the batch states
                delta = coarsen(delta, width)
                redo = {(s, m, b - b % width) for s, m, b in redo}
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


def merge_stored(db, tier, delta, counters):
    """Batch states merged into the stored rows of the same buckets; returns
    ``(states, keys to recompute)`` (counter samples interleaving stored ones)."""
    out, again = dict(delta), set()
    if not delta:
        return out, again
    w = 1
    stored = store.tier_states(db, tier, sorted((s, m, b, b + w) for s, m, b in delta))
    for key, old in stored.items():
        new = out[key]
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
