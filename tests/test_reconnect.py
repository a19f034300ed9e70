"""Connections heal: a server restart, a terminated backend and a crashed
postmaster, done for real on a throwaway cluster (never the shared server).

The collector is the caller's plain loop: send a batch, and on a metricstore
connection error send the same batch again. Nothing may be lost or stored
twice, and writes must work again soon after the server accepts connections.
"""

import threading
import time
import uuid
from datetime import timedelta

import psycopg2
import pytest

import metricstore
from metricstore.errors import ConnectError, ConnectionLostError
from metricstore.timeutil import utcnow
from pgcluster import PORT_BASE, ThrowawayCluster, unavailable

pytestmark = [pytest.mark.postgres, pytest.mark.slow]
PORT = PORT_BASE
RECOVERY_BOUND_S = 5.0       # generous for a shared machine; docs/reliability.md has the figures


@pytest.fixture(scope="module")
def cluster():
    problem = unavailable()
    if problem:
        pytest.skip(problem)
    c = ThrowawayCluster("mst_reconnect_%d" % PORT, PORT).create()
    yield c
    c.drop()


@pytest.fixture
def tenant(cluster):
    if not cluster.accepting():
        cluster.start()
    url = cluster.url + "?schema=t_" + uuid.uuid4().hex[:8] + "&connect_timeout=2"
    db = metricstore.connect(url)
    metricstore.provision(db)
    yield db
    if not db.in_transaction():
        db.close()


def _count(cluster, db, sid):
    with psycopg2.connect(cluster.dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*), count(DISTINCT collected_at) FROM %s.metrics "
                    "WHERE server_id = %%s" % db.schema, (sid,))
        return cur.fetchone()


class Collector(threading.Thread):
    """Writes a 200-row batch every 20 ms; a failed batch is re-sent as is."""

    def __init__(self, repo, sid, base):
        super().__init__(daemon=True)
        self.repo, self.sid, self.base = repo, sid, base
        self.stop = threading.Event()
        self.sent, self.inserted, self.duplicates = set(), 0, 0
        self.failures, self.successes = [], []
        self.unexpected = None

    def run(self):
        n = 0
        try:
            while not self.stop.is_set():
                batch = [(self.sid, "cpu_percent", float(i % 100),
                          self.base + timedelta(milliseconds=i)) for i in range(n, n + 200)]
                n += 200
                while True:
                    try:
                        result = self.repo.record_many(batch)
                    except (ConnectionLostError, ConnectError) as exc:
                        self.failures.append((time.monotonic(), exc))
                        time.sleep(0.02)
                        continue
                    self.inserted += result.inserted
                    self.duplicates += result.duplicates
                    self.successes.append(time.monotonic())
                    self.sent.update(row[3] for row in batch)
                    break
                time.sleep(0.02)
        except Exception as exc:       # anything else fails the test
            self.unexpected = exc


def _fault(cluster, kind, collector):
    """Do the fault; return when the server accepts connections again."""
    if kind == "restart":
        return cluster.restart()
    if kind == "terminate":
        # A session terminated between two batches is replaced before the
        # next one is sent (nothing to report), so terminate until one
        # lands mid-batch, as a restart or kill -9 always does (<= 5 s).
        deadline = time.monotonic() + 5
        while True:
            assert cluster.terminate_backends() >= 1
            if collector.failures or time.monotonic() > deadline:
                return time.monotonic()
            time.sleep(0.1)
    cluster.kill9()
    return cluster.start()


@pytest.mark.parametrize("kind", ["restart", "terminate", "kill9"])
def test_collector_retrying_its_batch_loses_nothing_and_stores_nothing_twice(
        cluster, tenant, kind):
    repo = metricstore.MetricRepository(tenant)
    sid = repo.add_server("sql-01")
    collector = Collector(repo, sid, utcnow() - timedelta(hours=1))
    collector.start()
    time.sleep(0.5)
    ready_at = _fault(cluster, kind, collector)
    time.sleep(1.5)
    collector.stop.set()
    collector.join(30)
    assert not collector.is_alive() and collector.unexpected is None
    assert collector.failures, "the fault never reached the collector"
    for _, exc in collector.failures:
        assert "sql" not in type(exc).__module__          # metricstore's own, chained
        assert exc.__cause__ is not None
        if isinstance(exc, ConnectionLostError):
            assert exc.retry_safe and exc.written in (False, None)
    after = [t for t in collector.successes if t >= ready_at]
    assert after, "no write succeeded after the server came back"
    assert after[0] - ready_at < RECOVERY_BOUND_S
    rows, distinct = _count(cluster, tenant, sid)
    assert rows == distinct == len(collector.sent)        # 0 lost, 0 duplicated
    assert collector.inserted == rows                     # each row inserted exactly once


def test_a_read_after_a_restart_succeeds_first_time(cluster, tenant):
    """The web app's case: an idle connection is checked (or the read retried)."""
    repo = metricstore.MetricRepository(tenant)
    sid = repo.add_server("sql-01")
    repo.record(sid, utcnow() - timedelta(minutes=1), {"cpu_percent": 12.5})
    cluster.restart()
    assert [x.value for x in repo.latest("cpu_percent")] == [12.5]
    cluster.terminate_backends()
    assert [s.name for s in repo.servers()] == ["sql-01"]


def test_a_lost_connection_inside_the_callers_transaction_is_raised_not_retried(
        cluster, tenant):
    repo = metricstore.MetricRepository(tenant)
    sid = repo.add_server("sql-01")
    t = utcnow() - timedelta(minutes=1)
    with pytest.raises(ConnectionLostError) as err:
        with tenant.atomic():
            repo.record(sid, t, {"memory_percent": 50.0})
            cluster.terminate_backends()
            repo.record(sid, t, {"cpu_percent": 50.0})
    assert err.value.written is False and "nothing of it was committed" in str(err.value)
    assert tenant.url in str(err.value)
    assert isinstance(err.value.__cause__, psycopg2.Error)
    # The whole transaction is gone, and the next call works on a new connection.
    assert repo.latest("memory_percent") == []
    assert repo.record(sid, t, {"cpu_percent": 50.0}).inserted == 1


def test_maintain_status_and_the_cli_work_across_a_restart(cluster, tenant):
    from metricstore.cli import main
    metricstore.maintain(tenant)
    cluster.restart()
    assert metricstore.maintain(tenant).run_id
    cluster.terminate_backends()
    from metricstore.status import status
    assert status(tenant).last_run is not None
    cluster.restart()
    assert main(["status", "--url", tenant.url]) in (0, 1)   # 1 = attention, not a crash


def test_a_stopped_server_is_a_connect_error_naming_the_url(cluster, tenant, capsys):
    from metricstore.cli import main
    repo = metricstore.MetricRepository(tenant)
    repo.add_server("sql-01")
    cluster.stop()
    try:
        with pytest.raises((ConnectError, ConnectionLostError)):
            repo.servers()
        with pytest.raises(ConnectError) as err:
            repo.servers()
        assert "127.0.0.1:%d" % PORT in str(err.value)
        assert main(["status", "--url", tenant.url]) == 1
        out = capsys.readouterr().err
        assert out.startswith("error: ") and "Traceback" not in out
        assert len(out.strip().splitlines()) == 1
    finally:
        cluster.start()
    assert [s.name for s in repo.servers()] == ["sql-01"]


def test_cli_ingest_killed_mid_copy_exits_1_with_one_line_and_a_rerun_completes(
        cluster, tenant, tmp_path):
    import subprocess
    import sys
    repo = metricstore.MetricRepository(tenant)
    sid = repo.add_server("sql-01")
    base = utcnow() - timedelta(days=2)
    path = tmp_path / "samples.csv"
    n = 300_000
    with open(path, "w") as f:
        f.write("server_id,metric,value,collected_at\n")
        for i in range(n):
            f.write("%d,cpu_percent,%d,%s\n" % (sid, i % 100,
                                                (base + timedelta(milliseconds=i)).isoformat()))
    command = [sys.executable, "-c", "from metricstore.cli import entry_point; entry_point()",
               "ingest", str(path), "--url", tenant.url]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 120
    time.sleep(0.3)
    while proc.poll() is None and time.monotonic() < deadline:
        cluster.terminate_backends()               # again and again, until it gives up
        time.sleep(0.2)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1, (out, err)
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "connection to the server was lost" in lines[0]
    assert "Traceback" not in err and "SystemError" not in err
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows, distinct = _count(cluster, tenant, sid)
    assert rows == distinct == n
