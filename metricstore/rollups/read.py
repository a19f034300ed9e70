"""Answering reads from the tiers: plan, fetch the states, merge in time
order, compute the statistics.

Exact statistics (count, sum, avg, min, max, last) and counter rates from a
tier equal the raw answer: every bucket is a merge of mergeable states in
time order, never an average of averages. Percentiles come from the merged
sketch and are approximate within :data:`~.sketch.ALPHA` relative error.
Each answer says which resolution served it.
"""

from collections import defaultdict
from datetime import timedelta

import numpy as np

from ..settings import effective_retention
from ..timeutil import to_micros
from . import store
from .columns import PERCENTILES, gather, listed, reduce
from .planner import Source
from .sketch import ALPHA
from .state import State
from .tiers import RAW, TIER_MAX_GAP_US, TIERS


class Served(list):
    """A list of results with ``resolution`` (e.g. '1h', '1d+1h+raw') and the
    relative ``error`` bound of its percentiles (0.0: exact)."""
    resolution = RAW
    error = 0.0


class Summary(dict):
    """``{stat: value}`` with ``resolution`` and percentile ``error`` bound."""
    resolution = RAW
    error = 0.0


def retention(db):
    """``(raw days, {tier: days kept})`` (one read of the settings)."""
    return effective_retention(db)


def sources(db, now):
    """Every source, coarsest tier first, raw last, with its horizon (us)."""
    return sources_at(now, *effective_retention(db))


def sources_at(now, raw_days, days):
    """The sources at ``now`` for the given retention (days)."""
    out = [Source(t.name, t.width_us, to_micros(now - timedelta(days=days[t.name])), t)
           for t in reversed(TIERS)]
    out.append(Source(RAW, 0, to_micros(now - timedelta(days=raw_days))))
    return out


def resolution(segments):
    used = {s.source for s in segments}
    return "+".join(s.name for s in sorted(used, key=lambda s: -s.width_us)) or RAW


def uses_tier(segments):
    return any(s.source.name != RAW for s in segments)


def fetch(db, series, segments, counters):
    """``{(sid, mid): [State ...]}`` in time order over ``segments`` for each
    (sid, mid) in ``series``; raw points become one-sample states; sketches
    are not decoded (rates need none)."""
    by_source = defaultdict(list)
    for seg in segments:
        by_source[seg.source].extend((s, m, seg.lo, seg.hi) for s, m in series)
    out = defaultdict(list)
    for source, ranges in by_source.items():
        ranges.sort()
        if source.name == RAW:
            for (s, m), points in store.raw_points(db, ranges).items():
                counter = m in counters
                out[s, m].extend(State.of_point(t, v, counter, False) for t, v in points)
        else:
            for row in store.tier_rows(db, source.tier, ranges, False):
                out[row[0], row[1]].append(State.from_row(row[2], row[3:], False))
    for states in out.values():
        states.sort(key=lambda st: st.start)
    return out


def percentile_error(stats, segments):
    return ALPHA if uses_tier(segments) and any(s in PERCENTILES for s in stats) else 0.0


def buckets(db, sid, mid, every_us, segments, stats):
    """``(bucket starts in us, [[value of stats[0] a bucket ...], ...])``
    of the non-empty buckets, ascending (values None where undefined)."""
    cols = gather(db, [sid], mid, segments, stats, own_width=every_us)
    t = cols.array("t", np.int64)
    groups, out = reduce(cols, t - t % every_us, stats)
    return groups.tolist(), [listed(name, out[name]) for name in stats]


def summary(db, sid, mid, segments, stats):
    """``{stat: value}`` over the segments (None when there is no sample)."""
    cols = gather(db, [sid], mid, segments, stats)
    _, out = reduce(cols, np.zeros(cols.size, dtype=np.int64), stats)
    if not cols.size:
        return dict.fromkeys(stats)
    return {name: listed(name, out[name])[0] for name in stats}


def grid(db, server_ids, mid, first_us, every_us, width, segments, stat):
    """``{sid: [value or None, ...]}``: ``stat`` per server and bucket, the
    ``width`` buckets of ``every_us`` from ``first_us`` (None: no data)."""
    cols = gather(db, server_ids, mid, segments, (stat,), own_width=every_us)
    sid, t = cols.array("sid", np.int64), cols.array("t", np.int64)
    ids = np.asarray(server_ids, dtype=np.int64)
    order = np.argsort(ids, kind="stable")
    rows = order[np.searchsorted(ids, sid, sorter=order)]   # each row's place in server_ids
    column = (t - t % every_us - first_us) // every_us
    groups, out = reduce(cols, rows * width + column, (stat,))
    cells = np.full(len(server_ids) * width, np.nan)
    cells[groups] = out[stat]
    cells = cells.reshape(len(server_ids), width).tolist()
    integer = stat == "count"
    return {s: [None if v != v else (int(v) if integer else v) for v in row]
            for s, row in zip(server_ids, cells)}


def rates(db, sid, mid, every_us, max_gap_us, segments, counters):
    """``[(bucket us, delta, seconds, pairs)]``: pairs counted in the bucket
    of their later sample, as raw ``rate()`` does."""
    states = fetch(db, [(sid, mid)], segments, counters).get((sid, mid), [])
    out = {}
    prev = None
    for st in states:
        g = st.start - st.start % every_us
        delta, seconds, pairs = out.get(g, (0.0, 0.0, 0))
        delta, seconds, pairs = delta + st.increase, seconds + st.elapsed, pairs + st.pairs
        if prev is not None:
            gap = st.first_at - prev.last_at
            if gap <= max_gap_us:
                delta += st.first - prev.last if st.first >= prev.last else st.first
                seconds += gap / 1e6
                pairs += 1
        out[g] = (delta, seconds, pairs)
        prev = st
    return [(g,) + v for g, v in sorted(out.items()) if v[2]]


def top(db, server_ids, mid, segments, stat):
    """``{sid: value}`` of ``stat`` over the segments for each server."""
    cols = gather(db, server_ids, mid, segments, (stat,), by_server=True)
    groups, out = reduce(cols, cols.array("sid", np.int64), (stat,))
    return {int(g): v for g, v in zip(groups.tolist(), out[stat].tolist()) if v == v}


def rate_sources(all_sources, max_gap_us):
    """Tiers whose stored pairs match ``max_gap``: the 5-minute tier for any
    gap of at least 5 minutes (all its inner pairs are closer), coarser
    tiers only for exactly the 5-minute gap they were built with."""
    return [s for s in all_sources if s.name == RAW
            or (s.width_us <= TIER_MAX_GAP_US and max_gap_us >= TIER_MAX_GAP_US)
            or max_gap_us == TIER_MAX_GAP_US]

