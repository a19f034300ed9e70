"""Pooled URLs (``postgresql+pool://``, ``sqlite+pool://``): one database per
process, shared by threads; each request returns its connection."""

import threading
from datetime import timedelta

import pytest

import metricstore
from metricstore import ConfigurationError, connect
from metricstore.errors import ConnectError
from metricstore.timeutil import utcnow


def _pooled(url, **options):
    scheme, rest = url.split("://", 1)
    sep = "&" if "?" in rest else "?"
    query = "&".join("%s=%s" % kv for kv in options.items())
    return "%s+pool://%s%s" % (scheme, rest, (sep + query) if query else "")


def test_pool_options_are_checked():
    with pytest.raises(ConfigurationError) as err:
        connect("postgresql+pool://root@127.0.0.1/test?max_connections=0")
    assert "max_connections" in str(err.value)
    with pytest.raises(ConfigurationError):
        connect("postgresql://root@127.0.0.1/test?max_connections=4")     # not pooled
    with pytest.raises(ConfigurationError):
        connect("postgresql+cluster://root@127.0.0.1/test")
    db = connect("postgresql+pool://root@127.0.0.1/test?max_connections=4&stale_timeout=60")
    assert db._max_connections == 4 and db._stale_timeout == 60


def test_threads_share_one_pooled_database(tenant_url):
    metricstore.provision(connect(tenant_url))
    db = connect(_pooled(tenant_url, max_connections=4))
    repo = metricstore.MetricRepository(db)
    sid = repo.add_server("sql-01")
    db.close()
    base = utcnow() - timedelta(hours=1)
    errors, stored = [], []

    def request(k):
        try:
            with db.connection_context():          # a request: check out, use, return
                rows = [(sid, "cpu_percent", float(k), base + timedelta(seconds=k * 100 + i))
                        for i in range(50)]
                stored.append(repo.record_many(rows).inserted)
                repo.latest("cpu_percent")
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=request, args=(k,)) for k in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and sum(stored) == 24 * 50
    assert len(db._in_use) == 0                    # every connection went back
    assert 1 <= len(db._connections) <= 4
    check = connect(tenant_url)
    assert check.execute_sql("SELECT count(*) FROM metrics").fetchone()[0] == 24 * 50


def test_an_exhausted_pool_fails_clearly_after_pool_timeout(tenant_url):
    metricstore.provision(connect(tenant_url))
    db = connect(_pooled(tenant_url, max_connections=1, pool_timeout=0.3))
    db.connect()                                    # this thread holds the only one
    failure = []

    def other():
        try:
            metricstore.MetricRepository(db).servers()
        except Exception as exc:
            failure.append(exc)

    t = threading.Thread(target=other)
    t.start()
    t.join(30)
    db.close()
    (exc,) = failure
    assert isinstance(exc, ConnectError)
    assert "max_connections" in str(exc) and "db.close()" in str(exc)
