"""One suite, two engines: ``DATABASE_URL`` picks the backend.

- unset or ``sqlite://...``: every test gets a fresh SQLite file in tmp_path.
- ``postgresql://...``: every test gets a fresh schema (``?schema=...``) in
  that database, dropped afterwards.
- ``METRICSTORE_CITUS_URL`` (a Citus coordinator, e.g.
  ``postgresql://root@127.0.0.1:9700/test``) enables the Citus tests
  (``citus_url`` fixture); without it they skip with the reason. If the server cannot be reached the
  PostgreSQL tests skip with the reason, except under ``CI=true``, where
  that is a failure.
- ``METRICSTORE_TEST_DISTRIBUTE=N`` (with ``DATABASE_URL`` naming a Citus
  coordinator): the ``db`` fixture shards each tenant by server
  (``metricstore.distribute``, N shards) instead of only provisioning it, so
  any test module runs on a row-sharded tenant; without it a tenant schema
  on Citus is a distributed schema (schema-based sharding).
"""

import os
import uuid

import pytest

import metricstore
from metricstore.connection import connect

URL = os.environ.get("DATABASE_URL") or ""
BACKEND = "postgresql" if URL.startswith(("postgres://", "postgresql://")) else "sqlite"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

_pg_problem = None


def _check_pg():
    global _pg_problem
    if BACKEND != "postgresql" or _pg_problem is not None:
        return _pg_problem
    try:
        db = connect(URL)
        db.connect()
        db.execute_sql("SELECT 1")
        db.close()
        _pg_problem = ""
    except Exception as exc:  # any failure to reach the server
        _pg_problem = "PostgreSQL at DATABASE_URL is unreachable: %s" % str(exc).strip()
    return _pg_problem


def pytest_report_header(config):
    return "metricstore backend: %s (%s)" % (BACKEND, URL or "default SQLite in tmp_path")


def pytest_sessionstart(session):
    problem = _check_pg()
    if problem and IN_CI:
        raise pytest.UsageError("CI=true and " + problem + " (a missing server is a "
                                "failure under CI, not a skip)")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("postgres") and BACKEND != "postgresql":
            item.add_marker(pytest.mark.skip(
                reason="PostgreSQL-only: run with DATABASE_URL=postgresql://..."))
        if item.get_closest_marker("sqlite_only") and BACKEND != "sqlite":
            item.add_marker(pytest.mark.skip(reason="SQLite-only: run without DATABASE_URL"))


CITUS_URL = os.environ.get("METRICSTORE_CITUS_URL") or ""
DISTRIBUTE = int(os.environ.get("METRICSTORE_TEST_DISTRIBUTE") or 0)


def _schema_url(schema, url=URL):
    sep = "&" if "?" in url else "?"
    return url + sep + "schema=" + schema


@pytest.fixture
def backend():
    return BACKEND


def _fresh_tenant_url(folder):
    """Yield the URL of a fresh, empty tenant; drop it afterwards (PostgreSQL)."""
    if BACKEND == "sqlite":
        yield "sqlite:///" + str(folder / "tenant.db")
        return
    problem = _check_pg()
    if problem:
        pytest.skip(problem)
    schema = "mst_" + uuid.uuid4().hex[:12]
    yield _schema_url(schema)
    admin = connect(URL)
    admin.execute_sql("DROP SCHEMA IF EXISTS %s CASCADE" % schema)
    admin.close()


@pytest.fixture
def tenant_url(tmp_path):
    """URL of a fresh, empty tenant database on the selected backend."""
    yield from _fresh_tenant_url(tmp_path)


@pytest.fixture(scope="module")
def shared_db(tmp_path_factory):
    """A provisioned tenant shared by one module's tests: read it, never write it."""
    urls = _fresh_tenant_url(tmp_path_factory.mktemp("shared"))
    db = connect(next(urls))
    db.connect()
    metricstore.provision(db)
    yield db
    assert_integrity(db)
    db.close()
    next(urls, None)            # drops the PostgreSQL schema


@pytest.fixture
def citus_url():
    """URL of a fresh tenant schema on the Citus coordinator named by
    ``METRICSTORE_CITUS_URL`` (skips without it); dropped afterwards."""
    if not CITUS_URL:
        pytest.skip("Citus tests: set METRICSTORE_CITUS_URL to a Citus coordinator, e.g. "
                    "postgresql://root@127.0.0.1:9700/test")
    schema = "mst_citus_" + uuid.uuid4().hex[:10]
    yield _schema_url(schema, CITUS_URL)
    admin = connect(CITUS_URL)
    admin.execute_sql("DROP SCHEMA IF EXISTS %s CASCADE" % schema)
    admin.close()


@pytest.fixture
def raw_db(tenant_url):
    """An open connection to a fresh tenant that is not provisioned."""
    db = connect(tenant_url)
    db.connect()
    yield db
    if not db.is_closed():
        db.close()


def assert_integrity(db):
    """SQLite: ``PRAGMA integrity_check`` says ``ok`` (PostgreSQL has no such check)."""
    if BACKEND != "sqlite":
        return
    opened = db.connect(reuse_if_open=True)
    try:
        assert db.execute_sql("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        if opened:
            db.close()


@pytest.fixture
def db(raw_db):
    """An open connection to a freshly provisioned tenant; on SQLite its
    integrity is checked when the test is done. Sharded by server on Citus
    under ``METRICSTORE_TEST_DISTRIBUTE``."""
    if DISTRIBUTE:
        metricstore.distribute(raw_db, shard_count=DISTRIBUTE)
    else:
        metricstore.provision(raw_db)
    yield raw_db
    assert_integrity(raw_db)


@pytest.fixture
def spool(tmp_path):
    """An agent's SQLite spool: a provisioned tenant file, open."""
    db = metricstore.connect("sqlite:///" + str(tmp_path / "agent.db"))
    db.connect()
    metricstore.provision(db)
    yield db
    db.close()
