"""Retention: dropping an expired month's partition vs DELETE of the same rows.

    python bench/bench_retention.py                 # 2,000,000 rows (~2-3 min on 2 cores)
    python bench/bench_retention.py --rows 200000   # a quick look

PostgreSQL (``DATABASE_URL``, default postgresql://root@127.0.0.1:5432/test)
gets its own schema, dropped at the end; SQLite a file in a temporary folder.
The clock is fixed at NOW = 2026-06-15 12:00 UTC, retention 30 days.

1. The same rows, loaded by COPY: ``--rows`` in March 2026 (expired) plus a
   tenth as many in June (kept), 50 servers x 9 metrics, time-major, into
   (a) metricstore's partitioned ``metrics`` and (b) ``metrics_flat``, an
   unpartitioned copy with the same columns and indexes; both VACUUM ANALYZEd
   before timing, then a CHECKPOINT before each timed step.
2. Timed: (a) ``drop_partition`` (DETACH + DROP, metricstore's executor) of
   March; (b) ``DELETE`` of March's rows from ``metrics_flat``, then ``VACUUM``;
   (c) SQLite: ``metricstore.retention.delete_expired`` of the same rows.
3. Ingest stall: a writer thread inserts 100-row batches into June every
   ~10 ms (ensure_months + Metric.insert_many, its own connection) while one
   ``metricstore.maintain`` creates 8 partitions (one by moving May's rows
   out of the default partition), drops 7 expired ones (April holding
   ``--rows``/4 rows) and trims the boundary month in batches. Reported:
   median, p99 and max batch latency before, during and after.
"""

import argparse
import io
import os
import re
import shutil
import sqlite3
import statistics
import tempfile
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone

import metricstore
from metricstore.dialects import dialect_for
from metricstore.models import Metric, MetricType, Server
from metricstore.partitioning import ensure_months
from metricstore.partitioning.operations import drop_partition
from metricstore.retention import delete_expired
from metricstore.timeutil import to_micros

UTC = timezone.utc
NOW = datetime(2026, 6, 15, 12, tzinfo=UTC)
MARCH, APRIL, MAY, JUNE = (datetime(2026, m, 1, tzinfo=UTC) for m in (3, 4, 5, 6))
SERVERS = 50
COPY_BATCH = 250_000
COLUMNS = "(server_id, metric_type_id, value, collected_at)"


def times_for(start, end, n, series):
    """Instants spreading ``n`` rows of ``series`` series evenly over [start, end)."""
    steps = -(-n // series)
    span = (end - start) / steps
    return [start + span * i for i in range(steps)]


def rows(start, end, n, servers, types):
    """``n`` rows ``(server_id, metric_type_id, value, instant)``, time-major."""
    emitted = 0
    for i, t in enumerate(times_for(start, end, n, len(servers) * len(types))):
        for s in servers:
            for m in types:
                if emitted == n:
                    return
                yield s, m, float((i * 31 + s * 7 + m) % 1000) / 10.0, t
                emitted += 1


def copy_text(batch):
    """COPY text of a batch; instants rendered once each."""
    cache = {}
    out = []
    for s, m, v, t in batch:
        ts = cache.get(t)
        if ts is None:
            ts = cache[t] = t.strftime("%Y-%m-%d %H:%M:%S.%f+00")
        out.append("%d\t%d\t%r\t%s\n" % (s, m, v, ts))
    return "".join(out)


def batches(iterable, size):
    batch = []
    for row in iterable:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def pg_copy(db, tables, row_iter):
    """COPY the rows into every table of ``tables`` (same text); return row count."""
    n = 0
    cursor = db.cursor()
    for batch in batches(row_iter, COPY_BATCH):
        text = copy_text(batch)
        for table in tables:
            with db.atomic():
                cursor.copy_expert("COPY %s %s FROM STDIN" % (table, COLUMNS),
                                   io.StringIO(text))
        n += len(batch)
    return n


def scalar(db, sql, params=()):
    return db.execute_sql(sql, params).fetchone()[0]


def checkpoint(db):
    try:
        db.execute_sql("CHECKPOINT")
    except Exception:              # not a superuser: time without it
        pass


VACUUM_TUPLES = re.compile(r"tuples: (\d+) removed, (\d+) remain, (\d+) are dead but not yet "
                           r"removable")


def vacuum(db, table, dead, attempts=5):
    """Seconds of the VACUUM that removed the ``dead`` rows (an older snapshot in
    another session can keep them; then wait and run it again, and say so)."""
    conn = db.connection()
    for attempt in range(1, attempts + 1):
        del conn.notices[:]
        t0 = time.perf_counter()
        db.execute_sql("VACUUM (VERBOSE) %s" % table)
        seconds = time.perf_counter() - t0
        found = [VACUUM_TUPLES.search(n) for n in conn.notices]
        removed, _, kept = next((tuple(map(int, m.groups())) for m in found if m), (0, 0, 0))
        if not kept:
            print("VACUUM removed %d dead rows in %.2f s" % (removed, seconds))
            return seconds
        print("VACUUM attempt %d: %d dead rows not yet removable (another session holds an "
              "older snapshot); waiting" % (attempt, kept))
        time.sleep(2)
    print("WARNING: VACUUM could not remove all %d dead rows; its time is not comparable"
          % dead)
    return seconds


def mb(n):
    return "%.0f MB" % (n / 1e6)


def tenant_url(url, schema):
    return url + ("&" if "?" in url else "?") + "schema=" + schema


# -- PostgreSQL: drop vs delete --------------------------------------------------------------
def pg_drop_vs_delete(db, servers, types, n, report):
    keep = n // 10
    ensure_months(db, "metrics", [MARCH, APRIL, JUNE])
    db.execute_sql("CREATE TABLE metrics_flat (LIKE metrics INCLUDING ALL)")
    t0 = time.perf_counter()
    loaded = pg_copy(db, ["metrics_p2026_03", "metrics_flat"],
                     rows(MARCH, APRIL, n, servers, types))
    loaded_keep = pg_copy(db, ["metrics_p2026_06", "metrics_flat"],
                          rows(JUNE, JUNE + timedelta(days=14), keep, servers, types))
    db.execute_sql("VACUUM ANALYZE metrics_flat")
    db.execute_sql("VACUUM ANALYZE metrics")
    print("loaded %d + %d rows into both layouts in %.1f s" % (loaded, loaded_keep,
                                                              time.perf_counter() - t0))
    flat_before = scalar(db, "SELECT pg_total_relation_size('metrics_flat')")
    part_before = dialect_for(db).table_bytes(db, "metrics")

    checkpoint(db)
    t0 = time.perf_counter()
    assert drop_partition(db, dialect_for(db), "metrics", "metrics_p2026_03")
    drop_s = time.perf_counter() - t0
    assert scalar(db, "SELECT count(*) FROM metrics") == loaded_keep
    part_after = dialect_for(db).table_bytes(db, "metrics")

    checkpoint(db)
    t0 = time.perf_counter()
    with db.atomic():
        deleted = db.execute_sql("DELETE FROM metrics_flat WHERE collected_at >= %s "
                                 "AND collected_at < %s", (MARCH, APRIL)).rowcount
    delete_s = time.perf_counter() - t0
    vacuum_s = vacuum(db, "metrics_flat", deleted)
    assert deleted == loaded and scalar(db, "SELECT count(*) FROM metrics_flat") == loaded_keep
    flat_after = scalar(db, "SELECT pg_total_relation_size('metrics_flat')")

    report.append(("PostgreSQL: DETACH + DROP partition (drop_partition)", loaded, drop_s))
    report.append(("PostgreSQL: DELETE, unpartitioned table", deleted, delete_s))
    report.append(("PostgreSQL: VACUUM after that DELETE", deleted, vacuum_s))
    report.append(("PostgreSQL: DELETE + VACUUM", deleted, delete_s + vacuum_s))
    print("disk: partitioned %s -> %s; unpartitioned %s -> %s after DELETE + VACUUM "
          "(space kept for reuse, not returned)" % (mb(part_before), mb(part_after),
                                                    mb(flat_before), mb(flat_after)))
    db.execute_sql("DROP TABLE metrics_flat")


# -- SQLite: delete_expired --------------------------------------------------------------------
def sqlite_delete(n, report):
    folder = tempfile.mkdtemp(prefix="msbench_retention_")
    try:
        db = metricstore.connect("sqlite:///" + os.path.join(folder, "tenant.db"))
        db.connect()
        metricstore.provision(db, now=NOW)
        Server.insert_many([dict(name="srv-%02d" % i, created_at=NOW)
                            for i in range(SERVERS)]).execute(db)
        servers = [s.id for s in Server.select().order_by(Server.id).bind(db)]
        types = [m.id for m in MetricType.select().order_by(MetricType.id).bind(db)]
        conn = db.connection()
        conn.execute("PRAGMA cache_size = -262144")    # 256 MB while loading only
        t0 = time.perf_counter()
        loaded = 0
        insert = "INSERT INTO metrics %s VALUES (?, ?, ?, ?)" % COLUMNS
        for start, end, count in ((MARCH, APRIL, n),
                                  (JUNE, JUNE + timedelta(days=14), n // 10)):
            for batch in batches(rows(start, end, count, servers, types), COPY_BATCH):
                micros = {}
                with db.atomic():
                    conn.executemany(insert, [
                        (s, m, v, micros.get(t) or micros.setdefault(t, to_micros(t)))
                        for s, m, v, t in batch])
                loaded += len(batch)
        print("loaded %d rows into SQLite in %.1f s" % (loaded, time.perf_counter() - t0))
        conn.execute("PRAGMA cache_size = -2000")      # back to SQLite's default for timing
        t0 = time.perf_counter()
        deleted = delete_expired(db, APRIL)
        delete_s = time.perf_counter() - t0
        assert deleted["metrics"] == n
        assert scalar(db, "SELECT count(*) FROM metrics") == n // 10
        report.append(("SQLite: retention.delete_expired (batched DELETE)", n, delete_s))
        db.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# -- PostgreSQL: ingest stall while maintenance runs --------------------------------------------
class Writer(threading.Thread):
    """Inserts 100-row batches into the current month every ~10 ms; records latencies."""

    def __init__(self, url, server_id, metric_type_id):
        super().__init__(daemon=True)
        self.url, self.server_id, self.metric_type_id = url, server_id, metric_type_id
        self.latencies = []        # (started at, seconds)
        self.stop = threading.Event()
        self.error = None

    def run(self):
        try:
            db = metricstore.connect(self.url)
            db.connect()
            t = NOW
            while not self.stop.is_set():
                batch = []
                for _ in range(100):
                    t += timedelta(milliseconds=7)
                    batch.append(dict(server=self.server_id, metric_type=self.metric_type_id,
                                      value=1.0, collected_at=t))
                start = time.perf_counter()
                ensure_months(db, "metrics", [batch[0]["collected_at"], t])
                Metric.insert_many(batch).execute(db)
                self.latencies.append((start, time.perf_counter() - start))
                time.sleep(0.010)
            db.close()
        except Exception as exc:    # reported by the main thread
            self.error = exc


def stats(latencies):
    values = sorted(s for _, s in latencies)
    if not values:
        return "no batches"
    p99 = values[min(len(values) - 1, int(len(values) * 0.99))]
    return "%4d batches, median %6.1f ms, p99 %6.1f ms, max %6.1f ms" % (
        len(values), statistics.median(values) * 1e3, p99 * 1e3, values[-1] * 1e3)


def pg_stall(db, url, servers, types, n, report):
    april_rows = pg_copy(db, ["metrics_p2026_04"], rows(APRIL, MAY, n // 4, servers, types))
    may_rows = pg_copy(db, ["metrics"], rows(MAY + timedelta(days=9), JUNE, n // 10,
                                              servers, types))          # -> default
    db.execute_sql("VACUUM ANALYZE metrics")
    assert scalar(db, "SELECT count(*) FROM metrics_default") == may_rows
    writer_server = Server.insert(name="writer", created_at=NOW).execute(db)
    print("stall setup: %d rows in April (expired), %d rows of May waiting in default"
          % (april_rows, may_rows))

    writer = Writer(url, writer_server, types[0])
    writer.start()
    time.sleep(2.0)
    t0 = time.perf_counter()
    result = metricstore.maintain(db, now=NOW)
    t1 = time.perf_counter()
    time.sleep(1.0)
    writer.stop.set()
    writer.join(30)
    if writer.error:
        raise writer.error
    print(result)
    before = [x for x in writer.latencies if x[0] < t0]
    during = [x for x in writer.latencies if t0 <= x[0] < t1]
    after = [x for x in writer.latencies if x[0] >= t1]
    print("maintenance took %.2f s: created %d, moved %d, dropped %d, deleted %d rows"
          % (t1 - t0, len(result.created), result.moved, len(result.dropped),
             sum(result.deleted.values())))
    for label, part in (("before", before), ("during", during), ("after", after),
                        ("all", writer.latencies)):
        print("  writer %-6s %s" % (label, stats(part)))
    assert scalar(db, "SELECT count(*) FROM metrics_default") == 0
    report.append(("PostgreSQL: one maintain() (stall run)", may_rows + april_rows, t1 - t0))
    return writer.latencies, (t0, t1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=2_000_000,
                        help="rows in the expired month (default 2,000,000)")
    parser.add_argument("--url", default=os.environ.get("DATABASE_URL")
                        or "postgresql://root@127.0.0.1:5432/test",
                        help="PostgreSQL URL (default DATABASE_URL or the local test db)")
    parser.add_argument("--no-sqlite", action="store_true", help="skip the SQLite run")
    args = parser.parse_args(argv)
    if not args.url.startswith(("postgres://", "postgresql://")):
        parser.error("--url / DATABASE_URL must be a postgresql:// URL, got %r" % args.url)

    started = time.perf_counter()
    schema = "bench_retention_" + uuid.uuid4().hex[:8]
    url = tenant_url(args.url, schema)
    db = metricstore.connect(url)
    db.connect()
    report = []
    try:
        print("PostgreSQL %s, schema %s, NOW %s, retention 30 days" % (
            scalar(db, "SHOW server_version"), schema, NOW.isoformat()))
        metricstore.provision(db, now=datetime(2026, 1, 10, tzinfo=UTC))   # Jan..Apr
        Server.insert_many([dict(name="srv-%02d" % i, created_at=NOW)
                            for i in range(SERVERS)]).execute(db)
        servers = [s.id for s in Server.select().order_by(Server.id).bind(db)]
        types = [m.id for m in MetricType.select().order_by(MetricType.id).bind(db)]
        pg_drop_vs_delete(db, servers, types, args.rows, report)
        latencies, window = pg_stall(db, url, servers, types, args.rows, report)
    finally:
        db.close()
        admin = metricstore.connect(args.url)
        admin.connect()
        admin.execute_sql('DROP SCHEMA IF EXISTS "%s" CASCADE' % schema)
        admin.close()
    if not args.no_sqlite:
        print("SQLite %s" % sqlite3.sqlite_version)
        sqlite_delete(args.rows, report)

    base = report[0][2]
    print()
    print("| method | rows | seconds | ratio to DETACH+DROP |")
    print("|---|---:|---:|---:|")
    for method, n, seconds in report:
        print("| %s | %s | %.3f | %.1f |" % (method, format(n, ","), seconds, seconds / base))
    during = [s for t, s in latencies if window[0] <= t < window[1]]
    print()
    print("ingest stall: max batch latency during maintenance %.1f ms vs median %.1f ms "
          "(all batches)" % (max(during, default=0) * 1e3,
                             statistics.median(s for _, s in latencies) * 1e3))
    print("total %.0f s" % (time.perf_counter() - started))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
