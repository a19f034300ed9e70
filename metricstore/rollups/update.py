"""The write path's tier update: runs inside the write transaction, from
exactly the rows that were inserted.

The writer hands each sorted chunk of validated rows to :meth:`TierUpdater.add`,
which builds the chunk's 5-minute states in Python (of rows repeating a key
the first wins, as in the raw insert). Which rows were inserted comes from
the engine: PostgreSQL's insert returns the count per (series, 5-minute
bucket) (:meth:`TierUpdater.apply` gets it); SQLite's writer passes each
chunk's insert count to :meth:`~TierUpdater.add`: a chunk inserted whole is
taken as built, a chunk inserted not at all (a re-send) is skipped, and a
partly inserted one marks its buckets to be recomputed from raw.

:meth:`~TierUpdater.apply` then merges each bucket's batch state into the
stored one (in time order; counter samples that interleave with stored ones
are recomputed from raw instead), does the same one level up for hours and
days, and upserts. A re-sent batch inserts nothing and so changes no tier.
"""

from ..timeutil import from_micros, month_start
from . import store
from .rebuild_helpers import coarsen
from .state import State
from .tiers import TIER_1D, TIER_1H, TIER_5M

W5 = TIER_5M.width_us
REDO = -1


def chunk_states(rows, counters):
    """``{(sid, mid, 5-minute bucket us): State}`` of rows sorted by (sid, mid, us)."""
    out = {}
    i, n = 0, len(rows)
    while i < n:
        sid, mid, _, us = rows[i]
        b = us - us % W5
        end = b + W5
        points, last, j = [], None, i
        while j < n:
            r = rows[j]
            t = r[3]
            if t >= end or r[0] != sid or r[1] != mid:
                break
            if t != last:                    # a repeated key: the first wins
                points.append((t, r[2]))
                last = t
            j += 1
        i = j
        key = (sid, mid, b)
        new = State.of_points(b, points, mid in counters)
        old = out.get(key)                   # only if the chunk was not sorted
        out[key] = new if old is None else old.absorb(new)
    return out


class TierUpdater:
    """Keeps the tiers in step with one ``record_many`` call.

    ``counters``: ids of the counter metric types (their states carry the
    reset-aware increase). Holds one state per touched 5-minute bucket.
    """

    def __init__(self, db, counters):
        self.db = db
        self.counters = frozenset(counters)
        self.deltas = {}
        self.counts = {}            # SQLite: rows inserted per bucket (REDO: recompute)

    def add(self, rows, inserted=None):
        """Rows ``(sid, mid, value, us)`` sorted by (sid, mid, us). ``inserted``:
        how many of them the raw insert stored (None: told later, in apply)."""
        if inserted == 0:
            return
        chunk = chunk_states(rows, self.counters)
        deltas, counts = self.deltas, self.counts
        whole = inserted is None or inserted == sum(s.count for s in chunk.values())
        for key, new in chunk.items():
            old = deltas.get(key)
            if not whole or counts.get(key) == REDO:
                counts[key] = REDO
                deltas.setdefault(key, new)
                continue
            counts[key] = counts.get(key, 0) + new.count
            if old is None:
                deltas[key] = new
            elif new.first_at > old.last_at:
                old.absorb(new)
            elif new.last_at < old.first_at:
                deltas[key] = new.absorb(old)
            else:                            # a key seen in an earlier chunk
                counts[key] = REDO

    def months(self):
        """Month starts (UTC) of the buckets this batch touches."""
        return sorted({month_start(from_micros(k[2])) for k in self.deltas})

    def apply(self, inserted=None):
        """Update the tiers. ``inserted``: ``{(sid, mid, 5-minute bucket us):
        rows inserted}`` (PostgreSQL); None uses what :meth:`add` was told."""
        db, counters = self.db, self.counters
        if inserted is None:
            inserted = self.counts
        delta, redo = {}, set()
        for key, n in inserted.items():
            state = self.deltas.get(key)
            if n == REDO or state is None or state.count != n or \
                    self.counts.get(key) == REDO:
                redo.add(key)
            elif n:
                delta[key] = state
        finer, width = None, W5
        for tier in (TIER_5M, TIER_1H, TIER_1D):
            width = tier.width_us
            if finer is not None:            # one level up: merge the batch states
                delta = coarsen(delta, width)
                redo = {(s, m, b - b % width) for s, m, b in redo}
                for key in redo:
                    delta.pop(key, None)
            merged, again = merge_stored(db, tier, delta, counters)
            redo |= again
            if finer is None:
                merged.update(store.from_raw(db, sorted(redo), width, counters))
            else:
                merged.update(store.from_finer(db, finer, sorted(redo), width))
            store.write_states(db, tier, merged)
            finer = tier
        self.deltas, self.counts = {}, {}


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
