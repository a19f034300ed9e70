"""Bounded memory (issue 8, item 6): results and rejections have documented limits.

- ``buckets(fill=True)`` refuses with a QueryError past
  ``MAX_BUCKETS`` (100,000) buckets per call, before it queries anything.
- A batch of bad rows keeps the first ``MAX_ROW_ERRORS`` (1,000) RowErrors
  and counts all of them exactly, with ``on_error='raise'`` and ``'skip'``;
  the peak RSS of a write of 300,000 bad rows grows by a few MB (it grew by
  418 MB for 1 M rows when every rejection was kept).
  ``METRICSTORE_BAD_ROWS=1000000`` runs the full measurement.
"""

import gc
import os
from datetime import datetime, timedelta, timezone

import pytest

from metricstore import MetricRepository, QueryError, ValidationError
from metricstore.repository import MAX_BUCKETS
from metricstore.validation import MAX_ROW_ERRORS

UTC = timezone.utc
BASE = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=2)
BAD_ROWS = int(os.environ.get("METRICSTORE_BAD_ROWS", "300000"))


@pytest.fixture
def repo(db):
    return MetricRepository(db)


def count(db):
    return db.execute_sql("SELECT count(*) FROM metrics").fetchone()[0]


# -- buckets(fill=True) -----------------------------------------------------------------
def test_filled_buckets_past_the_limit_are_refused(repo):
    sid = repo.add_server("a")
    repo.record_many([(sid, "cpu_percent", 1.0, BASE)])
    with pytest.raises(QueryError) as caught:
        repo.buckets(sid, "cpu_percent", BASE, BASE + timedelta(days=1),
                     timedelta(milliseconds=10), fill=True)
    message = str(caught.value)
    assert "8640000 buckets" in message and "100000" in message and "every" in message


def test_filled_buckets_up_to_the_limit_are_returned(repo):
    sid = repo.add_server("a")
    repo.record_many([(sid, "cpu_percent", 7.0, BASE + timedelta(seconds=30))])
    every = timedelta(seconds=1)
    end = BASE + MAX_BUCKETS * every
    filled = repo.buckets(sid, "cpu_percent", BASE, end, every, stats=("max",), fill=True)
    assert len(filled) == MAX_BUCKETS
    assert [b.max for b in filled if b.max is not None] == [7.0]
    with pytest.raises(QueryError):
        repo.buckets(sid, "cpu_percent", BASE, end + every, every, fill=True)
    # Unaligned edges: the buckets they fall in count (100,001 here).
    with pytest.raises(QueryError, match="100001 buckets"):
        repo.buckets(sid, "cpu_percent", BASE + every / 2, end + every / 2, every, fill=True)
    # Without fill the result is bounded by the stored points: no limit applies.
    assert len(repo.buckets(sid, "cpu_percent", BASE, end + every, every)) == 1


# -- bounded rejections ------------------------------------------------------------------
def bad_rows(sid, n, good_every=0):
    """``n`` rows, all out of range except every ``good_every``-th (if set)."""
    for i in range(n):
        value = 50.0 if good_every and i % good_every == 0 else 500.0
        yield (sid, "cpu_percent", value, BASE + timedelta(seconds=i))


def test_a_rejected_batch_keeps_the_first_errors_and_counts_all(db, repo):
    sid = repo.add_server("a")
    n = 5000
    with pytest.raises(ValidationError) as caught:
        repo.record_many(bad_rows(sid, n))
    err = caught.value
    assert [e.position for e in err.errors] == list(range(MAX_ROW_ERRORS))
    assert (err.rows, err.total) == (n, n)
    assert "5000 invalid row(s)" in str(err) and "and 4980 more" in str(err)
    assert count(db) == 0


def test_skip_keeps_the_first_errors_and_exact_counts(db, repo):
    sid = repo.add_server("a")
    n = 5000
    result = repo.record_many(bad_rows(sid, n, good_every=7), on_error="skip")
    good = len(range(0, n, 7))
    assert (result.inserted, result.duplicates, result.rejected_rows) == (good, 0, n - good)
    assert len(result.rejected) == MAX_ROW_ERRORS
    expected_positions = [i for i in range(n) if i % 7][:MAX_ROW_ERRORS]
    assert [e.position for e in result.rejected] == expected_positions
    assert count(db) == good


def test_a_row_with_several_problems_counts_once_as_a_row(repo):
    sid = repo.add_server("a")
    rows = [(sid + 99, "cpu_percent", 500.0, BASE)] * 3
    with pytest.raises(ValidationError) as caught:
        repo.record_many(rows)
    assert (caught.value.rows, caught.value.total) == (3, 6)


def peak_rss_growth(call):
    """Peak RSS (bytes) reached during ``call()`` above the RSS before it."""
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as fh:    # resets VmHWM to VmRSS
            fh.write("5")
    except OSError as exc:
        pytest.skip("cannot reset the peak RSS here: %s" % exc)

    def status(field):
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
        raise AssertionError(field)
    before = status("VmRSS")
    call()
    return status("VmHWM") - before


@pytest.mark.parametrize("on_error", ["raise", "skip"])
def test_a_large_bad_batch_costs_bounded_memory(db, repo, on_error):
    sid = repo.add_server("a")
    outcome = {}

    def write():
        try:
            outcome["result"] = repo.record_many(bad_rows(sid, BAD_ROWS), on_error=on_error)
        except ValidationError as exc:
            outcome["error"] = exc

    grown = peak_rss_growth(write)
    kept = outcome["error"].errors if on_error == "raise" else outcome["result"].rejected
    rows = outcome["error"].rows if on_error == "raise" else outcome["result"].rejected_rows
    assert (len(kept), rows) == (MAX_ROW_ERRORS, BAD_ROWS)
    print("peak RSS growth for %d bad rows (%s): %.1f MB" % (BAD_ROWS, on_error, grown / 1e6))
    # Kept: 1,000 errors plus one 50,000-row chunk at a time; was ~125 MB for 300 k rows.
    assert grown < 40e6, grown
