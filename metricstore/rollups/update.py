"""The write path's tier update: runs inside the write transaction, from
exactly the rows that were inserted.

The writer hands each sorted chunk of validated rows to :meth:`TierUpdater.add`
(which builds the 5-minute states of the batch in Python, first row of a
repeated key winning as in the raw insert), and after the raw insert the
number of rows actually inserted per (series, 5-minute bucket) to
:meth:`TierUpdater.apply`. A bucket whose rows were all inserted merges
its batch state into the stored one; a bucket where only some were (a
partial re-send) or whose counter samples interleave with stored ones is
recomputed from its raw rows. Touched hours are then re-merged from their
5-minute rows and touched days from their hour rows. A re-sent batch inserts
nothing and so changes no tier.
"""

from ..timeutil import from_micros, month_start
from . import store
from .state import State
from .tiers import TIER_1D, TIER_1H, TIER_5M

W5 = TIER_5M.width_us


class TierUpdater:
    """Keeps the tiers in step with one ``record_many`` call.

    ``counters``: ids of the counter metric types (their states carry the
    reset-aware increase). Holds one state per touched 5-minute bucket.
    """

    def __init__(self, db, counters):
        self.db = db
        self.counters = frozenset(counters)
        self.deltas = {}
        self.dirty = set()

    def add(self, rows):
        """Rows ``(sid, mid, value, us)`` sorted by (sid, mid, us)."""
        deltas, dirty, counters = self.deltas, self.dirty, self.counters
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
            old = deltas.get(key)
            if old is None:
                deltas[key] = new
            elif key in dirty:
                continue
            elif new.first_at > old.last_at:
                old.absorb(new)
            elif new.last_at < old.first_at:
                deltas[key] = new.absorb(old)
            else:                                # a key seen in an earlier chunk
                dirty.add(key)

    def months(self):
        """Month starts (UTC) of the buckets this batch touches."""
        return sorted({month_start(from_micros(k[2])) for k in self.deltas})

    def apply(self, inserted):
        """``inserted``: ``{(sid, mid, 5-minute bucket us): rows inserted}``."""
        db, counters = self.db, self.counters
        fresh, redo = {}, []
        for key, n in inserted.items():
            if not n:
                continue
            delta = self.deltas.get(key)
            if delta is None or key in self.dirty or delta.count != n:
                redo.append(key)
            else:
                fresh[key] = delta
        stored = store.tier_states(db, TIER_5M, sorted((s, m, b, b + 1) for s, m, b in fresh))
        for key, old in stored.items():
            delta = fresh[key]
            if delta.first_at > old.last_at:
                fresh[key] = old.absorb(delta)
            elif delta.last_at < old.first_at:
                fresh[key] = delta.absorb(old)
            elif key[1] in counters:             # interleaved counter samples
                del fresh[key]
                redo.append(key)
            else:
                fresh[key] = old.absorb(delta)   # gauges merge in any order
        fresh.update(store.from_raw(db, redo, W5, counters))
        store.write_states(db, TIER_5M, fresh)
        touched, finer = fresh, TIER_5M
        for tier in (TIER_1H, TIER_1D):
            w = tier.width_us
            keys = {(s, m, b - b % w) for s, m, b in touched}
            touched = store.from_finer(db, finer, keys, w)
            store.write_states(db, tier, touched)
            finer = tier
        self.deltas, self.dirty = {}, set()
