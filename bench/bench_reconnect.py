"""Faults done for real on a throwaway cluster: how fast writes come back, and
what a collector that simply re-sends its failed batch lost or duplicated.

For each fault (restart, pg_terminate_backend, kill -9 of the postmaster),
``--cycles`` times: a collector thread writes a 200-row batch every 20 ms
through one MetricRepository and re-sends a batch that failed; the fault is
done; recovery is the time from the server accepting connections again (for
terminate: from the terminate) to the first write that succeeds. Also the
same measurement for the old behaviour's workaround (the caller closing and
reopening the database itself), as the reference path. Needs root and
pg_createcluster; uses port 55439, never the shared server.

    python bench/bench_reconnect.py [--cycles 5]
"""

import argparse
import statistics
import sys
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

import psycopg2

import metricstore
from metricstore.errors import ConnectError, ConnectionLostError
from metricstore.timeutil import utcnow

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from pgcluster import ThrowawayCluster  # noqa: E402


class Collector(threading.Thread):
    def __init__(self, repo, sid, reopen):
        super().__init__(daemon=True)
        self.repo, self.sid, self.reopen = repo, sid, reopen
        self.base = utcnow() - timedelta(hours=2)
        self.stop = threading.Event()
        self.sent, self.inserted, self.successes, self.failures = 0, 0, [], 0

    def run(self):
        n = 0
        while not self.stop.is_set():
            batch = [(self.sid, "cpu_percent", float(i % 100),
                      self.base + timedelta(milliseconds=i)) for i in range(n, n + 200)]
            n += 200
            while True:
                try:
                    self.inserted += self.repo.record_many(batch).inserted
                    break
                except (ConnectionLostError, ConnectError):
                    self.failures += 1
                    if self.reopen:                 # what callers had to do before
                        db = self.repo.db
                        if not db.in_transaction():
                            db.close()
                    time.sleep(0.02)
            self.sent += len(batch)
            self.successes.append(time.monotonic())
            time.sleep(0.02)


def cycle(cluster, kind, reopen):
    db = metricstore.connect(cluster.url + "?schema=b_" + uuid.uuid4().hex[:8])
    metricstore.provision(db)
    repo = metricstore.MetricRepository(db)
    sid = repo.add_server("sql-01")
    c = Collector(repo, sid, reopen)
    c.start()
    time.sleep(0.5)
    if kind == "restart":
        ready = cluster.restart()
    elif kind == "terminate":
        cluster.terminate_backends()
        ready = time.monotonic()
    else:
        cluster.kill9()
        ready = cluster.start()
    time.sleep(1.5)
    c.stop.set()
    c.join(30)
    after = [t for t in c.successes if t >= ready]
    with psycopg2.connect(cluster.dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM %s.metrics" % db.schema)
        stored = cur.fetchone()[0]
    return (after[0] - ready if after else float("inf")), c.sent - stored, \
        c.inserted - stored, c.failures


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=5)
    args = parser.parse_args()
    cluster = ThrowawayCluster("mst_bench_reconnect", 55439).create()
    try:
        print("| fault | caller | recovery median s | recovery max s | lost | duplicated "
              "| failed attempts |")
        print("|---|---|---:|---:|---:|---:|---:|")
        for kind in ("restart", "terminate", "kill9"):
            for reopen in (False, True):
                runs = [cycle(cluster, kind, reopen) for _ in range(args.cycles)]
                rec = [r[0] for r in runs]
                print("| %s | %s | %.3f | %.3f | %d | %d | %d |" % (
                    kind, "closes and reopens itself" if reopen else "plain retry",
                    statistics.median(rec), max(rec), sum(r[1] for r in runs),
                    sum(r[2] for r in runs), sum(r[3] for r in runs)))
    finally:
        cluster.drop()


if __name__ == "__main__":
    main()
