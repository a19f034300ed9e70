"""Rollup tiers vs raw samples, same data, one run (issue 9).

    python bench/bench_rollups.py ingest  --engines pg,sqlite   # record_many with vs without tiers
    python bench/bench_rollups.py storage --engines pg,sqlite   # bytes per covered day, tier / raw
    python bench/bench_rollups.py reads   --engines pg,sqlite   # raw vs tiers at 100 servers x 3 d
    python bench/bench_rollups.py fleet   --engines pg,sqlite   # tiers only, 500 servers x 30 d

- ingest: the demo fleet generator's rows (realistic gauges and counters),
  ``--servers`` x 9 metrics x ``--hours``; each round two fresh tenants load the
  same rows, one through ``record_many`` (tiers kept in the write transaction),
  one through the same writer without the tier hook; then a full re-send into
  each. Order rotates; medians.
- storage: after the ingest load, ``table_bytes`` of each tier / of ``metrics``
  (both cover the same span, so it is the per-covered-day ratio).
- reads: ``--servers`` servers x ``--days`` days of cpu_percent at 15 s loaded
  through ``record_many``; each read runs with ``resolution='raw'`` and
  ``'auto'`` on the same tenant, rows read counted from the plan.
- fleet: 500 servers x 30 days of cpu_percent states built in Python from
  generated 15 s samples and written straight into the 1 h and 1 d tiers
  (and the 5 min tier for the first and last day, which unaligned ranges
  read), no raw rows: the tier-side numbers at the issue's scale.
"""

import argparse
import gc
import math
import random
import sys
from contextlib import ExitStack
from datetime import timedelta

import _common as C

from metricstore.demo import DemoFleet
from metricstore.ingest import METRICS, metric_checker, write
from metricstore.rollups.rebuild import coarsen
from metricstore.rollups.state import State
from metricstore.rollups.tiers import TIER_1D, TIER_1H, TIER_5M, TIERS
from metricstore.timeutil import to_micros

HOUR = timedelta(hours=1)


def fleet_rows(servers, hours, end):
    fleet = DemoFleet(tuple(range(1, servers + 1)), end - timedelta(hours=hours), end)
    rows = []
    for samples, _ in fleet.generate():
        rows.extend(samples)
    return rows


def plain_write(repo, rows):
    """record_many's path without the tier hook (what ingest cost before issue 9)."""
    check = metric_checker(repo.metric_rules(refresh=True), repo._server_ids(),
                           repo._time_bounds())
    return write(repo.db, METRICS, rows, check)


def bench_ingest(engine, args):
    end = C.datetime.now(C.UTC).replace(second=0, microsecond=0)
    rows = fleet_rows(args.servers, args.hours, end)
    print("%s: %d rows (%d servers x 9 metrics x %g h)" % (engine, len(rows), args.servers,
                                                           args.hours))
    times = {"tiers new": [], "plain new": [], "tiers resend": [], "plain resend": []}
    paths = [("tiers", lambda r, rows: r.record_many(rows)), ("plain", plain_write)]
    sizes = None
    for rnd in range(args.rounds):
        for name, path in (paths if rnd % 2 == 0 else paths[::-1]):
            with C.Tenant(engine, servers=args.servers) as t:
                if engine == "postgresql":
                    t.ensure_months(rows[0][3], rows[-1][3])
                with C.timed(times[name + " new"], cpu=True):
                    assert path(t.repo, rows).inserted == len(rows)
                with C.timed(times[name + " resend"], cpu=True):
                    assert path(t.repo, rows).inserted == 0
                if name == "tiers" and sizes is None:
                    sizes = storage(t)
    # Wall time is throughput; this process's CPU time (all of SQLite's work,
    # the client side of PostgreSQL's) is steadier on a shared machine.
    wall = {k: [w for w, _ in v] for k, v in times.items()}
    cpu = {k: [c for _, c in v] for k, v in times.items()}
    for k, v in wall.items():
        print("  %-13s median %.2f s  %s rows/s  (runs %s; cpu %s)" % (
            k, C.median(v), C.fmt_rate(len(rows), C.median(v)),
            ", ".join("%.2f" % x for x in v), ", ".join("%.2f" % x for x in cpu[k])))
    for kind in ("new", "resend"):
        print("  ratio %s: tiers / plain throughput = %.2fx wall, %.2fx cpu (this process)" % (
            kind, C.median(wall["plain " + kind]) / C.median(wall["tiers " + kind]),
            C.median(cpu["plain " + kind]) / C.median(cpu["tiers " + kind])))
    raw = sizes["metrics"]
    print("  storage over the same %g h: metrics %d B (%.1f B/row)" % (
        args.hours, raw, raw / len(rows)))
    for tier in TIERS:
        print("    %s: %d B = %.2f %% of raw, %d rows" % (
            tier.table, sizes[tier.table], 100.0 * sizes[tier.table] / raw,
            sizes[tier.table + " rows"]))


def storage(t):
    d = t.repo.dialect
    if t.engine == "postgresql":
        t.db.execute_sql("VACUUM ANALYZE")
    out = {"metrics": d.table_bytes(t.db, "metrics")}
    for tier in TIERS:
        out[tier.table] = d.table_bytes(t.db, tier.table)
        out[tier.table + " rows"] = t.db.execute_sql(
            "SELECT count(*) FROM %s" % tier.table).fetchone()[0]
    return out


def cpu_rows(server_ids, start, steps, seed=3):
    """cpu_percent at 15 s: a per-server level, a daily rhythm and noise."""
    rnd = random.Random(seed)
    rows = []
    for sid in server_ids:
        base = rnd.uniform(10, 60)
        for k in range(steps):
            t = start + k * C.STEP
            hour = (t.hour + t.minute / 60.0)
            v = base + 20 * math.sin((hour - 8) / 24 * 2 * math.pi) + 8 * (rnd.random() - 0.5)
            rows.append((sid, "cpu_percent", min(100.0, max(0.0, v)), t))
    return rows


def run(fn, reps):
    times = []
    for _ in range(reps):
        with C.timed(times):
            out = fn()
    return C.median(times) * 1000, out


def reads(t, days, end, reps, raw_too=True):
    """The issue's reads, raw and from tiers; ms, resolution, rows read."""
    repo = t.repo
    start = end - timedelta(days=days)
    aligned_end = end.replace(minute=0, second=0, microsecond=0)
    sid = t.server_ids[0]
    cases = [
        ("top 10 by p95, %d d" % days, lambda res: repo.top("cpu_percent", start, end, n=10,
                                                           stat="p95", resolution=res)),
        ("top 10 by avg, %d d" % days, lambda res: repo.top("cpu_percent", start, end, n=10,
                                                           stat="avg", resolution=res)),
        ("heatmap hourly avg 7 d, every server, one call", lambda res: repo.heatmap(
            "cpu_percent", aligned_end - timedelta(days=7), aligned_end, HOUR, stat="avg",
            resolution=res)),
        ("heatmap hourly avg 7 d, one call a server", lambda res: [
            repo.buckets(s, "cpu_percent", aligned_end - timedelta(days=7), aligned_end, HOUR,
                         stats=("avg",), resolution=res) for s in t.server_ids]),
        ("buckets 1 h avg/max/p95 %d d, one series" % days, lambda res: repo.buckets(
            sid, "cpu_percent", start, end, HOUR, stats=("avg", "max", "p95"),
            resolution=res)),
    ]
    out = []
    for name, fn in cases:
        # The previous case's answers go first (500 charts: ~0.5 M objects
        # C.timed's collection would walk before each call, as in bench_fleet).
        tier_res = raw_res = None
        gc.collect()
        tier_ms, tier_res = run(lambda: fn("auto"), reps)
        raw_ms = None
        if raw_too:
            raw_ms, raw_res = run(lambda: fn("raw"), max(1, reps // 2))
            agree(name, tier_res, raw_res)
        res = tier_res.resolution if hasattr(tier_res, "resolution") else \
            tier_res[0].resolution
        if name.startswith("heatmap") and isinstance(tier_res, list):
            name += " (%d calls)" % len(tier_res)
        out.append((name, raw_ms, tier_ms, res))
    return out


def agree(name, tiers, raw):
    """The tier answer equals the raw one (percentiles within the sketch's 1 %)."""
    def numbers(res):
        if hasattr(res, "rows"):                          # a Heatmap
            return [v for sid in sorted(res.rows) for v in res.rows[sid]]
        if res and isinstance(res[0], list):               # one call a server
            return [b.avg for part in res for b in part]
        if res and hasattr(res[0], "value"):               # top
            return [r.value for r in res]
        return [v for b in res for v in (b.avg, b.max, b.p95)]
    a, b = numbers(tiers), numbers(raw)
    rel = 0.0101 if "p95" in name else 1e-9
    ok = len(a) == len(b) and all((x is None and y is None) or abs(x - y) <= rel * abs(y) + 1e-9
                                  for x, y in zip(a, b))
    assert ok, "tier and raw answers differ: %s" % name


def tier_rows_read(t, days, end):
    """Tier rows a 30-day top reads per server (plan sizes)."""
    from metricstore.rollups import read as R
    from metricstore.rollups.planner import plan
    segs = plan(to_micros(end - timedelta(days=days)), to_micros(end),
                R.sources(t.db, end))
    return [(s.source.name, (s.hi - s.lo) // (s.source.width_us or 15_000_000)) for s in segs]


def bench_reads(engine, args):
    end = C.datetime.now(C.UTC).replace(microsecond=0)
    end -= timedelta(seconds=end.second % 15)
    with C.Tenant(engine, servers=args.servers) as t:
        steps = int(args.days * 86400 / 15)
        start = end - steps * C.STEP
        t.ensure_months(start, end)
        for i in range(0, len(t.server_ids), 10):
            t.repo.record_many(cpu_rows(t.server_ids[i:i + 10], start, steps, seed=i))
        if engine == "postgresql":
            t.db.execute_sql("VACUUM ANALYZE")
        rows = args.servers * steps
        print("  (loaded through record_many, tiers kept in the write path)")
        print("%s: %d servers x %g days of cpu_percent = %d raw rows" % (
            engine, args.servers, args.days, rows))
        for name, raw_ms, tier_ms, res in reads(t, int(args.days), end, args.reps):
            print("  %-42s raw %9.1f ms   tiers %7.1f ms (%s)   %.0fx" % (
                name, raw_ms, tier_ms, res, raw_ms / tier_ms))
        print("  per-series sources of a %g-day range: %s" % (
            args.days, tier_rows_read(t, args.days, end)))


DAILY = [20 * math.sin(((k * 15 / 3600.0) - 8) / 24 * 2 * math.pi) for k in range(5760)]


def fleet_values(sid, days):
    """cpu_percent of server ``sid`` every 15 s for ``days`` days from day0:
    the same shape as cpu_rows (level, daily rhythm, noise), reproducible."""
    rnd = random.Random(sid)
    base, r = rnd.uniform(10, 60), rnd.random
    return [min(100.0, max(0.0, base + DAILY[k % 5760] + 8 * (r() - 0.5)))
            for k in range(days * 5760)]


def load_fleet_raw(t, args, day0, end):
    """The same samples as raw rows, ``[end - days - 1 h, end)``, through the
    plain writer (no tier hook: the tiers were loaded from the same values)."""
    start = end - timedelta(days=args.days, hours=1)
    first = int((start - day0).total_seconds() // 15)
    last = int((end - day0).total_seconds() // 15)
    loaded = 0
    for sid in range(1, args.servers + 1):
        values = fleet_values(sid, args.days + 1)
        rows = [(sid, "cpu_percent", values[k], day0 + k * C.STEP) for k in range(first, last)]
        loaded += plain_write(t.repo, rows).inserted
    return loaded


def build_fleet_rows(args, end, mid):
    """Tier rows (key + state columns) of ``args.servers`` x ``args.days`` days."""
    day0 = (end - timedelta(days=args.days)).replace(hour=0, minute=0, second=0)
    days = args.days + 1
    first_edge = to_micros(day0) + 2 * 86_400_000_000
    last_edge = to_micros(end) - 86_400_000_000
    rows = {TIER_5M: [], TIER_1H: [], TIER_1D: []}
    t0 = to_micros(day0)
    step = 15_000_000
    for sid in range(1, args.servers + 1):
        values = fleet_values(sid, days)
        fives = {}
        for i in range(0, len(values), 20):
            b = t0 + i * step
            fives[sid, mid, b] = State.of_points(
                b, list(zip(range(b, b + 20 * step, step), values[i:i + 20])))
        hours = coarsen(fives, TIER_1H.width_us)
        rows[TIER_5M] += [k + v.row() for k, v in fives.items()
                          if k[2] < first_edge or k[2] >= last_edge]
        rows[TIER_1H] += [k + v.row() for k, v in hours.items()]
        rows[TIER_1D] += [k + v.row() for k, v in coarsen(hours, TIER_1D.width_us).items()]
    return day0, rows


def own_vs_sketches(t, args, end):
    """The one-series 30-day chart (1 h avg/max/p95) read two ways on the
    same rows, alternating: hourly buckets from their rows' own quantiles
    (what ``buckets`` does) and from merging the rows' sketches (``gather``
    without ``own_width``, the read before migration 007); answers equal."""
    from metricstore.rollups import read as R
    plain = R.gather

    def sketches_only(*a, own_width=None, **k):
        return plain(*a, **k)
    call = lambda: t.repo.buckets(t.server_ids[0], "cpu_percent", end - timedelta(days=args.days),
                                  end, HOUR, stats=("avg", "max", "p95"))
    times = {"own": [], "sketches": []}
    answers = {}
    for i in range(4 * args.reps):
        for name in (("own", "sketches") if i % 2 else ("sketches", "own")):
            R.gather = plain if name == "own" else sketches_only
            try:
                with C.timed(times[name]):
                    answers[name] = call()
            finally:
                R.gather = plain
    assert [b.stats for b in answers["own"]] == [b.stats for b in answers["sketches"]]
    own, sk = (C.median(times[k]) * 1000 for k in ("own", "sketches"))
    print("  %-42s own quantiles %5.1f ms, sketches %5.1f ms (%.2fx)" % (
        "buckets 1 h p95 30 d: own vs sketches", own, sk, sk / own))


def bench_fleet(engines, args):
    end = C.datetime.now(C.UTC).replace(microsecond=0)
    end -= timedelta(seconds=end.second % 15)
    built = C.clock()
    day0, rows = build_fleet_rows(args, end, 1)          # cpu_percent is metric type 1
    print("tier rows of %d servers x %d days built in %.0f s: %s" % (
        args.servers, args.days + 1, C.clock() - built,
        ", ".join("%s %d" % (t.name, len(r)) for t, r in rows.items())))
    with ExitStack() as stack:
        tenants = []
        for engine in engines:
            t = stack.enter_context(C.Tenant(engine, servers=args.servers))
            raw = args.raw and engine == "postgresql"
            load_fleet(t, args, rows, day0, end, raw)
            tenants.append((t, raw))
        # The built rows (~10 M Python objects) go before any read is timed:
        # C.timed collects garbage before each call, and a collection walking
        # them evicts the CPU caches the call then runs without (+1.5 ms on a
        # 2.4 ms call, measured; a serving process holds no such heap).
        del rows
        gc.collect()
        for t, raw in tenants:
            print("%s: %d-server fleet, %s" % (t.engine, args.servers,
                                              "tiers and raw rows" if raw else
                                              "tiers only (no raw rows)"))
            fleet_reads(t, args, end, raw)
            sys.stdout.flush()


def load_fleet(t, args, rows, day0, end, raw):
    """Write the built tier rows (and with ``raw`` the same samples as raw
    rows) into tenant ``t``; pin its clock at the data's end."""
    from metricstore.partitioning import ensure_months
    from metricstore.rollups.store import write_rows
    from metricstore.timeutil import months_between
    assert t.metric_ids["cpu_percent"] == 1
    t.ensure_months(day0, end)
    for tier in TIERS:
        ensure_months(t.db, tier.table, months_between(day0, end))
    for tier, tier_rows in rows.items():
        for i in range(0, len(tier_rows), 20_000):
            with t.repo.dialect.write_transaction(t.db):
                write_rows(t.db, tier, tier_rows[i:i + 20_000])
    # The plan's horizons follow the repository's clock: pinned at the
    # data's end, so a raw edge the load took minutes to pass stays in.
    t.repo.clock = lambda: end
    if raw:
        loaded_at = C.clock()
        n = load_fleet_raw(t, args, day0, end)
        print("%s: %d raw rows loaded in %.0f s (the same samples)" % (
            t.engine, n, C.clock() - loaded_at))
    if t.engine == "postgresql":
        t.db.execute_sql("VACUUM ANALYZE")


def fleet_reads(t, args, end, raw):
    """The fleet's reads on tenant ``t`` (raw too with ``raw``)."""
    for name, raw_ms, tier_ms, res in reads(t, args.days, end, args.reps, raw_too=raw):
        if raw:
            print("  %-42s raw %9.1f ms   tiers %7.1f ms (%s)   %.0fx" % (
                name, raw_ms, tier_ms, res, raw_ms / tier_ms))
        else:
            print("  %-42s tiers %7.1f ms (%s)" % (name, tier_ms, res))
    own_vs_sketches(t, args, end)
    aligned = end.replace(hour=0, minute=0, second=0)
    for stat in ("p95", "avg"):
        ms, out = run(lambda: t.repo.top("cpu_percent", aligned - timedelta(days=30),
                                         aligned, stat=stat), args.reps)
        print("  %-42s tiers %7.1f ms (%s)" % (
            "top 10 by %s, 30 whole UTC days" % stat, ms, out.resolution))
    print("  per-series sources of the 30-day range: %s" % tier_rows_read(
        t, args.days, end))
    sys.stdout.flush()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["ingest", "reads", "fleet"])
    p.add_argument("--engines", type=C.engines_arg, default="pg,sqlite")
    p.add_argument("--servers", type=int, default=None)
    p.add_argument("--hours", type=float, default=12)
    p.add_argument("--days", type=float, default=None)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--raw", action="store_true",
                   help="fleet: also load the same samples as raw rows (PostgreSQL) and time "
                        "the raw reads (~86 M rows at 500 x 30 d)")
    args = p.parse_args(argv)
    defaults = {"ingest": (20, None), "reads": (100, 3), "fleet": (500, 30)}[args.what]
    args.servers = args.servers or defaults[0]
    args.days = int(args.days or defaults[1] or 0)
    if args.what == "fleet":
        return bench_fleet(args.engines, args)
    fn = {"ingest": bench_ingest, "reads": bench_reads}[args.what]
    for engine in args.engines:
        fn(engine, args)
        sys.stdout.flush()


if __name__ == "__main__":
    main()
