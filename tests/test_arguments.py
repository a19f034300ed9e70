"""Argument types are checked the same way on both engines (issue 8, item 6).

A wrong type or an out-of-range argument is a metricstore error naming the
argument, raised before any SQL runs: never a driver error on one engine
and a silent empty answer on the other (``latest(server_ids=['1'])`` was
both). Run under each engine with ``DATABASE_URL``.
"""

from datetime import datetime, timedelta, timezone

import pytest

from metricstore import MetricRepository, QueryError, UnknownServerError

UTC = timezone.utc
END = datetime.now(UTC).replace(microsecond=0)
START = END - timedelta(hours=1)


@pytest.fixture
def repo(db):
    repo = MetricRepository(db)
    repo.sid = repo.add_server("a")
    repo.record(repo.sid, START, {"cpu_percent": 1.0, "disk_io_reads": 5})
    return repo


BAD_CALLS = [
    ("server_ids", lambda r: r.latest("cpu_percent", server_ids=["1"])),
    ("server_ids", lambda r: r.latest("cpu_percent", server_ids="1")),
    ("server_ids", lambda r: r.latest("cpu_percent", server_ids=5)),
    ("server_ids", lambda r: r.latest("cpu_percent", server_ids=[1.5])),
    ("server_ids", lambda r: r.latest_snapshots(server_ids=[None])),
    ("metric", lambda r: r.latest(["cpu_percent"])),
    ("metric", lambda r: r.series(r.sid, 7, START, END)),
    ("stats", lambda r: r.buckets(r.sid, "cpu_percent", START, END, 60, stats=5)),
    ("tolerance", lambda r: r.gaps(r.sid, "cpu_percent", START, END, 15, tolerance="2")),
    ("tolerance", lambda r: r.gaps(r.sid, "cpu_percent", START, END, 15, tolerance=0.5)),
    ("every", lambda r: r.buckets(r.sid, "cpu_percent", START, END, timedelta.max)),
    ("max_gap", lambda r: r.rate(r.sid, "disk_io_reads", START, END, 60,
                                 max_gap=timedelta(days=10 ** 6))),
    ("n", lambda r: r.top("cpu_percent", START, END, n=2 ** 70)),
    ("n", lambda r: r.top("cpu_percent", START, END, n="3")),
    ("values", lambda r: r.record(r.sid, END, [("cpu_percent", 1.0)])),
    ("rows", lambda r: r.record_many(None)),
    ("rows", lambda r: r.record_snapshots(42)),
]


@pytest.mark.parametrize("name,call", BAD_CALLS,
                         ids=["%s-%d" % (c[0], i) for i, c in enumerate(BAD_CALLS)])
def test_a_bad_argument_is_a_query_error_naming_it(repo, name, call):
    with pytest.raises(QueryError) as caught:
        call(repo)
    assert name in str(caught.value)


def test_good_server_ids_filter_the_same_way(repo):
    other = repo.add_server("b")
    repo.record(other, START, {"cpu_percent": 2.0})
    assert [r.server_id for r in repo.latest("cpu_percent", server_ids=[other])] == [other]
    assert [r.server_id for r in repo.latest("cpu_percent", server_ids=(repo.sid, other))] \
        == sorted([repo.sid, other])
    assert repo.latest("cpu_percent", server_ids=[]) == []
    assert repo.latest("cpu_percent", server_ids=[2 ** 40]) == []     # no such server


@pytest.mark.parametrize("server_id", [2 ** 31, 2 ** 70, -1, 0, "1", 1.0, None])
def test_an_impossible_server_id_is_unknown_on_every_engine(repo, server_id):
    with pytest.raises(UnknownServerError):
        repo.series(server_id, "cpu_percent", START, END)
