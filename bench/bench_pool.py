"""Web-app requests from 8 threads: a pooled database vs a connection per request.

Each request is what a chart endpoint does: ``latest`` for the fleet and a
1-hour ``buckets`` of one server. Both paths run the same requests on the
same tenant in one run, interleaved in rounds; the figures are request
latencies (p50, p99) and throughput.

    python bench/bench_pool.py [--engines postgresql,sqlite] [--requests 400]
"""

import argparse
import statistics
import threading
import time
from datetime import timedelta

import metricstore
from metricstore.connection import connect

from _common import Tenant, engines_arg

THREADS = 8
SERVERS = 20


def pooled(url):
    scheme, rest = url.split("://", 1)
    sep = "&" if "?" in rest else "?"
    return "%s+pool://%s%smax_connections=%d" % (scheme, rest, sep, THREADS)


def request(db, sid, now):
    repo = metricstore.MetricRepository(db)
    repo.latest("cpu_percent")
    repo.buckets(sid, "cpu_percent", now - timedelta(hours=1), now, timedelta(minutes=5))


def run(label, make_db, shared, sids, now, per_thread):
    """``per_thread`` requests in each of 8 threads; returns latencies (s)."""
    latencies, lock = [], threading.Lock()
    db_shared = make_db() if shared else None

    def worker(k):
        mine = []
        for i in range(per_thread):
            t0 = time.perf_counter()
            if shared:
                with db_shared.connection_context():       # check out, then back
                    request(db_shared, sids[(k + i) % len(sids)], now)
            else:
                db = make_db()                             # connect per request
                db.connect()
                request(db, sids[(k + i) % len(sids)], now)
                db.close()
            mine.append(time.perf_counter() - t0)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(THREADS)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if db_shared is not None:
        db_shared.close_all()
    return label, latencies, wall


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(p * len(values)))]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", type=engines_arg, default=["postgresql", "sqlite"])
    parser.add_argument("--requests", type=int, default=400, help="per path and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    for engine in args.engines:
        with Tenant(engine) as tenant:
            db = connect(tenant.url)
            repo = metricstore.MetricRepository(db)
            sids = [repo.add_server("sql-%02d" % i) for i in range(SERVERS)]
            now = metricstore.timeutil.utcnow()
            rows = [(sid, "cpu_percent", float(i % 90), now - timedelta(seconds=15 * i))
                    for sid in sids for i in range(1, 241)]
            repo.record_many(rows)
            db.close()
            per_thread = args.requests // THREADS
            results = {}
            for _ in range(args.rounds):
                for label, make, shared in (
                        ("connect per request", lambda: connect(tenant.url), False),
                        ("pooled, shared by threads", lambda: connect(pooled(tenant.url)),
                         True)):
                    _, lat, wall = run(label, make, shared, sids, now, per_thread)
                    results.setdefault(label, []).append((lat, wall))
            print("\n%s: %d threads, %d requests per path per round, %d rounds"
                  % (engine, THREADS, per_thread * THREADS, args.rounds))
            print("| path | p50 ms | p99 ms | requests/s |")
            print("|---|---:|---:|---:|")
            base = None
            for label, runs in results.items():
                lat = [x for r in runs for x in r[0]]
                rate = statistics.median(len(r[0]) / r[1] for r in runs)
                print("| %s | %.2f | %.2f | %.0f |" % (label, pct(lat, 0.5) * 1e3,
                                                       pct(lat, 0.99) * 1e3, rate))
                base = base or pct(lat, 0.5)
            lat = [x for r in results["pooled, shared by threads"] for x in r[0]]
            print("p50 ratio per-request / pooled: %.2fx" % (base / pct(lat, 0.5)))


if __name__ == "__main__":
    main()
