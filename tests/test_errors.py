"""The fault catalogue: each failure of the environment, done for real, is a
narrow metricstore error that names the input and the fix, with the
driver's error chained; the CLI prints one line and exits 1 (2 for the
caller's own mistakes), never a traceback.
"""

import os
import socket
import sqlite3
import subprocess
import threading
import time
import uuid
from datetime import timedelta

import psycopg2
import pytest

import metricstore
from metricstore import errors as E
from metricstore.cli import main
from metricstore.status import status
from metricstore.timeutil import utcnow
from conftest import BACKEND, URL
from pgcluster import ThrowawayCluster, unavailable


def _chained(exc):
    """The driver's exception is the cause, and the message is metricstore's."""
    assert isinstance(exc.__cause__, (sqlite3.Error, psycopg2.Error)), exc.__cause__
    assert "Traceback" not in str(exc)
    return str(exc)


def _cli(args, capsys):
    code = main(args)
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("error: ")
    return code, err


def _tiny_fs(mount, options="size=3m"):
    """Mount a real small file system (tmpfs) at ``mount``, or skip."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mount.mkdir(exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode:
        pytest.skip("cannot mount a tmpfs here: %s" % done.stderr.strip())
    return mount


def _fill(db, limit=2_000_000):
    """Ingest 20,000-row batches until the disk is full; the DiskFullError
    carries ``stored``, the rows of the batches that succeeded."""
    repo = metricstore.MetricRepository(db)
    sid = repo.add_server("sql-01")
    start = utcnow() - timedelta(days=20)
    stored, n = 0, 0
    try:
        while n < limit:                      # 3 MB hold far fewer rows than this
            batch = [(sid, "cpu_percent", float(i % 100), start + timedelta(seconds=i))
                     for i in range(n, n + 20_000)]
            stored += repo.record_many(batch).inserted
            n += 20_000
    except E.DiskFullError as exc:
        exc.stored = stored
        raise
    return stored


@pytest.fixture
def tiny_fs(tmp_path):
    """A 3 MB file system that a test can fill or make read-only."""
    yield _tiny_fs(tmp_path / "fs")
    subprocess.run(["umount", "-l", str(tmp_path / "fs")], check=False)


# -- both engines -----------------------------------------------------------------

@pytest.mark.parametrize("call", ["metric_rules", "servers", "record_many", "status",
                                  "maintain"])
def test_an_unprovisioned_tenant_is_a_schema_error_naming_the_fix(raw_db, call):
    repo = metricstore.MetricRepository(raw_db)
    calls = {"metric_rules": repo.metric_rules, "servers": repo.servers,
             "record_many": lambda: repo.record_many([]), "status": lambda: status(raw_db),
             "maintain": lambda: metricstore.maintain(raw_db)}
    with pytest.raises(E.SchemaError) as err:
        calls[call]()
    assert "metricstore init" in str(err.value)
    assert raw_db.url in str(err.value) or "provision" in str(err.value)


def test_the_cli_on_an_unprovisioned_tenant_exits_2(tenant_url, capsys):
    code, err = _cli(["query", "latest", "cpu_percent", "--url", tenant_url], capsys)
    assert code == 2 and "metricstore init" in err


def test_a_statement_or_lock_held_too_long_is_a_timeout_error(tenant_url, backend):
    sep = "&" if "?" in tenant_url else "?"
    option = "busy_timeout=0.2" if backend == "sqlite" else "statement_timeout=0.3"
    db = metricstore.connect(tenant_url + sep + option)
    metricstore.provision(db)
    repo = metricstore.MetricRepository(db)
    sid = repo.add_server("sql-01")
    holder = metricstore.connect(tenant_url)
    holder.connect()
    if backend == "sqlite":
        holder.execute_sql("BEGIN IMMEDIATE")
        expected = E.LockTimeoutError
    else:
        holder.execute_sql("BEGIN")
        holder.execute_sql("LOCK TABLE metric_types IN ACCESS EXCLUSIVE MODE")
        expected = E.StatementTimeoutError
    try:
        started = time.monotonic()
        with pytest.raises(expected) as err:
            repo.record(sid, utcnow() - timedelta(seconds=5), {"cpu_percent": 1.0})
        assert time.monotonic() - started < 10
        assert option.split("=")[0] in _chained(err.value)
    finally:
        holder.execute_sql("ROLLBACK")
        holder.close()
    assert repo.record(sid, utcnow() - timedelta(seconds=5), {"cpu_percent": 1.0}).inserted == 1


# -- SQLite ------------------------------------------------------------------------

@pytest.mark.sqlite_only
def test_a_read_only_sqlite_file_is_read_only_not_unprovisioned(tiny_fs, capsys):
    url = "sqlite:///%s/tenant.db" % tiny_fs
    metricstore.provision(metricstore.connect(url))
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_fs)], check=True)
    db = metricstore.connect(url)
    with pytest.raises(E.ReadOnlyError) as err:
        metricstore.MetricRepository(db).servers()
    message = _chained(err.value)
    assert "tenant.db" in message and "writable" in message
    code, line = _cli(["status", "--url", url], capsys)
    assert code == 1 and "read-only" in line


@pytest.mark.sqlite_only
def test_a_full_disk_is_disk_full_and_keeps_what_was_stored(tiny_fs, capsys):
    url = "sqlite:///%s/tenant.db" % tiny_fs
    db = metricstore.connect(url)
    metricstore.provision(db)
    with pytest.raises(E.DiskFullError) as err:
        stored = _fill(db)
    stored = err.value.stored
    message = _chained(err.value)
    assert "disk" in message and "full" in message and "cannot rollback" not in message
    db.close()
    # Every row of the batches that succeeded is there, none of the failed one.
    check = metricstore.connect(url)
    assert check.execute_sql("SELECT count(*) FROM metrics").fetchone()[0] == stored


@pytest.mark.sqlite_only
def test_a_file_that_is_not_a_database_or_a_folder(tmp_path, capsys):
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not an SQLite file at all" * 100)
    with pytest.raises(E.DatabaseError) as err:
        metricstore.MetricRepository(metricstore.connect("sqlite:///%s" % junk)).servers()
    assert "not an SQLite database" in _chained(err.value)
    folder = tmp_path / "a_folder.db"
    folder.mkdir()
    with pytest.raises(E.DatabaseMissingError) as err:
        metricstore.connect("sqlite:///%s" % folder).connect()
    assert "a_folder.db" in _chained(err.value)
    code, line = _cli(["status", "--url", "sqlite:///%s" % junk], capsys)
    assert code == 1


# -- PostgreSQL ------------------------------------------------------------------

def _pg(url):
    return url.split("?")[0]


@pytest.mark.postgres
def test_an_unknown_user_is_an_authentication_error(capsys):
    url = _pg(URL).replace("//root@", "//no_such_role_%s@" % uuid.uuid4().hex[:6])
    with pytest.raises(E.AuthenticationError) as err:
        metricstore.connect(url).connect()
    assert "no_such_role" in _chained(err.value) and "user" in str(err.value)
    code, _ = _cli(["status", "--url", url], capsys)
    assert code == 1


@pytest.mark.postgres
def test_a_missing_database_is_named(capsys):
    url = _pg(URL).rsplit("/", 1)[0] + "/no_such_db_%s" % uuid.uuid4().hex[:6]
    with pytest.raises(E.DatabaseMissingError) as err:
        metricstore.MetricRepository(metricstore.connect(url)).servers()
    assert "no_such_db_" in _chained(err.value) and "createdb" in str(err.value)


@pytest.mark.postgres
def test_a_port_nobody_listens_on_is_a_connect_error(capsys):
    with socket.socket() as s:                  # a free loopback port, then closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = "postgresql://root@127.0.0.1:%d/test" % port
    with pytest.raises(E.ConnectError) as err:
        metricstore.connect(url).connect()
    assert "127.0.0.1:%d" % port in _chained(err.value)
    code, line = _cli(["init", url], capsys)
    assert code == 1 and "%d" % port in line


@pytest.mark.postgres
def test_a_host_that_never_answers_fails_within_connect_timeout():
    """It accepts TCP and then says nothing (a hung server, a black-holing proxy)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    held = []
    stop = threading.Event()

    def accept():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])      # keep it open, never reply
            except socket.timeout:
                pass
    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        url = "postgresql://root@127.0.0.1:%d/test?connect_timeout=2" % port
        started = time.monotonic()
        with pytest.raises(E.ConnectError) as err:
            metricstore.connect(url).connect()
        elapsed = time.monotonic() - started
        assert 1.5 <= elapsed < 8, elapsed
        message = _chained(err.value)
        assert "127.0.0.1:%d" % port in message and "connect_timeout" in message
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        listener.close()


@pytest.mark.postgres
def test_a_read_only_server_is_a_read_only_error(db):
    role = "mst_ro_" + uuid.uuid4().hex[:8]
    db.execute_sql("CREATE ROLE %s LOGIN" % role)
    try:
        db.execute_sql("ALTER ROLE %s SET default_transaction_read_only = on" % role)
        db.execute_sql("GRANT USAGE, CREATE ON SCHEMA %s TO %s" % (db.schema, role))
        db.execute_sql("GRANT ALL ON ALL TABLES IN SCHEMA %s TO %s" % (db.schema, role))
        url = db.url.replace("//root@", "//%s@" % role)
        ro = metricstore.connect(url)
        with pytest.raises(E.ReadOnlyError) as err:
            metricstore.MetricRepository(ro).add_server("sql-01")
        assert "primary" in _chained(err.value)
        ro.close()
    finally:
        db.execute_sql("DROP OWNED BY %s" % role)
        db.execute_sql("DROP ROLE %s" % role)


@pytest.fixture
def small_disk_cluster():
    """A throwaway cluster whose database lives on a 4 MB tablespace (room for
    a provisioned tenant: raw tables and the rollup tiers' partitions)."""
    problem = unavailable()
    if problem:
        pytest.skip(problem)
    import pathlib
    import tempfile
    folder = pathlib.Path(tempfile.mkdtemp(prefix="mst_tiny_"))
    os.chmod(folder, 0o755)                  # the postgres user must reach the mount
    tiny_fs = _tiny_fs(folder / "fs", "size=4m,uid=postgres,gid=postgres,mode=0700")
    cluster = ThrowawayCluster("mst_diskfull", 55433).create()
    try:
        conn = psycopg2.connect(cluster.dsn)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("CREATE TABLESPACE tiny LOCATION %s", (str(tiny_fs),))
            cur.execute("CREATE DATABASE small TABLESPACE tiny")
        conn.close()
        yield cluster
    finally:
        cluster.drop()
        subprocess.run(["umount", "-l", str(tiny_fs)], check=False)
        subprocess.run(["rm", "-rf", str(folder)], check=False)


@pytest.mark.postgres
@pytest.mark.slow
def test_a_full_server_disk_is_disk_full(small_disk_cluster, capsys):
    url = small_disk_cluster.url.rsplit("/", 1)[0] + "/small"
    db = metricstore.connect(url)
    metricstore.provision(db)
    with pytest.raises(E.DiskFullError) as err:
        _fill(db)
    stored = err.value.stored
    assert "disk" in _chained(err.value)
    assert db.execute_sql("SELECT count(*) FROM metrics").fetchone()[0] == stored
    db.close()
