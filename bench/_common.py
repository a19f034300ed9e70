"""Helpers shared by the benchmarks: fresh tenants, raw connections, timing.

Every timed run gets its own tenant (PostgreSQL: a schema ``bench_<hex>``,
dropped afterwards; SQLite: a file in a temporary folder, removed
afterwards), so runs never see each other's rows.
"""

import gc
import os
import shutil
import sqlite3
import statistics
import tempfile
import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from urllib.parse import urlparse

import metricstore
from metricstore.connection import connect

PG_URL = os.environ.get("BENCH_PG_URL", "postgresql://root@127.0.0.1:5432/test")
UTC = timezone.utc
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_US = timedelta(microseconds=1)
STEP = timedelta(seconds=15)


def median(values):
    return statistics.median(values)


def clock():
    return time.perf_counter()


@contextmanager
def timed(out, cpu=False):
    """Append the wall time (s) of the block to list ``out`` (with ``cpu``: the
    pair (wall, this process's CPU time)); GC collected first."""
    gc.collect()
    c0, t0 = time.process_time(), time.perf_counter()
    yield
    wall = time.perf_counter() - t0
    out.append((wall, time.process_time() - c0) if cpu else wall)


class Tenant:
    """A fresh, provisioned tenant on ``engine`` ('postgresql' or 'sqlite')."""

    def __init__(self, engine, servers=0, keep=False, label="bench"):
        self.engine = engine
        self.keep = keep
        if engine == "postgresql":
            self.schema = "%s_%s" % (label, uuid.uuid4().hex[:10])
            self.url = PG_URL + ("&" if "?" in PG_URL else "?") + "schema=" + self.schema
            self.dir = None
        else:
            self.dir = tempfile.mkdtemp(prefix="msbench_", dir=os.environ.get("BENCH_TMP"))
            self.path = os.path.join(self.dir, "tenant.db")
            self.url = "sqlite:///" + self.path
        self.db = connect(self.url)
        self.db.connect()
        metricstore.provision(self.db)
        self.repo = metricstore.MetricRepository(self.db)
        self.server_ids = [self.repo.add_server("srv-%04d" % i) for i in range(servers)]
        self.metric_ids = dict(self.db.execute_sql("SELECT name, id FROM metric_types"))

    def ensure_months(self, first, last):
        """Create the monthly partitions for [first, last] (no-op on SQLite)."""
        from metricstore.partitioning import ensure_months
        from metricstore.timeutil import months_between
        for table in ("metrics", "server_snapshots"):
            ensure_months(self.db, table, months_between(first, last))

    def raw(self):
        """A raw driver connection to the same tenant (psycopg2 / sqlite3)."""
        if self.engine == "postgresql":
            import psycopg2
            p = urlparse(PG_URL)
            conn = psycopg2.connect(
                host=p.hostname, port=p.port or 5432, user=p.username, password=p.password,
                dbname=p.path.lstrip("/"),
                options="-c search_path=%s -c TimeZone=UTC" % self.schema)
            return conn
        conn = sqlite3.connect(self.path, isolation_level=None)
        conn.execute("PRAGMA journal_mode=wal")
        conn.execute("PRAGMA synchronous=normal")
        return conn

    def close(self):
        if not self.db.is_closed():
            self.db.close()
        if self.keep:
            return
        if self.engine == "postgresql":
            admin = connect(PG_URL)
            admin.connect()
            admin.execute_sql("DROP SCHEMA IF EXISTS %s CASCADE" % self.schema)
            admin.close()
        else:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def engines_arg(value):
    names = {"pg": "postgresql", "postgresql": "postgresql", "sqlite": "sqlite"}
    out = []
    for part in value.split(","):
        part = part.strip().lower()
        if part not in names:
            raise SystemExit("unknown engine %r (use pg, sqlite)" % part)
        out.append(names[part])
    return out


def fmt_rate(rows, seconds):
    return "%.0f k" % (rows / seconds / 1000.0)
