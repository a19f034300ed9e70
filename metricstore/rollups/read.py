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

from ..settings import effective_retention
from ..timeutil import ONE_US, to_micros
from . import store
from .planner import Source, plan, usable
from .sketch import ALPHA, Sketch
from .state import State, merge_ordered
from .tiers import RAW, TIER_MAX_GAP_US, TIERS

PERCENTILES = {"p50": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99}


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


def fetch(db, series, segments, counters, sketches=True):
    """``{(sid, mid): [State ...]}`` in time order over ``segments`` for each
    (sid, mid) in ``series``; raw points become one-sample states. Without
    ``sketches`` the states carry empty sketches (no decoding)."""
    by_source = defaultdict(list)
    for seg in segments:
        by_source[seg.source].extend((s, m, seg.lo, seg.hi) for s, m in series)
    out = defaultdict(list)
    for source, ranges in by_source.items():
        ranges.sort()
        if source.name == RAW:
            for (s, m), points in store.raw_points(db, ranges).items():
                counter = m in counters
                out[s, m].extend(State.of_point(t, v, counter, sketches) for t, v in points)
        else:
            for row in store.tier_rows(db, source.tier, ranges, sketches):
                out[row[0], row[1]].append(State.from_row(row[2], row[3:], sketches))
    for states in out.values():
        states.sort(key=lambda st: st.start)
    return out


def stat_values(state, stats):
    """The requested statistics of a merged state (None when it is empty)."""
    out = {}
    for name in stats:
        if not state.count:
            out[name] = None
        elif name == "avg":
            out[name] = state.sum / state.count
        elif name == "min":
            out[name] = state.min
        elif name == "max":
            out[name] = state.max
        elif name == "sum":
            out[name] = state.sum
        elif name == "count":
            out[name] = state.count
        elif name == "last":
            out[name] = state.last
        else:
            out[name] = state.sketch.quantile(PERCENTILES[name], state.min, state.max)
    return out


def percentile_error(stats, segments):
    return ALPHA if uses_tier(segments) and any(s in PERCENTILES for s in stats) else 0.0


def needs_sketch(stats):
    return any(s in PERCENTILES for s in stats)


def buckets(db, sid, mid, lo, hi, every_us, segments, counters, stats):
    """``[(bucket start us, {stat: value})]`` of the non-empty buckets."""
    states = fetch(db, [(sid, mid)], segments, counters,
                   needs_sketch(stats)).get((sid, mid), [])
    groups = defaultdict(list)
    for st in states:
        groups[st.start - st.start % every_us].append(st)
    return [(g, stat_values(parts[0] if len(parts) == 1 else merge_ordered(g, parts), stats))
            for g, parts in sorted(groups.items())]


def summary(db, sid, mid, segments, counters, stats):
    states = fetch(db, [(sid, mid)], segments, counters,
                   needs_sketch(stats)).get((sid, mid), [])
    return stat_values(merge_ordered(0, states), stats)


def rates(db, sid, mid, every_us, max_gap_us, segments, counters):
    """``[(bucket us, delta, seconds, pairs)]``: pairs counted in the bucket
    of their later sample, as raw ``rate()`` does."""
    states = fetch(db, [(sid, mid)], segments, counters, False).get((sid, mid), [])
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


def top(db, server_ids, mid, segments, counters, stat):
    """``{sid: value}`` of ``stat`` over the segments for each server."""
    if stat in ("avg", "min", "max"):
        return store.totals(db, mid, segments, stat)
    if stat in PERCENTILES:
        return top_quantile(db, server_ids, mid, segments, PERCENTILES[stat])
    states = fetch(db, [(s, mid) for s in server_ids], segments, counters,
                   needs_sketch((stat,)))
    out = {}
    for (sid, _), parts in states.items():
        value = stat_values(merge_ordered(0, parts), (stat,))[stat]
        if value is not None:
            out[sid] = value
    return out


def rate_sources(all_sources, max_gap_us):
    """Tiers whose stored pairs match ``max_gap``: the 5-minute tier for any
    gap of at least 5 minutes (all its inner pairs are closer), coarser
    tiers only for exactly the 5-minute gap they were built with."""
    return [s for s in all_sources if s.name == RAW
            or (s.width_us <= TIER_MAX_GAP_US and max_gap_us >= TIER_MAX_GAP_US)
            or max_gap_us == TIER_MAX_GAP_US]




def top_quantile(db, server_ids, mid, segments, q):
    """``{sid: q-quantile}``: each server's sketches merged straight from the
    rows (no per-bucket states), clamped to its exact min and max."""
    acc = {}
    by_source = defaultdict(list)
    for seg in segments:
        by_source[seg.source].extend((s, mid, seg.lo, seg.hi) for s in server_ids)
    for source, ranges in by_source.items():
        ranges.sort()
        if source.name == RAW:
            for (sid, _), points in store.raw_points(db, ranges).items():
                a = acc.get(sid) or acc.setdefault(sid, [Sketch(), None, None])
                values = [v for _, v in points]
                a[0].add_many(values)
                lo, hi = min(values), max(values)
                a[1] = lo if a[1] is None else min(a[1], lo)
                a[2] = hi if a[2] is None else max(a[2], hi)
            continue
        for sid, lo, hi, blob in store.tier_sketches(db, source.tier, ranges):
            a = acc.get(sid) or acc.setdefault(sid, [Sketch(), None, None])
            a[0].merge(Sketch.decode(blob))
            a[1] = lo if a[1] is None else min(a[1], lo)
            a[2] = hi if a[2] is None else max(a[2], hi)
    return {sid: a[0].quantile(q, a[1], a[2]) for sid, a in acc.items() if a[0].count}
