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

from ..timeutil import from_micros, month_start
from . import store
from .rebuild_helpers import coarsen
from .state import State
from .tiers import TIER_1D, TIER_1H, TIER_5M

W5 = TIER_5M.width_us
_SERIES, _TIME = itemgetter(0, 1), itemgetter(3)
REDO = -1


def chunk_states(rows, counters):
    """``{(sid, mid, 5-minute bucket us): State}`` of rows sorted by (sid, mid, us)."""
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
