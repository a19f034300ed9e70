"""Tier rows and raw samples read as columns, statistics per group in numpy.

A read over the tiers fetches, for every segment of its plan, the state
columns its statistics need (avg: n and total; min: low; max: high; last:
last_at and last_v; a percentile: the sketch and low/high for clamping);
a raw sample is a one-sample state. Rows are then grouped by an integer key
(a bucket start, a server id, or both) and reduced per group: sums, minima
and maxima of the mergeable columns, the latest ``last``, and quantiles of
the merged sketches (:class:`~.bins.Bins`). No per-bucket Python object is
built, which is what makes a 500-server, 30-day read take milliseconds.

Counter rates need states merged in time order and stay in :mod:`.read`.
All times are integer epoch microseconds (UTC).
"""

from collections import defaultdict

import numpy as np

from ..dialects import dialect_for
from ..dialects.base import Spans
from ..queries import PERCENTILES
from ..timeutil import from_micros
from .bins import Bins
from .tiers import OWN_QUANTILES, RAW, SNAPSHOT_COLUMN

_NEEDS = {"count": ("n",), "sum": ("total",), "avg": ("n", "total"), "min": ("low",),
          "max": ("high",), "last": ("last_at", "last_v")}
_RAW_AS = {"n": "1", "total": "t.value", "low": "t.value", "high": "t.value",
           "last_at": "{time}", "last_v": "t.value", "sketch": "t.value"}
_ORDER = ("n", "total", "low", "high", "last_at", "last_v") + tuple(OWN_QUANTILES.values()) + (
    "sketch",)
_OWN = frozenset(OWN_QUANTILES.values())
# Partial aggregates per server are mergeable states too: top() by avg,
# min or max fetches one row a server and segment instead of every bucket.
# Every aggregate is a double, so the array readers take it as one.
_TIER_AGG = {"n": "CAST(SUM(t.n) AS DOUBLE PRECISION)", "total": "SUM(t.total)",
             "low": "MIN(t.low)", "high": "MAX(t.high)"}
_RAW_AGG = {"n": "CAST(COUNT(*) AS DOUBLE PRECISION)", "total": "SUM(t.value)",
            "low": "MIN(t.value)", "high": "MAX(t.value)"}
# One query per segment, through the dialect's per_server_sql (one index
# range scan a server); the bounds are literals, so PostgreSQL prunes
# partitions at plan time.
WHERE = "t.metric_type_id = :mid AND t.{time} >= :lo AND t.{time} < :hi"


def needed(stats, own=False):
    """The state columns ``stats`` read, in a fixed order (``own``: with
    each percentile's own-quantile column, see :func:`gather`)."""
    want = set()
    for s in stats:
        want.update(_NEEDS.get(s, ("low", "high", "sketch")))
        if own and s in OWN_QUANTILES:
            want.add(OWN_QUANTILES[s])
    return tuple(c for c in _ORDER if c in want)


class Columns:
    """Rows of every source of a plan: ``sid`` and ``t`` (bucket start or
    sample time, us) arrays, one array per state column, and the sketch
    blobs (tier rows) and raw values (raw rows) for quantiles."""

    def __init__(self, columns):
        self.columns = columns
        self._parts = defaultdict(list)
        self.blobs, self.blob_rows = [], []     # tier sketches and their row numbers
        self.values, self.value_rows = [], []   # raw values (arrays) and their row numbers
        self.packed_values = []                 # (row a value, raw values)
        self.spans = []                         # (row a sketch, Spans of the sketches)
        self.own_rows = []                      # rows answering from their own quantiles
        self.size = 0

    def add_packed(self, packed, raw):
        """Partial aggregates, one row a server, as :meth:`Dialect.fetch_packed`
        returns them: the fixed columns, then the sketches (:class:`Spans`)
        with their sizes (tier rows) or every raw value, ``count`` of them a row."""
        numbers, count = packed[0], packed[-1]
        first = self.size
        self.add_arrays(numbers + [None], skip_sketch=True)
        rows = np.repeat(np.arange(first, first + len(count)), count)
        if raw:
            self.packed_values.append((rows, packed[1]))
        else:
            self.spans.append((rows, packed[1]))

    def add_arrays(self, arrays, skip_sketch=False):
        """Columns as arrays (sid, t, then :attr:`columns`); a sketch column
        holds a tier row's blob or None for a raw sample (its value: ``low``)."""
        n = len(arrays[0])
        if not n:
            return
        self._parts["sid"].append(arrays[0])
        self._parts["t"].append(arrays[1])
        own = None                           # rows with their own quantiles (no sketch read)
        names = [c for c in self.columns if c in _OWN]
        if names:
            q = np.asarray(arrays[2 + self.columns.index(names[0])], dtype=np.float64)
            own = ~np.isnan(q)
            if own.any():
                self.own_rows.append(np.flatnonzero(own) + self.size)
        for name, col in zip(self.columns, arrays[2:]):
            if name != "sketch":
                self._parts[name].append(col)
            elif isinstance(col, Spans):     # blobs in the read's buffer
                rows = np.arange(self.size, self.size + n)
                nulls = col.sizes < 0
                sample = nulls if own is None else nulls & ~own   # raw samples among tier rows
                if nulls.any():
                    low = np.asarray(arrays[2 + self.columns.index("low")], dtype=np.float64)
                    self.values.append(low[sample])
                    self.value_rows.append(rows[sample])
                    col = Spans(col.buffer, col.starts[~nulls], col.sizes[~nulls])
                    rows = rows[~nulls]
                if len(col):
                    self.spans.append((rows, col))
            elif not skip_sketch:
                rows = np.arange(self.size, self.size + n)
                if None in col:              # raw samples (or own quantiles) among tier rows
                    nulls = np.fromiter((b is None for b in col), dtype=bool, count=n)
                    sample = nulls if own is None else nulls & ~own
                    low = np.asarray(arrays[2 + self.columns.index("low")], dtype=np.float64)
                    self.values.append(low[sample])
                    self.value_rows.append(rows[sample])
                    self.blobs.extend(b for b in col if b is not None)
                    self.blob_rows.append(rows[~nulls])
                else:
                    self.blobs.extend(col)
                    self.blob_rows.append(rows)
        self.size += n

    def array(self, name, dtype=np.float64):
        parts = self._parts.get(name)
        if not parts:
            return np.zeros(0, dtype=dtype)
        return np.concatenate([np.asarray(p, dtype=dtype) for p in parts])


def gather(db, server_ids, mid, segments, stats, by_server=False, own_width=None):
    """:class:`Columns` of metric ``mid`` of ``server_ids`` over ``segments``
    for ``stats`` (read-only). With ``by_server`` the rows may be partial
    aggregates per server (``t`` is then 0): only group them by server.

    ``own_width``: the read groups rows into UTC-aligned buckets this wide
    (us). The rows of a tier exactly that wide are then each a bucket of
    their own: their percentiles are read from their own-quantile columns,
    not their sketches (which are read only where those columns are NULL)."""
    d = dialect_for(db)
    cols = Columns(needed(stats, own=own_width is not None and not by_server))
    own = [c for c in cols.columns if c in _OWN]
    ids = d.ids_param(server_ids)
    packed = by_server and d.packed_blobs is not None
    summed = by_server and set(cols.columns) - {"sketch"} <= set(_TIER_AGG) and (
        packed or "sketch" not in cols.columns)
    # One statement for every segment: a raw sample is a one-sample state
    # whose sketch is NULL (its value is ``low``). Only per-server packed
    # sketches differ in shape from packed raw values: two statements then.
    separate = summed and "sketch" in cols.columns
    queries = {}
    params = {"ids": ids, "mid": mid, "sid": server_ids[0] if server_ids else None}
    for i, seg in enumerate(segments):
        raw = seg.source.name == RAW
        serves_own = bool(own) and not raw and seg.source.width_us == own_width
        if raw:
            table, time = "metrics", "collected_at"
            agg = dict(_RAW_AGG, sketch=d.packed_values % "t.value" if packed else None)
            exprs = [d.nan_sql if c in _OWN else
                     _RAW_AS[c].format(time=d.micros_sql("t.collected_at")) for c in cols.columns]
            if not separate and exprs and cols.columns[-1] == "sketch":
                exprs[-1] = "CAST(NULL AS %s)" % d.types["blob"]
            where = WHERE
            if mid < 0:                      # a snapshot column (rollups.snapshots)
                table = "server_snapshots"
                value = "CAST(t.%s AS DOUBLE PRECISION)" % d.quote(SNAPSHOT_COLUMN[mid])
                exprs = [e.replace("t.value", value) for e in exprs]
                agg = {c: e.replace("t.value", value) if e else e for c, e in agg.items()}
                where = WHERE.replace("t.metric_type_id = :mid", "%s IS NOT NULL" % value)
        else:
            table, time = seg.source.tier.table, "bucket"
            agg = dict(_TIER_AGG, sketch=d.packed_blobs % {"c": "t.sketch"} if packed else None)
            exprs = ["t.%s" % d.quote(c) if c not in _OWN else d.nan_sql for c in cols.columns]
            if serves_own:                   # one row a bucket
                exprs = ["COALESCE(t.%s, %s)" % (d.quote(c), d.nan_sql) if c in _OWN else
                         "CASE WHEN %s THEN t.sketch END" % " OR ".join(
                             "t.%s IS NULL" % d.quote(q) for q in own) if c == "sketch" else e
                         for c, e in zip(cols.columns, exprs)]
            where = WHERE
        if summed:
            exprs = ["0"] + [agg[c] for c in cols.columns]
        else:
            exprs = [d.read_time_sql("t." + time)] + exprs
        exprs = ["%s AS c%d" % (e, k) for k, e in enumerate(exprs)]
        tag = _tag(i)
        where = where.format(time=time).replace(":lo", ":lo_" + tag).replace(":hi", ":hi_" + tag)
        query = d.per_server_sql(", ".join(exprs), d.quote(table), where, grouped=summed,
                                 single=len(server_ids) == 1)
        # Segments answered by their rows' own quantiles first: rows without
        # a sketch, which the binary readers take as one block.
        queries.setdefault(raw and separate, []).append((not serves_own, i, query))
        params["lo_" + tag] = d.time_param(from_micros(seg.lo))
        params["hi_" + tag] = d.time_param(from_micros(seg.hi))
    # Rows of numbers, or of numbers and a sketch blob: read as arrays, no
    # Python object a field.
    width = 2 + len(cols.columns)
    for raw, parts in queries.items():
        sql = d.sql(" UNION ALL ".join("SELECT * FROM (%s) q%d" % (q, i)
                                       for _, i, q in sorted(parts)))
        if separate:
            cols.add_packed(d.fetch_packed(db, sql, params, len(cols.columns), raw), raw)
        elif "sketch" not in cols.columns:
            cols.add_arrays(d.fetch_numbers(db, sql, params, width, timed=not summed))
        else:
            cols.add_arrays(d.fetch_blobs(db, sql, params, width))
    return cols


def _tag(i):
    """Letters for a segment's parameter names (``:lo_a``...: names are [a-z_])."""
    out = ""
    while True:
        out = chr(97 + i % 26) + out
        i //= 26
        if not i:
            return out


def reduce(cols, keys, stats):
    """``(group keys, {stat: float array})`` of the rows grouped by ``keys``
    (an int64 array, one per row); groups ascending by key."""
    if not cols.size:
        return np.zeros(0, dtype=np.int64), {s: np.zeros(0) for s in stats}
    groups, inv = np.unique(keys, return_inverse=True)
    g = len(groups)
    out = {}
    n = total = low = high = None
    if "n" in cols.columns:
        n = np.bincount(inv, weights=cols.array("n"), minlength=g)
    if "total" in cols.columns:
        total = np.bincount(inv, weights=cols.array("total"), minlength=g)
    if "low" in cols.columns:
        low = np.full(g, np.inf)
        np.minimum.at(low, inv, cols.array("low"))
    if "high" in cols.columns:
        high = np.full(g, -np.inf)
        np.maximum.at(high, inv, cols.array("high"))
    for stat in stats:
        if stat == "count":
            out[stat] = n
        elif stat == "sum":
            out[stat] = total
        elif stat == "avg":
            out[stat] = total / n
        elif stat == "min":
            out[stat] = low
        elif stat == "max":
            out[stat] = high
        elif stat == "last":
            at = cols.array("last_at", np.int64)
            order = np.lexsort((at, inv))              # by group, then time
            ends = np.searchsorted(inv[order], np.arange(g), side="right") - 1
            out[stat] = cols.array("last_v")[order][ends]
        elif not cols.blobs and not cols.spans:   # raw samples only: exact
            vals = np.concatenate(cols.values + [vs for _, vs in cols.packed_values]
                                  + [np.zeros(0)])
            rows = cols.value_rows + [r for r, _ in cols.packed_values]
            which = inv[np.concatenate(rows)] if rows else np.zeros(0, dtype=np.int64)
            out[stat] = exact_quantiles(which, vals, g, PERCENTILES[stat])
        else:
            bins = Bins(g)
            if cols.blobs:
                bins.add_blobs(inv[np.concatenate(cols.blob_rows)], cols.blobs)
            if cols.values:
                bins.add_values(inv[np.concatenate(cols.value_rows)], np.concatenate(cols.values))
            for rows, spans in cols.spans:
                bins.add_spans(inv[rows], spans.buffer, spans.starts, spans.sizes)
            for rows, vals in cols.packed_values:
                bins.add_values(inv[rows], vals)
            out[stat] = bins.quantiles(PERCENTILES[stat], low, high)
        if stat in OWN_QUANTILES and cols.own_rows:  # buckets of one row: its own quantile
            rows = np.concatenate(cols.own_rows)
            out[stat][inv[rows]] = cols.array(OWN_QUANTILES[stat])[rows]
    return groups, out


def exact_quantiles(groups, values, ngroups, q):
    """``percentile_cont(q)`` of ``values`` per group (NaN where empty)."""
    out = np.full(ngroups, np.nan)
    if not len(values):
        return out
    order = np.lexsort((values, groups))
    groups, values = groups[order], values[order]
    n = np.bincount(groups, minlength=ngroups)
    first = np.cumsum(n) - n
    has = n > 0
    rank = q * (n[has] - 1)
    lo = np.floor(rank).astype(np.int64)
    hi = np.minimum(lo + 1, n[has] - 1)
    a, b = values[first[has] + lo], values[first[has] + hi]
    out[has] = a + (b - a) * (rank - lo)
    return out


def listed(name, array):
    """A statistic's values as Python numbers (None for NaN; counts as int)."""
    if name == "count":
        return array.astype(np.int64).tolist()
    if not np.isnan(array).any():
        return array.tolist()
    return [None if v != v else v for v in array.tolist()]
