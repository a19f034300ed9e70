"""Quantiles of many merged sketches at once, in numpy.

A fleet read merges tens of thousands of stored sketches (``top`` by p95
over 30 days of 500 servers: ~60 a server) and a 30-day chart needs one
quantile per hourly bucket. Decoding each into a :class:`~.sketch.Sketch`
and merging bin lists in Python costs ~10 us a sketch; here every sketch's
bins become rows of flat arrays (group, ordinal, count) and one ``bincount``
merges them per group, so the per-sketch cost is one header read.

Answers equal :meth:`Sketch.quantile` of the merged sketch: the same bins,
the same rank rule (``percentile_cont``'s ``q * (n - 1)``, interpolated
between neighbouring order statistics), clamped to the exact min and max.
"""

import numpy as np

from .sketch import GAMMA, HAS_ZERO, INV_LOG_GAMMA, ZERO, _HALF, Sketch

# Bin keys of doubles lie in [-1047, 36000] (|v| from ZERO=1e-9 to 1.8e308):
# one ordinal line that sorts like the values: negatives, zero, positives,
# the zero just below the smallest positive key and the smallest |negative|
# just below the zero, so values around zero keep the dense grid narrow.
_POS = 120_000
_ZERO_ORD = _POS - 1_100
_NEG = _ZERO_ORD - 1_100
_CELLS = 4_000_000          # dense (groups x bins) cells per bincount chunk


class Bins:
    """Bin counts of many sketches and raw values, by integer group
    ``0 .. ngroups - 1``; then quantiles per group (NaN where empty)."""

    def __init__(self, ngroups):
        self.ngroups = ngroups
        self._groups, self._ords, self._counts = [], [], []
        self._blob_groups, self._blobs = [], []
        self._spans = []                     # (groups, buffer, starts, sizes) of blobs in place
        self._runs = []                      # parsed blobs, not yet materialised

    def add_blobs(self, groups, blobs):
        """Encoded sketches (bytes or memoryview; None skipped), ``groups[i]``
        for ``blobs[i]``. Parsed later, all at once."""
        self._blob_groups.extend(groups)
        self._blobs.extend(blobs)

    def add_spans(self, groups, buffer, starts, sizes):
        """Encoded sketches left inside ``buffer`` (a uint8 array): the i-th
        at byte ``starts[i]``, ``sizes[i]`` long, of group ``groups[i]``."""
        if len(sizes):
            self._spans.append((np.asarray(groups, dtype=np.int64), buffer,
                                np.asarray(starts, dtype=np.int64),
                                np.asarray(sizes, dtype=np.int64)))

    def _sources(self):
        """Every blob added so far as ``(groups, buffer, starts, sizes)``
        (one buffer; the blobs of lists are joined into one)."""
        blobs, groups = self._blobs, self._blob_groups
        if None in blobs:
            kept = [i for i, b in enumerate(blobs) if b is not None]
            blobs, groups = [blobs[i] for i in kept], [groups[i] for i in kept]
        parts = list(self._spans)
        if blobs:
            sizes = np.fromiter(map(len, blobs), dtype=np.int64, count=len(blobs))
            data = np.frombuffer(b"".join(blobs), dtype=np.uint8)
            parts.append((np.asarray(groups, dtype=np.int64), data, np.cumsum(sizes) - sizes,
                          sizes))
        self._clear()
        if len(parts) < 2:
            return parts[0] if parts else None
        shift = np.cumsum([0] + [len(p[1]) for p in parts[:-1]])
        return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
                np.concatenate([p[2] + k for p, k in zip(parts, shift)]),
                np.concatenate([p[3] for p in parts]))

    def _parse_blobs(self):
        """Headers of every blob read as arrays: the common encodings (narrow
        counts of positive values, with or without zeros) become (group,
        ordinal, count) rows without a Python step per blob; any other blob
        (negative values, counts past 65535) is decoded."""
        found = self._sources()
        if found is None:
            return None
        groups, raw, starts, sizes = found
        h = raw[starts[:, None] + np.arange(7)].astype(np.int64)
        flags = h[:, 0]
        offsets = (h[:, 1] | h[:, 2] << 8 | h[:, 3] << 16 | h[:, 4] << 24)
        offsets = np.where(offsets >= 1 << 31, offsets - (1 << 32), offsets)
        lengths = h[:, 5] | h[:, 6] << 8
        fast = (flags == 0) | (flags == HAS_ZERO)
        if not fast.all():
            for i in np.flatnonzero(~fast):
                blob = raw[starts[i]:starts[i] + sizes[i]].tobytes()
                self._add_sketch(int(groups[i]), Sketch.decode(blob))
            groups, starts, offsets, lengths, flags = (
                groups[fast], starts[fast], offsets[fast], lengths[fast], flags[fast])
        if not len(starts):
            return None
        # The counts: little-endian uint16s from byte 7 of each blob, read
        # through two uint16 views of the buffer (from byte 0 and from byte
        # 1), the one each blob's counts are aligned with: one gather.
        even = len(raw) // 2
        words = np.concatenate([raw[:2 * even].view("<u2"), raw[1:1 + 2 * ((len(raw) - 1) // 2)]
                                .view("<u2")])
        body = starts + 7
        base = body // 2 + (body & 1) * even      # each blob's first count in words
        counts = words[_runs_index(base, lengths)].astype(np.int64)   # int64: cumsum ~5x float's
        zeros = np.flatnonzero(flags == HAS_ZERO)
        zero_counts = np.zeros(len(starts), dtype=np.int64)
        if len(zeros):                        # a uint32 zero count after the counts
            z = raw[(starts[zeros] + 7 + 2 * lengths[zeros])[:, None] + np.arange(4)].astype(np.int64)
            zero_counts[zeros] = z[:, 0] | z[:, 1] << 8 | z[:, 2] << 16 | z[:, 3] << 24
        return groups, offsets, lengths, counts, zero_counts

    def _clear(self):
        self._blob_groups, self._blobs, self._spans = [], [], []

    def _add_many(self, groups, ords, counts):
        self._groups.append(np.asarray(groups, dtype=np.int64))
        self._ords.append(np.asarray(ords, dtype=np.int64))
        self._counts.append(np.asarray(counts, dtype=np.float64))

    def _add_sketch(self, g, s):
        for store, sign in ((s.pos, 1), (s.neg, -1)):
            if store.counts:
                k = np.arange(store.offset, store.offset + len(store.counts))
                self._add(g, _POS + k if sign > 0 else _NEG - k, store.counts)
        if s.zero:
            self._add(g, np.array([_ZERO_ORD]), [s.zero])

    def _add(self, g, ords, counts):
        self._add_many(np.full(len(ords), g, dtype=np.int64), ords, counts)

    def add_values(self, groups, values):
        """Raw values, ``groups[i]`` for ``values[i]`` (one count each)."""
        if not len(values):
            return
        v = np.asarray(values, dtype=np.float64)
        g = np.asarray(groups, dtype=np.int64)
        ords = np.full(len(v), _ZERO_ORD, dtype=np.int64)
        pos, neg = v >= ZERO, v <= -ZERO
        with np.errstate(divide="ignore", invalid="ignore"):
            ords[pos] = _POS + np.ceil(np.log(v[pos]) * INV_LOG_GAMMA).astype(np.int64)
            ords[neg] = _NEG - np.ceil(np.log(-v[neg]) * INV_LOG_GAMMA).astype(np.int64)
        self._add_many(g, ords, np.ones(len(v)))

    def _parse(self):
        runs = self._parse_blobs()
        if runs is not None:
            self._runs.append(runs)

    def _arrays(self):
        """Every materialised (group, ordinal, count) row, or None."""
        if not self._groups:
            return None
        return (np.concatenate(self._groups), np.concatenate(self._ords),
                np.concatenate(self._counts))

    def quantiles(self, q, lows=None, highs=None):
        """The ``q`` quantile of every group (a float64 array, NaN where a
        group is empty), clamped to ``lows``/``highs`` (arrays) when given.
        Asking again answers the same.

        A group made of one stored sketch (a chart's bucket served by one
        tier row) is answered from the flat cumulative counts; the others
        (merges) from a dense grid of their groups x bins, filled by one
        ``bincount`` straight from the blobs' runs.
        """
        out = np.full(self.ngroups, np.nan)
        self._parse()
        runs = _concat_runs(self._runs) if self._runs else None
        extra = self._arrays()                   # decoded sketches and raw values
        if runs is not None:
            single = np.bincount(runs[0], minlength=self.ngroups) == 1
            if extra is not None:
                single[extra[0]] = False
            take = single[runs[0]]
            if take.any():
                # Each blob's own quantile (no copy); kept where it is its group's only one.
                out[runs[0][take]] = _quantile_runs(runs, q)[take]
                runs = None if take.all() else _select_runs(runs, ~take)
        _merged_quantiles(out, q, runs, extra)
        return _clamp(out, lows, highs)


def own_quantiles(blobs, lows, highs, qs):
    """Each encoded sketch's own quantiles, clamped to its row's ``lows`` and
    ``highs``: one float64 array a ``q`` of ``qs``, exactly what a read of
    that one row answers (the same arrays and rules; NaN for a None blob)."""
    bins = Bins(len(blobs))
    bins.add_blobs(np.arange(len(blobs)), blobs)
    lows, highs = np.asarray(lows, dtype=np.float64), np.asarray(highs, dtype=np.float64)
    return [bins.quantiles(q, lows, highs) for q in qs]


def _merged_quantiles(out, q, runs, extra):
    """Fill ``out`` with the quantiles of the groups of ``runs`` (blob runs)
    and ``extra`` ((group, ordinal, count) rows), merged per group: one dense
    grid over the groups present, chunked if it would pass _CELLS cells."""
    parts = [] if runs is None else [runs[0]]
    if extra is not None:
        parts.append(extra[0])
    if not parts or not sum(map(len, parts)):
        return
    ids, where = np.unique(np.concatenate(parts), return_inverse=True)
    run_g = where[:len(runs[0])] if runs is not None else None
    extra_g = where[len(where) - len(extra[0]):] if extra is not None else None
    lows, highs = [], []
    if runs is not None:
        groups, offsets, lengths, counts, zeros = runs
        keys = _POS + offsets
        has = lengths > 0
        if has.any():
            lows.append(keys[has].min())
            highs.append((keys + lengths - 1)[has].max())
        if zeros.any():
            lows.append(_ZERO_ORD)
            highs.append(_ZERO_ORD)
    if extra is not None and len(extra[1]):
        lows.append(extra[1].min())
        highs.append(extra[1].max())
    if not lows:
        return
    lo, hi = int(min(lows)), int(max(highs))
    span, width = hi - lo + 1, len(ids)
    if width * span > _CELLS:                    # wide: the chunked path over rows
        rows = _rows(runs, run_g, extra, extra_g)
        out[ids] = _dense_quantiles(rows[0], rows[1], rows[2], width, q)
        return
    cells = np.zeros(width * span)
    if runs is not None:                         # a cell: group * span + ordinal - lo
        cells += np.bincount(_ordinals(offsets, lengths, run_g * span - lo),
                             weights=counts, minlength=width * span)
        z = np.flatnonzero(zeros)
        if len(z):
            cells += np.bincount(run_g[z] * span + (_ZERO_ORD - lo), weights=zeros[z],
                                 minlength=width * span)
    if extra is not None:
        cells += np.bincount(extra_g * span + (extra[1] - lo), weights=extra[2],
                             minlength=width * span)
    out[ids] = _quantile_rows(cells.reshape(width, span), q, np.arange(lo, hi + 1))


def _rows(runs, run_g, extra, extra_g):
    """(group, ordinal, count) rows of blob runs (groups renumbered to
    ``run_g``) and of ``extra`` (renumbered to ``extra_g``)."""
    g, o, c = [], [], []
    if runs is not None:
        groups, offsets, lengths, counts, zeros = runs
        z = np.flatnonzero(zeros)
        g += [run_g[z], np.repeat(run_g, lengths)]
        o += [np.full(len(z), _ZERO_ORD, dtype=np.int64), _ordinals(offsets, lengths)]
        c += [zeros[z].astype(np.float64), counts.astype(np.float64)]
    if extra is not None:
        g.append(extra_g)
        o.append(extra[1])
        c.append(extra[2])
    return np.concatenate(g), np.concatenate(o), np.concatenate(c)


def _ordinals(offsets, lengths, base=0):
    """The ordinal of every count of blob runs (``offsets``, ``lengths``),
    each blob's plus its ``base``."""
    return _runs_index(base + _POS + offsets, lengths)


def _runs_index(starts, lengths):
    """``starts[i] + 0 .. lengths[i] - 1`` for every i, concatenated: one
    array built by a cumulative sum of steps (fewer large temporaries than
    repeat + arange, which cost page faults on a busy machine)."""
    total = int(lengths.sum())
    out = np.ones(total, dtype=np.int64)
    has = np.flatnonzero(lengths)
    if not len(has):
        return out
    s, n = starts[has], lengths[has]
    first = np.cumsum(n) - n
    out[0] = s[0]
    out[first[1:]] = s[1:] - (s[:-1] + n[:-1] - 1)
    return np.cumsum(out, out=out)


def _concat_runs(parts):
    if len(parts) == 1:
        return parts[0]
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(5))


def _select_runs(runs, mask):
    """The blobs of ``runs`` where ``mask``, in their order."""
    groups, offsets, lengths, counts, zeros = runs
    first = np.cumsum(lengths) - lengths
    pick = np.flatnonzero(mask)
    n = lengths[pick]
    start = np.cumsum(n) - n
    index = np.arange(int(n.sum()), dtype=np.int64) + np.repeat(first[pick] - start, n)
    return groups[pick], offsets[pick], n, counts[index], zeros[pick]


def _dense_quantiles(g, o, c, ngroups, q):
    """Quantiles per group of (group, ordinal, count) rows via a dense grid,
    chunked so that a chunk holds at most _CELLS cells."""
    out = np.full(ngroups, np.nan)
    lo = int(o.min())
    col, col_ord = o - lo, np.arange(lo, int(o.max()) + 1)
    span = len(col_ord)
    step = max(1, _CELLS // span)
    order = np.argsort(g, kind="stable") if ngroups > step else None
    if order is not None:
        g, col, c = g[order], col[order], c[order]
    for first in range(0, ngroups, step):
        last = min(ngroups, first + step)
        part = slice(None) if order is None else slice(*np.searchsorted(g, [first, last]))
        cells = np.bincount((g[part] - first) * span + col[part], weights=c[part],
                            minlength=(last - first) * span)
        out[first:last] = _quantile_rows(cells.reshape(last - first, span), q, col_ord)
    return out


def _clamp(out, lows, highs):
    if lows is not None:
        out = np.maximum(out, lows)
    if highs is not None:
        out = np.minimum(out, highs)
    return out


def _quantile_runs(runs, q):
    """The quantile of each blob of ``runs`` on its own (positive bins,
    zeros before them): ranks found in the flat cumulative counts, no dense
    grid; in blob order."""
    groups, offsets, lengths, counts, zeros = runs
    cum = np.cumsum(counts)
    ends = np.cumsum(lengths)
    first = ends - lengths
    # Counts before a sketch's first bin and through its last (0 before the first).
    before = np.where(first > 0, cum[np.maximum(first - 1, 0)], 0) if len(cum) else \
        np.zeros(len(first), dtype=np.int64)
    through = np.where(ends > 0, cum[np.maximum(ends - 1, 0)], 0) if len(cum) else before
    n = through - before + zeros
    rank = q * (n - 1)
    lo = np.floor(rank)
    frac = rank - lo

    def at(r):
        positive = r - zeros                      # rank among the positive bins
        # integral ranks: searched as int64, so cum is not cast to float
        idx = np.searchsorted(cum, (before + np.maximum(positive, 0)).astype(np.int64),
                              side="right")
        key = offsets + np.minimum(idx - first, np.maximum(lengths - 1, 0))
        return np.where(positive < 0, 0.0, _HALF * np.power(GAMMA, key.astype(np.float64)))

    value = at(lo)
    upper = at(np.minimum(lo + 1, np.maximum(n - 1, 0)))
    value = np.where((frac > 0) & (lo + 1 < n), value + (upper - value) * frac, value)
    return np.where(n > 0, value, np.nan)


def _quantile_rows(cells, q, col_ord):
    """Per row of bin counts (columns' ordinals ``col_ord``): Sketch.quantile's rule."""
    cum = cells.cumsum(axis=1)
    n = cum[:, -1]
    rank = q * (n - 1)
    lo = np.floor(rank)
    frac = rank - lo
    value = _at(cum, lo, col_ord)
    nxt = np.minimum(lo + 1, np.maximum(n - 1, 0))
    upper = _at(cum, nxt, col_ord)
    value = np.where((frac > 0) & (lo + 1 < n), value + (upper - value) * frac, value)
    return np.where(n > 0, value, np.nan)


def _at(cum, rank, col_ord):
    """Representative of the 0-based ``rank`` per row (first bin with cum > rank)."""
    idx = (cum <= rank[:, None]).sum(axis=1)
    ords = col_ord[np.minimum(idx, cum.shape[1] - 1)]
    with np.errstate(over="ignore"):
        pos = _HALF * np.power(GAMMA, (ords - _POS).astype(np.float64))
        neg = -_HALF * np.power(GAMMA, (_NEG - ords).astype(np.float64))
    return np.where(ords > _ZERO_ORD, pos, np.where(ords == _ZERO_ORD, 0.0, neg))
