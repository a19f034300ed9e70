"""Citus (coordinator + workers) vs a single PostgreSQL node: same rows, one run.

    METRICSTORE_CITUS_URL=postgresql://root@127.0.0.1:9700/test \\
        python bench/bench_citus.py                        # 40 servers x 9 metrics x 6 h
    python bench/bench_citus.py --servers 20 --hours 2 --rounds 3

Three tenants get the same rows, generated once before any timing: the
single node (``BENCH_PG_URL``, default the 5432 server), a Citus tenant
sharded by server (``metricstore.distribute``, ``--shards`` shards) and a
Citus tenant in a distributed schema (schema-based sharding). Ingest is
``record_many`` in batches of ``--batch`` rows, then a full re-send (all
duplicates, whose counts are checked). Each query runs ``--rounds`` times
per tenant, tenants interleaved; medians and the ratio to the single node
are printed, with rows per worker and the EXPLAINs of a one-server query, of
a one-server tier read and of ``latest``; the rollup reads over 6 h are
served from the tiers; the reads through ``per_server_sql`` are timed on the
sharded tenant in the PostgreSQL LATERAL shape and in Citus's. Prints
Markdown; nothing is kept (tenants are dropped).
"""

import argparse
import functools
import os
import random
import sys
import uuid
from datetime import timedelta

import _common as C

import metricstore
from metricstore import queries as Q
from metricstore.connection import connect
from metricstore.dialects import PostgresDialect, dialect_for
from metricstore.rollups.rebuild import tier_status
from metricstore.status import status

CITUS_URL = os.environ.get("METRICSTORE_CITUS_URL", "postgresql://root@127.0.0.1:9700/test")
METRICS = ("cpu_percent", "memory_percent", "disk_io_reads", "disk_io_writes",
           "wait_time_ms", "connection_count", "batch_requests_sec",
           "page_life_expectancy", "blocked_processes")


class Tenant:
    def __init__(self, label, base_url, how, shards):
        self.label, self.base = label, base_url
        self.schema = "bench_citus_%s" % uuid.uuid4().hex[:8]
        self.url = base_url + "?schema=" + self.schema
        self.db = connect(self.url)
        self.db.connect()
        if how == "distribute":
            metricstore.distribute(self.db, shard_count=shards)
        else:
            metricstore.provision(self.db)
        self.repo = metricstore.MetricRepository(self.db)

    def drop(self):
        self.db.close()
        admin = connect(self.base)
        admin.execute_sql("DROP SCHEMA IF EXISTS %s CASCADE" % self.schema)
        admin.close()


def make_rows(servers, hours, end):
    rng = random.Random(7)
    steps = int(hours * 3600 / 15)
    rows, snaps = [], []
    for i in range(steps):
        t = end - C.STEP * (steps - i)
        for sid in range(1, servers + 1):
            for m in METRICS:
                rows.append((sid, m, float(rng.randint(0, 400)) / 4, t))
            snaps.append((sid, t, float(rng.randint(0, 100)), 50.0, 10, "online"))
    return rows, snaps


def ingest(tenant, rows, snaps, batch):
    times = []
    inserted = 0
    with C.timed(times):
        for i in range(0, len(rows), batch):
            inserted += tenant.repo.record_many(rows[i:i + batch]).inserted
        tenant.repo.record_snapshots(snaps)
    again = []
    with C.timed(again):
        dup = sum(tenant.repo.record_many(rows[i:i + batch]).duplicates
                  for i in range(0, len(rows), batch))
    assert inserted == len(rows) and dup == len(rows), (tenant.label, inserted, dup)
    return times[0], again[0]


def queries(end, servers):
    start, long = end - timedelta(hours=1), end - timedelta(hours=6)
    return {
        "series (1 server, 1 h)": lambda r: list(r.series(1, "cpu_percent", start, end)),
        "buckets 5m avg,p95 (1 server, 1 h)": lambda r: r.buckets(
            1, "cpu_percent", start, end, timedelta(minutes=5), stats=("avg", "p95")),
        "summary (1 server, 1 h)": lambda r: r.summary(1, "cpu_percent", start, end),
        "latest (all servers)": lambda r: r.latest("cpu_percent"),
        "latest_snapshots (fleet)": lambda r: r.latest_snapshots(now=end),
        "top 10 by avg (1 h)": lambda r: r.top("cpu_percent", start, end),
        "silent_servers (5 min)": lambda r: r.silent_servers(end - timedelta(minutes=5)),
        "status()": lambda r: status(r.db, now=end),
        "buckets 1h avg,p95 (1 server, 6 h, tiers)": lambda r: r.buckets(
            1, "cpu_percent", long, end, timedelta(hours=1), stats=("avg", "p95")),
        "summary (1 server, 6 h, tiers)": lambda r: r.summary(1, "cpu_percent", long, end),
        "rate 1h (1 server, 6 h, tiers)": lambda r: r.rate(
            1, "disk_io_reads", long, end, timedelta(hours=1)),
        "top 10 by p95 (6 h, tiers)": lambda r: r.top("cpu_percent", long, end, stat="p95"),
        "top 10 by avg (6 h, tiers)": lambda r: r.top("cpu_percent", long, end),
        "heatmap avg (all servers, 6 h, 1 h buckets, tiers)": lambda r: r.heatmap(
            "cpu_percent", long, end, timedelta(hours=1)).rows,
        "rollups status": lambda r: tier_status(r.db, now=end),
    }
UNEQUAL = ("status()", "rollups status")     # row counts: estimates on the single node
# Reads through Dialect.per_server_sql, timed on the sharded tenant in both
# shapes: the PostgreSQL LATERAL over unnest(:ids) (what CitusDialect used
# before it had its own; its grouped form is refused by Citus, so no top())
# and CitusDialect's server_id = ANY(:ids).
PER_SERVER_READS = ("buckets 5m avg,p95 (1 server, 1 h)", "summary (1 server, 1 h)",
                    "buckets 1h avg,p95 (1 server, 6 h, tiers)",
                    "summary (1 server, 6 h, tiers)",
                    "heatmap avg (all servers, 6 h, 1 h buckets, tiers)")


def per_server_shapes(tenant, calls, rounds):
    """``{name: (LATERAL ms, ANY ms)}``: medians on ``tenant``, shapes interleaved."""
    d = dialect_for(tenant.db)
    lateral = functools.partial(PostgresDialect.per_server_sql, d)
    out = {}
    for name in PER_SERVER_READS:
        times = ([], [])
        for _ in range(rounds):
            for i, shape in enumerate((lateral, None)):
                if shape:
                    d.per_server_sql = shape
                try:
                    with C.timed(times[i]):
                        calls[name](tenant.repo)
                finally:
                    d.__dict__.pop("per_server_sql", None)
        out[name] = tuple(C.median(t) * 1000 for t in times)
    return out


def tier_read_sql(tenant, end):
    """The tier statement of a one-server 6 h ``buckets`` read, with its parameters."""
    sent = []
    execute = tenant.db.execute_sql

    def spy(sql, params=None, *args, **kwargs):
        if "rollup_" in sql and not sent:
            sent.append((sql, params))
        return execute(sql, params, *args, **kwargs)

    tenant.db.execute_sql = spy
    try:
        tenant.repo.buckets(1, "cpu_percent", end - timedelta(hours=6), end,
                            timedelta(hours=1), stats=("avg", "p95"))
    finally:
        del tenant.db.execute_sql
    return sent[0]


def rows_per_worker(db):
    return db.execute_sql(
        "SELECT s.nodename || ':' || s.nodeport, sum(r.result::bigint) "
        "FROM run_command_on_shards('metrics', 'SELECT count(*) FROM %%s') r "
        "JOIN pg_catalog.citus_shards s USING (shardid) GROUP BY 1 ORDER BY 1").fetchall()


def explain(db, sql, params):
    return "\n".join(r[0] for r in db.execute_sql("EXPLAIN (COSTS OFF) " + sql, params))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--servers", type=int, default=40)
    ap.add_argument("--hours", type=float, default=6)
    ap.add_argument("--batch", type=int, default=50_000)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--shards", type=int, default=32)
    args = ap.parse_args(argv)

    end = metricstore.timeutil.utcnow().replace(second=0, microsecond=0)
    rows, snaps = make_rows(args.servers, args.hours, end)
    tenants = [Tenant("single node", C.PG_URL, "provision", args.shards),
               Tenant("Citus, by server", CITUS_URL, "distribute", args.shards),
               Tenant("Citus, schema", CITUS_URL, "provision", args.shards)]
    try:
        for t in tenants:
            for sid in range(1, args.servers + 1):
                assert t.repo.add_server("srv-%04d" % sid) == sid
        print("# Citus vs a single node: %d servers x %d metrics x %g h = %d rows "
              "(+%d snapshots), %d shards\n" % (args.servers, len(METRICS), args.hours,
                                                len(rows), len(snaps), args.shards))
        print("| ingest | " + " | ".join(t.label for t in tenants) + " |")
        print("|---|" + "---:|" * len(tenants))
        new, resend = [], []
        for t in tenants:
            a, b = ingest(t, rows, snaps, args.batch)
            new.append(a)
            resend.append(b)
        print("| new rows: s (k rows/s) | " + " | ".join(
            "%.1f (%s) %.2fx" % (s, C.fmt_rate(len(rows) + len(snaps), s), s / new[0])
            for s in new) + " |")
        print("| re-send (all duplicates): s | " + " | ".join(
            "%.1f %.2fx" % (s, s / resend[0]) for s in resend) + " |")

        print("\n| query (median of %d, ms) | " % args.rounds
              + " | ".join(t.label for t in tenants) + " |")
        print("|---|" + "---:|" * len(tenants))
        for name, call in queries(end, args.servers).items():
            results = [call(t.repo) for t in tenants]          # warm, and same answers
            if name not in UNEQUAL:
                assert results[1] == results[0] and results[2] == results[0], name
            times = {t.label: [] for t in tenants}
            for _ in range(args.rounds):
                for t in tenants:
                    with C.timed(times[t.label]):
                        call(t.repo)
            med = [C.median(times[t.label]) * 1000 for t in tenants]
            print("| %s | %s |" % (name, " | ".join(
                "%.1f (%.1fx)" % (m, m / med[0]) for m in med)))

        citus = tenants[1]
        calls = queries(end, args.servers)
        print("\n| read through per_server_sql, Citus by server (median of %d, ms) "
              "| LATERAL over unnest (before) | server_id = ANY (CitusDialect) |"
              % args.rounds)
        print("|---|---:|---:|")
        for name, (before, after) in per_server_shapes(citus, calls, args.rounds).items():
            print("| %s | %.1f | %.1f (%.2fx) |" % (name, before, after, after / before))
        print("\nRows per worker (Citus, by server): " + ", ".join(
            "%s %d" % (node, n) for node, n in rows_per_worker(citus.db)))
        d = dialect_for(citus.db)
        print("\n```\n-- series, one server (router query)\n" + explain(
            citus.db, d.sql(Q.SERIES), {"sid": 1, "mid": 1, "start": end - timedelta(hours=1),
                                        "end": end, "limit": 20000}) + "\n```")
        sql, params = tier_read_sql(citus, end)
        print("\n```\n-- buckets 1h, one server, 6 h: the tier segments (router query)\n"
              + explain(citus.db, sql, params) + "\n```")
        print("\n```\n-- latest (one task per shard)\n" + "\n".join(
            explain(citus.db, d.sql(d.latest, filter=""), {"mid": 1}).splitlines()[:14])
            + "\n   ...\n```")
        print("\n```\n-- rollups status: first bucket of rollup_5m (one task per shard)\n"
              + "\n".join(explain(citus.db, d.tier_span.format(t="rollup_5m"), {})
                          .splitlines()[:16]) + "\n   ...\n```")
    finally:
        for t in tenants:
            t.drop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
