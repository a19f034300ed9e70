"""record_many vs the raw driver's idempotent bulk path, same schema, same rows.

    python bench/bench_ingest.py                   # 1,000,000 rows, both engines, 3 rounds
    python bench/bench_ingest.py --rows 200000 --engines sqlite --rounds 1

Rows: 50 servers x 9 metrics, 15 s apart, ending now, generated once as
tuples ``(server_id, metric_name, value, aware UTC datetime)`` before any
timing. Each timed run uses a fresh provisioned tenant (PostgreSQL: its own
schema, dropped after; SQLite: a temp file), times the new rows, then a full
re-send of the same rows (all duplicates) into that tenant.

- metricstore: ``MetricRepository(db).record_many(rows)`` (validation included).
- raw PostgreSQL: psycopg2 ``copy_expert`` of the same tuples (datetimes
  serialised as text on the way; metric names mapped to ids with a dict
  fetched before timing) into a temp table, then ``INSERT INTO metrics
  SELECT ... ON CONFLICT DO NOTHING``, one transaction.
- raw SQLite: sqlite3 ``executemany`` of INSERT OR IGNORE of
  (server_id, metric_type_id, value, epoch-microseconds) in one transaction.
- raw-sorted (extra, ``--no-sorted-raw`` skips it): the same raw paths, but
  inserting in key order (SQLite: the converted rows sorted by
  (server_id, metric_type_id, time); PostgreSQL: ``ORDER BY`` in the
  INSERT..SELECT), which is what metricstore's writers do. It shows how much
  of metricstore's lead is that ordering rather than the driver path.

The order of the paths rotates from round to round; medians are reported.
"""

import argparse
import io
import json
import math
import random
import sys
from datetime import datetime
from operator import itemgetter

import _common as C

METRICS = ("cpu_percent", "memory_percent", "disk_io_reads", "disk_io_writes",
           "wait_time_ms", "connection_count", "batch_requests_sec",
           "page_life_expectancy", "blocked_processes")


def generate(n_rows, servers=50, end=None, seed=42):
    """``n_rows`` tuples (server_id, metric, value, aware UTC datetime), time-major.

    Server ids are 1..servers (each tenant registers srv-0000.. in that order).
    Values are realistic for each metric's validation rule.
    """
    rnd = random.Random(seed)
    per_step = servers * len(METRICS)
    steps = math.ceil(n_rows / per_step)
    end = (end or datetime.now(C.UTC)).replace(second=0, microsecond=0)
    start = end - steps * C.STEP
    counters = {(s, m): rnd.uniform(0, 1e6) for s in range(1, servers + 1)
                for m in ("disk_io_reads", "disk_io_writes", "wait_time_ms",
                          "batch_requests_sec")}
    out = []
    append = out.append
    for k in range(steps):
        ts = start + k * C.STEP
        for sid in range(1, servers + 1):
            for name in METRICS:
                if name in ("cpu_percent", "memory_percent"):
                    v = rnd.uniform(0.0, 100.0)
                elif name in ("connection_count", "blocked_processes"):
                    v = float(rnd.randrange(0, 500))
                elif name == "page_life_expectancy":
                    v = rnd.uniform(100.0, 50000.0)
                else:
                    key = (sid, name)
                    counters[key] += rnd.uniform(0.0, 5000.0)
                    v = counters[key]
                append((sid, name, v, ts))
                if len(out) == n_rows:
                    return out
    return out


# --- the paths ---------------------------------------------------------------
def metricstore_path(tenant, rows):
    result = tenant.repo.record_many(rows)
    return result.inserted, result.duplicates


PG_STAGE = ("CREATE TEMP TABLE IF NOT EXISTS raw_stage (server_id integer, "
            "metric_type_id smallint, value double precision, collected_at timestamptz)")
PG_INSERT = ("INSERT INTO metrics (server_id, metric_type_id, value, collected_at) "
             "SELECT server_id, metric_type_id, value, collected_at FROM raw_stage "
             "ON CONFLICT DO NOTHING")
PG_INSERT_ORDERED = PG_INSERT.replace(
    "ON CONFLICT", "ORDER BY server_id, metric_type_id, collected_at ON CONFLICT")


def raw_pg_path(conn, mids, rows, ordered=False):
    """COPY the tuples (datetimes as text) into a temp table, then INSERT..SELECT
    (``ordered``: in key order, as metricstore does)."""
    cur = conn.cursor()
    cur.execute(PG_STAGE)
    cur.execute("TRUNCATE raw_stage")
    text = "".join(["%d\t%d\t%r\t%s\n" % (sid, mids[name], value, ts)
                    for sid, name, value, ts in rows])
    cur.copy_expert("COPY raw_stage FROM STDIN", io.StringIO(text))
    cur.execute(PG_INSERT_ORDERED if ordered else PG_INSERT)
    inserted = cur.rowcount
    cur.execute("TRUNCATE raw_stage")
    conn.commit()
    return inserted, len(rows) - inserted


SQLITE_INSERT = ("INSERT OR IGNORE INTO metrics (server_id, metric_type_id, value, "
                 "collected_at) VALUES (?, ?, ?, ?)")


def raw_sqlite_path(conn, mids, rows, ordered=False):
    """executemany of INSERT OR IGNORE in one transaction, times as epoch us
    (``ordered``: the converted rows sorted by key first, as metricstore does)."""
    epoch, one_us = C.EPOCH, C.ONE_US
    conn.execute("BEGIN IMMEDIATE")
    converted = ((sid, mids[name], value, (ts - epoch) // one_us)
                 for sid, name, value, ts in rows)
    if ordered:
        converted = sorted(converted, key=itemgetter(0, 1, 3))
    cur = conn.executemany(SQLITE_INSERT, converted)
    inserted = cur.rowcount
    conn.execute("COMMIT")
    return inserted, len(rows) - inserted


def one_run(engine, path, rows, servers):
    """Fresh tenant; time new rows then a full re-send. Returns (t_new, t_resend)."""
    first, last = rows[0][3], rows[-1][3]
    with C.Tenant(engine, servers=servers) as tenant:
        tenant.ensure_months(first, last)
        assert tenant.server_ids == list(range(1, servers + 1)), tenant.server_ids
        if path == "metricstore":
            run = lambda: metricstore_path(tenant, rows)   # noqa: E731
            conn = None
        else:
            conn = tenant.raw()
            mids = dict(tenant.metric_ids)                # fetched before timing
            fn = raw_pg_path if engine == "postgresql" else raw_sqlite_path
            ordered = path == "raw-sorted"
            run = lambda: fn(conn, mids, rows, ordered)   # noqa: E731
        times = []
        with C.timed(times, cpu=True):
            ins, dup = run()
        assert (ins, dup) == (len(rows), 0), (path, ins, dup)
        with C.timed(times, cpu=True):
            ins, dup = run()
        assert (ins, dup) == (0, len(rows)), (path, ins, dup)
        (count,) = tenant.db.execute_sql("SELECT count(*) FROM metrics").fetchone()
        assert count == len(rows)
        if conn is not None:
            conn.close()
    return times


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--servers", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds per path (median)")
    ap.add_argument("--engines", type=C.engines_arg, default=["postgresql", "sqlite"])
    ap.add_argument("--no-sorted-raw", dest="sorted_raw", action="store_false",
                    help="skip the extra raw path that inserts in key order")
    ap.add_argument("--json", help="write the raw timings here")
    args = ap.parse_args(argv)

    t0 = C.clock()
    rows = generate(args.rows, args.servers)
    print("generated %d rows (%d servers x 9 metrics, 15 s apart, %s .. %s) in %.1f s"
          % (len(rows), args.servers, rows[0][3], rows[-1][3], C.clock() - t0), flush=True)

    results = {}
    for engine in args.engines:
        paths = ("metricstore", "raw") + (("raw-sorted",) if args.sorted_raw else ())
        times = {p: [] for p in paths}
        for r in range(args.rounds):
            order = paths[r % len(paths):] + paths[:r % len(paths)]
            for path in order:
                (t_new, c_new), (t_dup, c_dup) = one_run(engine, path, rows, args.servers)
                times[path].append((t_new, t_dup, c_new, c_dup))
                print("  %-10s round %d %-11s new %6.2f s (%s rows/s, client CPU %.2f s)  "
                      "re-send %6.2f s (%s rows/s, client CPU %.2f s)"
                      % (engine, r + 1, path, t_new, C.fmt_rate(len(rows), t_new), c_new,
                         t_dup, C.fmt_rate(len(rows), t_dup), c_dup), flush=True)
        results[engine] = times

    print()
    print("rows/s from the median wall time of %d rounds; ratio = metricstore rate / raw rate "
          "(>= 0.8 is the target); per-round ratios pair each round's two runs; client CPU "
          "= this process's CPU seconds per 1 M rows (SQLite: all of the work)." % args.rounds)
    print()
    print("| engine | raw path | case | metricstore rows/s | raw rows/s | ratio "
          "| per-round ratios | client CPU s/1M: metricstore / raw |")
    print("|---|---|---|---:|---:|---:|---|---|")
    for engine, times in results.items():
        for baseline in [p for p in times if p != "metricstore"]:
            for i, case in enumerate(("new rows", "full re-send")):
                ms = [t[i] for t in times["metricstore"]]
                raw = [t[i] for t in times[baseline]]
                ms_cpu = C.median([t[i + 2] for t in times["metricstore"]]) * 1e6 / len(rows)
                raw_cpu = C.median([t[i + 2] for t in times[baseline]]) * 1e6 / len(rows)
                ms_rate = len(rows) / C.median(ms)
                raw_rate = len(rows) / C.median(raw)
                per_round = ["%.2f" % (b / a) for a, b in zip(ms, raw)]
                print("| %s | %s | %s | %.0f k | %.0f k | %.2fx | %s | %.2f / %.2f |"
                      % (engine, baseline, case, ms_rate / 1000, raw_rate / 1000,
                         ms_rate / raw_rate, " ".join(per_round), ms_cpu, raw_cpu))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"rows": len(rows), "results": results}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
