"""The write path's tier update: runs inside the write transaction, from
exactly the rows that were inserted.

The writer hands each chunk of staged rows to :meth:`TierUpdater.add`,
which keeps it as arrays of 5-minute, hourly and daily buckets
(:mod:`.arrays`; of rows repeating a key the first wins, as in the raw
insert), and after each flush's raw insert, in the same transaction, the
number of rows it stored to :meth:`~TierUpdater.flushed`: a flush inserted
whole takes the batch states merged from those arrays, one inserted not at
all (a re-send) builds nothing and changes nothing, and a partly inserted
one is recomputed from raw.

The update then merges each bucket's batch state into the stored one (in
time order; counter samples that interleave with stored ones are
recomputed from raw instead), does the same one level up for hours and
days, and upserts; buckets no stored row touches go in as rows built from
the arrays. A re-sent batch inserts nothing and so changes no tier.
"""

import gc
from contextlib import contextmanager
from operator import itemgetter

from . import store
from .arrays import ArrayDelta, bucket_arrays, chunk_arrays, chunk_states, merge_buckets
from .rebuild_helpers import coarsen
from .tiers import TIER_1D, TIER_1H, TIER_5M

W5 = TIER_5M.width_us
_ROW_KEY = itemgetter(0, 1, 3)
VECTOR_MIN_ROWS = 256          # smaller chunks: chunk_states (numpy costs more)


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
        if arrays is None:
            self.pending.append(chunk_states(sorted(rows, key=_ROW_KEY), self.counters))
            return
        fives = bucket_arrays(*arrays)
        hours = merge_buckets([fives], TIER_1H.width_us)[0]
        self.pending.append((fives, hours, merge_buckets([hours], TIER_1D.width_us)[0]))

    def _states(self, chunks):
        """``(deltas, redo)``: the 5-minute states of the staged chunks, and
        the buckets staged twice with interleaving rows (recomputed from raw)."""
        deltas, redo = {}, set()
        for chunk in chunks:
            states = chunk if isinstance(chunk, dict) else chunk[0].states(self.counters)
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
        coarse = None
        if chunks and not any(isinstance(c, dict) for c in chunks):
            # All arrays: each level's buckets merged across the chunks in
            # numpy; State objects only where a stored row is met.
            fives, redo = merge_buckets([c[0] for c in chunks], W5)
            deltas = ArrayDelta(fives, self.counters)
            if staged is None:
                staged = deltas.samples()
            if not redo and inserted == staged:
                coarse = {}
                for level, tier in ((1, TIER_1H), (2, TIER_1D)):
                    merged, twice = merge_buckets([c[level] for c in chunks], tier.width_us)
                    coarse[tier] = (ArrayDelta(merged, self.counters), twice)
            chunks.clear()                   # the merged arrays hold what is needed now
        else:
            deltas, redo = self._states(chunks)
            if staged is None:
                staged = sum(s.count for s in deltas.values())
        whole = not redo and inserted == staged
        self.apply(deltas, redo, whole, coarse if whole else None)

    def apply(self, deltas, redo, whole, coarse=None):
        """Merge the batch states into the tiers (``whole``: every staged row
        was stored), else recompute every touched bucket from raw."""
        db, counters = self.db, self.counters
        if whole:
            delta = deltas if isinstance(deltas, ArrayDelta) else {
                k: v for k, v in deltas.items() if k not in redo}
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
            merged, interleaved, rows = merge_stored(db, tier, delta, counters)
            redo |= interleaved
            if finer is None:
                merged.update(store.from_raw(db, sorted(redo), width, counters))
            else:
                merged.update(store.from_finer(db, finer, sorted(redo), width))
            store.write_rows(db, tier, rows + store.state_rows(merged))
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
    ``(states, keys to recompute, rows)``: the keys those of counter samples
    interleaving stored ones, ``rows`` the tier rows of an
    :class:`ArrayDelta`'s buckets no stored row touches (their batch state
    is the row)."""
    again = set()
    if not delta:
        return {}, again, []
    stored = store.tier_states(db, tier, lookup_ranges(delta, tier.width_us))
    if isinstance(delta, ArrayDelta):
        out, rows = delta.split([k for k in stored if k in delta])
    else:
        out, rows = dict(delta), []
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
    return out, again, rows
