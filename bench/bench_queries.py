"""Repository reads vs the best hand-written SQL through the same driver.

    python bench/bench_queries.py          # default sizes, both engines (~7-8 min here)
    python bench/bench_queries.py --servers 5 --days 45 --scale 1 \
        --fleet-metrics 9 --fleet-snapshot-hours 48      # the 11.7 M-row run
    python bench/bench_queries.py --engines sqlite --days 3 --scale 2 \
        --fleet-servers 20 --stream-points 20000         # a smoke test (~10 s)

Data are loaded through the product's own validated write path,
``MetricRepository.record_many`` / ``record_snapshots``, in batches of
``--batch`` (1,000,000) rows, then ``VACUUM ANALYZE`` (PostgreSQL) or
``ANALYZE`` + WAL checkpoint (SQLite). Every data set ends "now".

- history 1x: ``--servers`` (1) x 9 metrics x ``--days`` (45) days every
  ``--every`` (15) s, plus one snapshot per server per 15 s over the last
  ``--snapshot-hours``. Timed: series (24 h of cpu_percent of server 1,
  consumed fully), buckets (30 days in 1 h buckets, avg/min/max; and with
  p95), latest, latest_snapshots, top over 24 h; EXPLAIN of the buckets
  query on PostgreSQL.
- history 4x (``--scale``, default 4; 1 turns it off): a second tenant with
  the same newest ``--days`` days (same seed: identical results) plus 3x as
  many older days. series/buckets run on the 1x and the 4x tenant in
  rotation (same result, 4x the table), then 4x the range on the 4x tenant
  (4x the result).
- fleet: ``--fleet-servers`` (500) x ``--fleet-metrics`` (1; the issue's
  full shape is 9) x ``--fleet-days`` (2) days every 15 s, snapshots over the
  last ``--fleet-snapshot-hours`` (6): latest, latest_snapshots and top over
  24 h at 500 servers.
- stream: one series of ``--stream-points`` (2,000,000) points 1 s apart;
  peak memory of consuming ``series()`` as a stream vs materialising it,
  each in a fresh child process (RSS growth; tracemalloc in a separate run).
- storage: bytes per stored metrics row, table and each index, per data set.

Each query: a warm-up call each, then ``--reps`` (5) back-to-back pairs in
alternating order; a sample is the mean of k calls (k so that a sample lasts
>= ~30 ms). Reported: median ms of each side and the median of the paired
ratios. Hand-written results are decoded to the same Python types (aware UTC
datetimes, floats) and checked equal to metricstore's. Where two
hand-written shapes are plausible (top), the faster one is the baseline.
"""

import argparse
import json
import math
import os
import random
import subprocess
import sys
from datetime import datetime, timedelta
from itertools import islice

import _common as C

HERE = os.path.dirname(os.path.abspath(__file__))
METRICS = ("cpu_percent", "memory_percent", "disk_io_reads", "disk_io_writes",
           "wait_time_ms", "connection_count", "batch_requests_sec",
           "page_life_expectancy", "blocked_processes")
COUNTERS = {"disk_io_reads", "disk_io_writes", "wait_time_ms", "batch_requests_sec"}
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


# --- data ----------------------------------------------------------------------
def metric_rows(server_ids, metrics, start, end, every, seed):
    """(server_id, metric, value, ts) for ts in [start, end), time-major."""
    rnd = random.Random(seed)
    rand = rnd.random
    step = timedelta(seconds=every)
    kinds = [(m, 2 if m in COUNTERS else 1 if m.endswith("_percent") else 0)
             for m in metrics]
    counters = {(s, m): rnd.uniform(0, 1e6) for s in server_ids for m in metrics}
    ts = start
    while ts < end:
        for sid in server_ids:
            for name, kind in kinds:
                if kind == 1:
                    v = rand() * 100.0
                elif kind == 2:
                    key = (sid, name)
                    v = counters[key] = counters[key] + rand() * 5000.0
                else:
                    v = float(int(rand() * 500))
                yield (sid, name, v, ts)
        ts += step


def snapshot_rows(server_ids, start, end, seed):
    rnd = random.Random(seed)
    rand = rnd.random
    ts = start
    while ts < end:
        for sid in server_ids:
            yield (sid, ts, rand() * 100.0, rand() * 100.0, int(rand() * 300), "online")
        ts += C.STEP


def load(repo, rows, batch, label, snapshots=False):
    write = repo.record_snapshots if snapshots else repo.record_many
    t0 = C.clock()
    total = 0
    rows = iter(rows)
    while True:
        result = write(islice(rows, batch))
        n = result.inserted + result.duplicates
        if not n:
            break
        total += result.inserted
    dt = C.clock() - t0
    print("    loaded %s: %d rows in %.1f s (%.0f k rows/s)"
          % (label, total, dt, total / dt / 1000 if dt else 0), flush=True)
    return total


def finish_load(tenant):
    t0 = C.clock()
    if tenant.engine == "postgresql":
        tenant.db.execute_sql("VACUUM ANALYZE metrics")
        tenant.db.execute_sql("VACUUM ANALYZE server_snapshots")
    else:
        tenant.db.execute_sql("ANALYZE")
        tenant.db.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    print("    %s in %.1f s" % ("VACUUM ANALYZE" if tenant.engine == "postgresql"
                                 else "ANALYZE + checkpoint", C.clock() - t0), flush=True)


# --- hand-written SQL --------------------------------------------------------------
class Hand:
    """The best hand-written SQL for each read, through the raw driver."""

    def __init__(self, tenant):
        self.engine = tenant.engine
        self.conn = tenant.raw()
        if self.engine == "postgresql":
            self.conn.autocommit = True
        self.mids = dict(tenant.metric_ids)

    def rows(self, sql, params):
        cur = self.conn.cursor()
        cur.execute(sql, params)
        return cur.fetchall()

    # time encoding
    def t(self, dt):
        return dt if self.engine == "postgresql" else (dt - C.EPOCH) // C.ONE_US

    def dec(self, value):
        """Aware UTC datetime from what the driver returns."""
        if self.engine == "postgresql":
            return value       # psycopg2 gives an aware datetime (session zone UTC)
        return C.EPOCH + timedelta(0, 0, value)

    def series(self, sid, metric, start, end):
        pg = self.engine == "postgresql"
        sql = ("SELECT collected_at, value FROM metrics WHERE server_id = %s "
               "AND metric_type_id = %s AND collected_at >= %s AND collected_at < %s "
               "ORDER BY collected_at")
        if not pg:
            sql = sql.replace("%s", "?")
            epoch, td = C.EPOCH, timedelta
            return [(epoch + td(0, 0, t), v) for t, v in
                    self.rows(sql, (sid, self.mids[metric], self.t(start), self.t(end)))]
        return self.rows(sql, (sid, self.mids[metric], start, end))

    def buckets(self, sid, metric, start, end, every, p95=False):
        params = [sid, self.mids[metric], self.t(start), self.t(end)]
        if self.engine == "postgresql":
            sql = ("SELECT date_bin(%s, collected_at, timestamptz '1970-01-01 00:00:00+00') "
                   "AS g, avg(value), min(value), max(value){p95} FROM metrics "
                   "WHERE server_id = %s AND metric_type_id = %s AND collected_at >= %s "
                   "AND collected_at < %s GROUP BY g ORDER BY g").format(
                       p95=", percentile_cont(0.95) WITHIN GROUP (ORDER BY value)"
                       if p95 else "")
            return self.rows(sql, [every] + params)
        e = every // C.ONE_US
        if not p95:
            sql = ("SELECT collected_at - collected_at %% %d AS g, AVG(value), MIN(value), "
                   "MAX(value) FROM metrics WHERE server_id = ? AND metric_type_id = ? "
                   "AND collected_at >= ? AND collected_at < ? GROUP BY g ORDER BY g" % e)
        else:
            # SQLite has no percentile aggregate: the two order statistics around
            # 0.95*(n-1) from ROW_NUMBER/COUNT windows, interpolated (percentile_cont).
            sql = ("SELECT g, a, mn, mx, lo + (COALESCE(hi, lo) - lo) * (0.95 * (n - 1) - "
                   "CAST(0.95 * (n - 1) AS INTEGER)) FROM (SELECT g, AVG(v) a, MIN(v) mn, "
                   "MAX(v) mx, MAX(n) n, "
                   "MAX(CASE WHEN rn = CAST(0.95 * (n - 1) AS INTEGER) THEN v END) lo, "
                   "MAX(CASE WHEN rn = CAST(0.95 * (n - 1) AS INTEGER) + 1 THEN v END) hi "
                   "FROM (SELECT g, v, ROW_NUMBER() OVER (PARTITION BY g ORDER BY v) - 1 rn, "
                   "COUNT(*) OVER (PARTITION BY g) n FROM (SELECT collected_at - "
                   "collected_at %% %d AS g, value AS v FROM metrics WHERE server_id = ? "
                   "AND metric_type_id = ? AND collected_at >= ? AND collected_at < ?)) "
                   "GROUP BY g) ORDER BY g" % e)
        epoch, td = C.EPOCH, timedelta
        return [(epoch + td(0, 0, g),) + tuple(r) for g, *r in self.rows(sql, params)]

    def latest(self, metric):
        if self.engine == "postgresql":
            sql = ("SELECT s.id, s.name, m.collected_at, m.value FROM servers s "
                   "CROSS JOIN LATERAL (SELECT collected_at, value FROM metrics "
                   "WHERE server_id = s.id AND metric_type_id = %s "
                   "ORDER BY collected_at DESC LIMIT 1) m ORDER BY s.id")
            return self.rows(sql, (self.mids[metric],))
        sql = ("SELECT s.id, s.name, m.collected_at, m.value FROM servers s JOIN metrics m "
               "ON m.server_id = s.id AND m.metric_type_id = ?1 AND m.collected_at = "
               "(SELECT MAX(collected_at) FROM metrics WHERE server_id = s.id "
               "AND metric_type_id = ?1) ORDER BY s.id")
        epoch, td = C.EPOCH, timedelta
        return [(sid, name, epoch + td(0, 0, t), v)
                for sid, name, t, v in self.rows(sql, (self.mids[metric],))]

    def latest_snapshots(self, now, stale_after):
        if self.engine == "postgresql":
            sql = ("SELECT s.id, s.name, x.collected_at, x.cpu_percent, x.memory_percent, "
                   "x.connection_count, x.status FROM servers s LEFT JOIN LATERAL "
                   "(SELECT collected_at, cpu_percent, memory_percent, connection_count, "
                   "status FROM server_snapshots WHERE server_id = s.id "
                   "ORDER BY collected_at DESC LIMIT 1) x ON true ORDER BY s.id")
            return [(sid, name, t, cpu, mem, conns, status,
                     t is None or now - t > stale_after)
                    for sid, name, t, cpu, mem, conns, status in self.rows(sql, ())]
        sql = ("SELECT s.id, s.name, x.collected_at, x.cpu_percent, x.memory_percent, "
               "x.connection_count, x.status FROM servers s LEFT JOIN server_snapshots x "
               "ON x.server_id = s.id AND x.collected_at = (SELECT MAX(collected_at) "
               "FROM server_snapshots WHERE server_id = s.id) ORDER BY s.id")
        epoch, td = C.EPOCH, timedelta
        out = []
        for sid, name, t, cpu, mem, conns, status in self.rows(sql, ()):
            t = None if t is None else epoch + td(0, 0, t)
            out.append((sid, name, t, cpu, mem, conns, status,
                        t is None or now - t > stale_after))
        return out

    def top_variants(self, metric, start, end, n=10):
        """Two shapes; compare() keeps the faster as the baseline."""
        params = (self.mids[metric], self.t(start), self.t(end), n)
        if self.engine == "postgresql":
            # one index range scan per server (no skip scan in PostgreSQL 15)
            per_server = ("SELECT s.id, s.name, a.v FROM servers s CROSS JOIN LATERAL "
                          "(SELECT avg(value) AS v FROM metrics WHERE server_id = s.id "
                          "AND metric_type_id = %s AND collected_at >= %s "
                          "AND collected_at < %s) a "
                          "WHERE a.v IS NOT NULL ORDER BY a.v DESC, s.id LIMIT %s")
            grouped = ("SELECT m.server_id, s.name, m.v FROM (SELECT server_id, avg(value) AS v "
                       "FROM metrics WHERE server_id = ANY(ARRAY(SELECT id FROM servers)) "
                       "AND metric_type_id = %s AND collected_at >= %s AND collected_at < %s "
                       "GROUP BY server_id) m JOIN servers s ON s.id = m.server_id "
                       "ORDER BY m.v DESC, m.server_id LIMIT %s")
        else:
            per_server = ("SELECT * FROM (SELECT s.id, s.name, (SELECT AVG(value) FROM metrics "
                          "WHERE server_id = s.id AND metric_type_id = ?1 AND collected_at >= ?2 "
                          "AND collected_at < ?3) AS v FROM servers s) WHERE v IS NOT NULL "
                          "ORDER BY v DESC, id LIMIT ?4")
            grouped = ("SELECT m.server_id, s.name, m.v FROM (SELECT server_id, AVG(value) AS v "
                       "FROM metrics WHERE server_id IN (SELECT id FROM servers) "
                       "AND metric_type_id = ?1 AND collected_at >= ?2 AND collected_at < ?3 "
                       "GROUP BY server_id) m JOIN servers s ON s.id = m.server_id "
                       "ORDER BY m.v DESC, m.server_id LIMIT ?4")
        return {"per-server subquery": lambda: self.rows(per_server, params),
                "grouped": lambda: self.rows(grouped, params)}

    def close(self):
        self.conn.close()


# --- timing ----------------------------------------------------------------------
RESULTS = []


def compare(engine, dataset, query, ms_fn, hand_fn, same, reps, size=None):
    """Warm both, then ``reps`` alternating calls; record medians (ms) and ratio.

    ``hand_fn`` may be ``{label: fn}``: the fastest (median of 3) is the baseline.
    """
    variant = ""
    if isinstance(hand_fn, dict):
        timing = {}
        for label, fn in hand_fn.items():
            fn()
            runs = []
            for _ in range(3):
                with C.timed(runs):
                    fn()
            timing[label] = C.median(runs)
        variant = min(timing, key=timing.get)
        print("    (hand-written variants for %s: %s; using %s)" % (
            query, ", ".join("%s %.2f ms" % (k, v * 1000) for k, v in timing.items()),
            variant))
        hand_fn = hand_fn[variant]
    a, b = ms_fn(), hand_fn()
    if not same(a, b):
        raise AssertionError("%s %s: metricstore and hand-written results differ "
                             "(%d vs %d rows)" % (engine, query, len(a), len(b)))
    size = len(a) if size is None else size
    # A sample is the mean of k calls, k chosen so that a sample lasts >= ~30 ms
    # (sub-millisecond queries would otherwise measure the scheduler).
    t0 = C.clock()
    ms_fn()
    k = max(1, min(200, int(0.03 / max(C.clock() - t0, 1e-6))))
    ms, hand = [], []
    for i in range(reps):
        pair = ((ms_fn, ms), (hand_fn, hand))
        for fn, out in (pair if i % 2 == 0 else pair[::-1]):
            with C.timed(out):
                for _ in range(k):
                    fn()
    ms = [x / k for x in ms]
    hand = [x / k for x in hand]
    m, h = C.median(ms) * 1000, C.median(hand) * 1000
    pairs = [x / y for x, y in zip(ms, hand)]
    # the ratio is the median of the paired ratios (each pair ran back to back)
    row = dict(engine=engine, dataset=dataset, query=query, rows=size, ms=m, hand=h,
               ratio=C.median(pairs), variant=variant, k=k, pairs=pairs)
    RESULTS.append(row)
    print("    %-44s %8.2f ms  hand %8.2f ms  ratio %.2fx  (%d rows; %d call(s)/sample; "
          "per-pair %s)" % (query, m, h, row["ratio"], size, k,
                            " ".join("%.2f" % r for r in row["pairs"])), flush=True)
    return row


def close(x, y):
    if x is None or y is None:
        return x is None and y is None
    if isinstance(x, float) or isinstance(y, float):
        return math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-9)
    return x == y


def same_rows(a, b):
    return len(a) == len(b) and all(
        len(x) == len(y) and all(close(p, q) for p, q in zip(x, y)) for x, y in zip(a, b))


def bucket_rows(buckets, stats):
    return [(bk.start,) + tuple(bk.stats[s] for s in stats) for bk in buckets]


def time_series_and_buckets(tenant, hand, dataset, end, reps, series_days=1, bucket_days=30):
    repo, engine = tenant.repo, tenant.engine
    s_start, b_start = end - series_days * DAY, end - bucket_days * DAY
    compare(engine, dataset, "series %dh (cpu_percent, server 1)" % (24 * series_days),
            lambda: list(repo.series(1, "cpu_percent", s_start, end)),
            lambda: hand.series(1, "cpu_percent", s_start, end), same_rows, reps)
    for stats in (("avg", "min", "max"), ("avg", "min", "max", "p95")):
        compare(engine, dataset, "buckets %dd/1h %s" % (bucket_days, "/".join(stats)),
                lambda: repo.buckets(1, "cpu_percent", b_start, end, HOUR, stats=stats),
                lambda: hand.buckets(1, "cpu_percent", b_start, end, HOUR,
                                     p95="p95" in stats),
                lambda a, b: same_rows(bucket_rows(a, stats), b), reps)


def time_fleet_queries(tenant, hand, dataset, end, reps):
    repo, engine = tenant.repo, tenant.engine
    now, stale = end, timedelta(minutes=2)
    compare(engine, dataset, "latest cpu_percent, every server",
            lambda: repo.latest("cpu_percent"), lambda: hand.latest("cpu_percent"),
            same_rows, reps)
    compare(engine, dataset, "latest_snapshots, every server",
            lambda: repo.latest_snapshots(stale_after=stale, now=now),
            lambda: hand.latest_snapshots(now, stale), same_rows, reps)
    compare(engine, dataset, "top 10 by avg cpu_percent, 24 h",
            lambda: repo.top("cpu_percent", end - DAY, end, n=10),
            hand.top_variants("cpu_percent", end - DAY, end, n=10), same_rows, reps)


def explain_buckets(tenant, end):
    """The plan of the exact SQL metricstore runs for the 30-day buckets (PG)."""
    db = tenant.db
    seen = []
    original = db.execute_sql

    def spy(sql, params=None, *a, **k):
        seen.append((sql, params))
        return original(sql, params, *a, **k)
    db.execute_sql = spy
    try:
        tenant.repo.buckets(1, "cpu_percent", end - 30 * DAY, end, HOUR,
                            stats=("avg", "min", "max"))
    finally:
        del db.execute_sql
    sql, params = seen[-1]
    plan = [r[0] for r in db.execute_sql("EXPLAIN " + sql, params)]
    return sql, plan


def storage(tenant):
    from metricstore.dialects import dialect_for
    size = dialect_for(tenant.db).table_bytes(tenant.db, "metrics")
    (count,) = tenant.db.execute_sql("SELECT count(*) FROM metrics").fetchone()
    return size, count


def time_scaling(engine, one, four, end, reps, out):
    """The same series/buckets calls on the 1x and the 4x tenant, alternated
    (ms 1x, ms 4x, hand 1x, hand 4x, order rotating): same result, 4x table."""
    (t1, h1, n1), (t4, h4, n4) = one, four
    days = (n1 // len(t1.server_ids) // 9 * 15) // 86400      # days of history in 1x
    s_start, b_start = end - DAY, end - min(30, days) * DAY
    cases = [("series 24h", lambda t: list(t.repo.series(1, "cpu_percent", s_start, end)),
              lambda h: h.series(1, "cpu_percent", s_start, end))]
    for stats in (("avg", "min", "max"), ("avg", "min", "max", "p95")):
        cases.append(("buckets %dd/1h %s" % (min(30, days), "/".join(stats)),
                      lambda t, stats=stats: bucket_rows(t.repo.buckets(
                          1, "cpu_percent", b_start, end, HOUR, stats=stats), stats),
                      lambda h, p95="p95" in stats: h.buckets(1, "cpu_percent", b_start, end,
                                                              HOUR, p95=p95)))
    print("    1x (%d rows) vs %.1fx (%d rows) tenants, same query, same result, alternated:"
          % (n1, n4 / n1, n4))
    for query, ms_fn, hand_fn in cases:
        fns = [("ms", "1x", lambda: ms_fn(t1)), ("ms", "4x", lambda: ms_fn(t4)),
               ("hand", "1x", lambda: hand_fn(h1)), ("hand", "4x", lambda: hand_fn(h4))]
        results = [fn() for _, _, fn in fns]
        assert same_rows(results[0], results[1]) and same_rows(results[2], results[3]), query
        times = {(w, s): [] for w, s, _ in fns}
        for i in range(reps):
            for w, s, fn in fns[i % 4:] + fns[:i % 4]:
                with C.timed(times[(w, s)]):
                    fn()
        med = {key: C.median(v) * 1000 for key, v in times.items()}
        ms_growth = C.median([b / a for a, b in zip(times[("ms", "1x")], times[("ms", "4x")])])
        hand_growth = C.median([b / a for a, b in zip(times[("hand", "1x")],
                                                      times[("hand", "4x")])])
        row = dict(engine=engine, query=query, rows_out=len(results[0]), table_1x=n1,
                   table_4x=n4, ms_1x=med[("ms", "1x")], ms_4x=med[("ms", "4x")],
                   hand_1x=med[("hand", "1x")], hand_4x=med[("hand", "4x")],
                   ms_growth=ms_growth, hand_growth=hand_growth)
        out.append(row)
        print("    %-34s metricstore %7.2f -> %7.2f ms (x%.2f)   hand %7.2f -> %7.2f ms (x%.2f)"
              % (query, row["ms_1x"], row["ms_4x"], ms_growth, row["hand_1x"],
                 row["hand_4x"], hand_growth), flush=True)


def storage_parts(tenant):
    """Bytes of metrics split into table and each index (all partitions)."""
    db = tenant.db
    if tenant.engine == "postgresql":
        (table,) = db.execute_sql("SELECT SUM(pg_table_size(relid)) FROM "
                                  "pg_partition_tree('metrics')").fetchone()
        out = {"table": int(table)}
        for (name,) in db.execute_sql("SELECT indexrelid::regclass::text FROM pg_index "
                                      "WHERE indrelid = 'metrics'::regclass").fetchall():
            (size,) = db.execute_sql("SELECT SUM(pg_relation_size(relid)) FROM "
                                     "pg_partition_tree(%s::regclass)", (name,)).fetchone()
            out[name.split(".")[-1].strip('"')] = int(size)
        return out
    names = ["metrics"] + [r[1] for r in db.execute_sql(
        "SELECT * FROM pragma_index_list('metrics')").fetchall()]
    return {("table (clustered PK)" if n == "metrics" else n): db.execute_sql(
        "SELECT COALESCE(SUM(pgsize), 0) FROM dbstat WHERE name = ?", (n,)).fetchone()[0]
        for n in names}


# --- memory (child process) ----------------------------------------------------------
def memory_child(url, mode, trace, start, end):
    """Consume series() in a fresh process; print peak memory as JSON.

    ``trace``: tracemalloc's peak of Python allocations (slows the run);
    otherwise the growth of the process's peak RSS (ru_maxrss), which also
    sees the driver's C buffers (libpq result sets).
    """
    import resource
    import tracemalloc
    import metricstore
    from metricstore.connection import connect
    db = connect(url)
    db.connect()
    repo = metricstore.MetricRepository(db)
    list(repo.series(1, "cpu_percent", start, start + timedelta(minutes=1)))  # warm imports
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if trace:
        tracemalloc.start()
    t0 = C.clock()
    if mode == "stream":
        n = 0
        for _ in repo.series(1, "cpu_percent", start, end):
            n += 1
    else:
        points = list(repo.series(1, "cpu_percent", start, end))
        n = len(points)
    dt = C.clock() - t0
    peak = tracemalloc.get_traced_memory()[1] if trace else None
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps(dict(points=n, seconds=dt, traced_peak=peak,
                          rss_growth=(rss1 - rss0) * 1024)))


def memory_test(engine, points, batch, out):
    end = datetime.now(C.UTC).replace(second=0, microsecond=0) - timedelta(minutes=1)
    start = end - timedelta(seconds=points)
    with C.Tenant(engine, servers=1, label="bench_stream") as tenant:
        tenant.ensure_months(start, end)
        rows = ((1, "cpu_percent", (i % 1000) / 10.0, start + timedelta(seconds=i))
                for i in range(points))
        load(tenant.repo, rows, batch, "stream series (%d points, 1 s apart)" % points)
        finish_load(tenant)
        tenant.db.close()
        for mode in ("stream", "list"):
            r = {}
            for trace in ("rss", "trace"):
                res = subprocess.run(
                    [sys.executable, os.path.abspath(__file__), "--memory-child", tenant.url,
                     mode, trace, start.isoformat(), end.isoformat()],
                    capture_output=True, text=True, check=True, cwd=HERE)
                got = json.loads(res.stdout.strip().splitlines()[-1])
                if trace == "trace":
                    r["traced_peak"] = got["traced_peak"]
                else:
                    r.update(points=got["points"], seconds=got["seconds"],
                             rss_growth=got["rss_growth"])
            out.append(dict(engine=engine, mode=mode, **r))
            print("    series() of %d points, %-6s: %.1f s, peak RSS growth %.1f MB, "
                  "tracemalloc peak %.1f MB" % (r["points"], mode, r["seconds"],
                                                r["rss_growth"] / 1e6, r["traced_peak"] / 1e6),
                  flush=True)


# --- main ------------------------------------------------------------------------------
def show_plan(title, plan):
    print("    " + title)
    for line in plan:
        print("      " + line)


def load_history(tenant, args, end, days, label):
    """``days`` of history ending at ``end``: the newest ``args.days`` always
    from the same seed, so a 1x and a 4x tenant hold identical recent data."""
    sids = tenant.server_ids
    base_start = end - args.days * DAY
    first = end - days * DAY
    tenant.ensure_months(first, end)
    load(tenant.repo, metric_rows(sids, METRICS, base_start, end, args.every, 1), args.batch,
         "%s metrics, newest %d days (%d servers x 9 metrics every %d s)"
         % (label, args.days, len(sids), args.every))
    if first < base_start:
        load(tenant.repo, metric_rows(sids, METRICS, first, base_start, args.every, 3),
             args.batch, "%s metrics, %d older days" % (label, days - args.days))
    load(tenant.repo, snapshot_rows(sids, end - args.snapshot_hours * HOUR, end, 2),
         args.batch, "%s snapshots (%d h every 15 s)" % (label, args.snapshot_hours),
         snapshots=True)
    finish_load(tenant)


def record_storage(tenant, dataset, report):
    size, count = storage(tenant)
    parts = storage_parts(tenant)
    report["storage"].append(dict(engine=tenant.engine, dataset=dataset, rows=count,
                                  bytes=size, parts=parts))
    print("    storage (%s): metrics %d rows, %.1f MB, %.1f bytes/row (%s)"
          % (dataset, count, size / 1e6, size / count,
             ", ".join("%s %.1f" % (k, v / count) for k, v in parts.items())), flush=True)
    return count


def run_engine(engine, args, report):
    end = datetime.now(C.UTC).replace(second=0, microsecond=0) - timedelta(minutes=1)
    # the 24 h / 30 day query windows end at ``end``; the data ends there too
    print("\n== %s ==" % engine, flush=True)

    # history -------------------------------------------------------------------
    t1 = C.Tenant(engine, servers=args.servers, label="bench_hist1")
    t4 = None
    try:
        load_history(t1, args, end, args.days, "history 1x")
        count1 = record_storage(t1, "history 1x", report)
        h1 = Hand(t1)
        ds1 = "history 1x (%d rows)" % count1
        time_series_and_buckets(t1, h1, ds1, end, args.reps)
        time_fleet_queries(t1, h1, ds1, end, args.reps)
        if engine == "postgresql":
            sql, plan = explain_buckets(t1, end)
            report["explain"] = dict(sql=sql, plan=plan)
            show_plan("EXPLAIN of metricstore's 30-day buckets query (1x):", plan)
        if args.scale > 1:
            t4 = C.Tenant(engine, servers=args.servers, label="bench_hist4")
            load_history(t4, args, end, args.days * args.scale, "history %dx" % args.scale)
            count4 = record_storage(t4, "history %dx" % args.scale, report)
            h4 = Hand(t4)
            ds4 = "history %dx (%d rows)" % (args.scale, count4)
            time_scaling(engine, (t1, h1, count1), (t4, h4, count4), end, args.reps,
                         report["scaling"])
            # the result-size axis: 4x the range over the same (4x) table
            time_series_and_buckets(t4, h4, ds4, end, args.reps, series_days=args.scale,
                                    bucket_days=min(30 * args.scale, args.days * args.scale))
            if engine == "postgresql":
                sql, plan = explain_buckets(t4, end)
                report["explain_4x"] = dict(sql=sql, plan=plan)
                show_plan("EXPLAIN of the same 30-day buckets query over the %dx table:"
                          % args.scale, plan)
            h4.close()
        h1.close()
    finally:
        t1.close()
        if t4 is not None:
            t4.close()

    # fleet -----------------------------------------------------------------------
    if args.fleet_servers:
        with C.Tenant(engine, servers=args.fleet_servers, label="bench_fleet") as tenant:
            sids = tenant.server_ids
            start = end - args.fleet_days * DAY
            tenant.ensure_months(start, end)
            metrics = METRICS[:args.fleet_metrics]
            load(tenant.repo, metric_rows(sids, metrics, start, end, 15, 4), args.batch,
                 "fleet metrics (%d servers x %d metrics x %g days every 15 s)"
                 % (len(sids), len(metrics), args.fleet_days))
            load(tenant.repo, snapshot_rows(sids, end - args.fleet_snapshot_hours * HOUR,
                                            end, 5),
                 args.batch, "fleet snapshots (%d h every 15 s)" % args.fleet_snapshot_hours,
                 snapshots=True)
            finish_load(tenant)
            count = record_storage(tenant, "fleet", report)
            hand = Hand(tenant)
            time_fleet_queries(tenant, hand, "fleet %d servers (%d rows)"
                               % (len(sids), count), end, args.reps)
            hand.close()

    # memory ------------------------------------------------------------------------
    if args.stream_points:
        memory_test(engine, args.stream_points, args.batch, report["memory"])


def main(argv=None):
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--memory-child":
        _, _, url, mode, trace, start, end = sys.argv
        memory_child(url, mode, trace == "trace", datetime.fromisoformat(start),
                     datetime.fromisoformat(end))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engines", type=C.engines_arg, default=["postgresql", "sqlite"])
    ap.add_argument("--servers", type=int, default=1, help="history servers (default 1)")
    ap.add_argument("--days", type=int, default=45, help="history days (default 45)")
    ap.add_argument("--every", type=int, default=15, help="history spacing, s (default 15)")
    ap.add_argument("--scale", type=int, default=4,
                    help="extend the history to N x the days and re-time (default 4; 1: off)")
    ap.add_argument("--snapshot-hours", type=int, default=48)
    ap.add_argument("--fleet-servers", type=int, default=500, help="0: skip the fleet set")
    ap.add_argument("--fleet-metrics", type=int, default=1,
                    help="metrics per fleet server (default 1: cpu_percent; full: 9)")
    ap.add_argument("--fleet-days", type=float, default=2)
    ap.add_argument("--fleet-snapshot-hours", type=int, default=6)
    ap.add_argument("--stream-points", type=int, default=2_000_000, help="0: skip")
    ap.add_argument("--batch", type=int, default=1_000_000, help="rows per record_many call")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)

    report = {"args": vars(args), "storage": [], "memory": [], "scaling": []}
    t0 = C.clock()
    for engine in args.engines:
        run_engine(engine, args, report)
    report["results"] = RESULTS

    print("\nratio = median over the %d back-to-back pairs of metricstore time / hand time"
          % args.reps)
    print("\n| engine | data set | query | rows out | metricstore ms | hand ms | ratio |")
    print("|---|---|---|---:|---:|---:|---:|")
    for r in RESULTS:
        print("| %s | %s | %s | %d | %.2f | %.2f | %.2fx |" % (
            r["engine"], r["dataset"], r["query"], r["rows"], r["ms"], r["hand"], r["ratio"]))
    if report["scaling"]:
        print("\n| engine | query (same result) | rows out | metricstore ms 1x -> 4x table "
              "| growth | hand ms 1x -> 4x table | growth |")
        print("|---|---|---:|---|---:|---|---:|")
        for r in report["scaling"]:
            print("| %s | %s | %d | %.2f -> %.2f | x%.2f | %.2f -> %.2f | x%.2f |" % (
                r["engine"], r["query"], r["rows_out"], r["ms_1x"], r["ms_4x"], r["ms_growth"],
                r["hand_1x"], r["hand_4x"], r["hand_growth"]))
    print("\n| engine | data set | metrics rows | bytes/row | of which |")
    print("|---|---|---:|---:|---|")
    for s in report["storage"]:
        print("| %s | %s | %d | %.1f | %s |" % (
            s["engine"], s["dataset"], s["rows"], s["bytes"] / s["rows"],
            ", ".join("%s %.1f" % (k, v / s["rows"]) for k, v in s["parts"].items())))
    if report["memory"]:
        print("\n| engine | series() of N points | mode | seconds | peak RSS growth MB "
              "| tracemalloc peak MB |")
        print("|---|---:|---|---:|---:|---:|")
        for m in report["memory"]:
            print("| %s | %d | %s | %.1f | %.1f | %.1f |" % (
                m["engine"], m["points"], m["mode"], m["seconds"], m["rss_growth"] / 1e6,
                m["traced_peak"] / 1e6))
    print("total %.0f s" % (C.clock() - t0))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
