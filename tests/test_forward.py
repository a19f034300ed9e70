"""Store and forward (issue 10): spool -> central, exactly once in effect.

The central database is the selected backend (``db``); the spool is an
SQLite file, as on an agent (one test turns it around). Expected values come
from plain Python over what the agent stored.
"""

import random
import threading
import time
from datetime import timedelta

import pytest

import metricstore
from metricstore import ConfigurationError, MetricRepository
from metricstore.ingest import SnapshotSample
from metricstore.forwarding import Backoff, Forwarder, SpoolCap, enable_spool, status
from metricstore.forwarding import central as central_module
from metricstore.forwarding import forwarder as forwarder_module
from metricstore.forwarding.cap import THIN_WINDOW_US
from metricstore.timeutil import to_micros, utcnow

METRICS = ("cpu_percent", "memory_percent", "connection_count", "wait_time_ms")


def base_time():
    return utcnow().replace(microsecond=0) - timedelta(hours=6)


def samples(server_ids, start, steps, rng, every=timedelta(seconds=15)):
    out = []
    for k in range(steps):
        for sid in server_ids:
            for metric in METRICS:
                out.append((sid, metric, round(rng.uniform(0, 100), 3), start + k * every))
    return out


def stored(db, names=None):
    """{(server name, metric, collected_at, value)} of ``db``'s metric rows."""
    d = metricstore.dialects.dialect_for(db)
    rows = db.execute_sql(
        "SELECT s.name, t.name, m.collected_at, m.value FROM metrics m "
        "JOIN servers s ON s.id = m.server_id JOIN metric_types t ON t.id = m.metric_type_id")
    return {(n, metric, d.time_result(t), v) for n, metric, t, v in rows}


def stored_snapshots(db):
    d = metricstore.dialects.dialect_for(db)
    rows = db.execute_sql(
        "SELECT s.name, x.collected_at, x.cpu_percent, x.memory_percent, x.connection_count, "
        "x.status FROM server_snapshots x JOIN servers s ON s.id = x.server_id")
    return {(r[0], d.time_result(r[1])) + tuple(r[2:]) for r in rows}


def forwarder(spool, db, **kwargs):
    kwargs.setdefault("backoff", Backoff(base=0.01, cap=0.05))
    return Forwarder(spool, db, **kwargs)


def test_every_row_snapshot_and_server_arrives_once_with_its_values(spool, db):
    rng = random.Random(1)
    repo = MetricRepository(spool)
    ids = [repo.add_server("sql-%02d" % i) for i in range(3)]
    t0 = base_time()
    repo.record_many(samples(ids, t0, 40, rng))
    for k in range(10):
        repo.record_snapshot(ids[k % 3], t0 + timedelta(seconds=15 * k), 1.5 * k, 50.0, k,
                             "online")
    totals = forwarder(spool, db, batch_rows=97, live_rows=13).run()
    assert stored(db) == stored(spool)
    assert stored_snapshots(db) == stored_snapshots(spool)
    expected = len(stored(spool)) + len(stored_snapshots(spool))
    assert totals.inserted == expected and totals.duplicates == 0
    s = status(spool)
    assert s.spool_rows == 0 and s.counts["forwarded"] == expected
    assert s.counts["duplicate"] == s.counts["quarantined"] == s.counts["expired"] == 0
    assert s.last_success_at is not None and s.ok


def test_late_and_out_of_order_samples_are_never_skipped(spool, db):
    repo = MetricRepository(spool)
    sid = repo.add_server("late")
    t0 = base_time()
    times = [t0 + timedelta(seconds=15 * k) for k in range(60)]
    random.Random(2).shuffle(times)
    f = forwarder(spool, db, batch_rows=7)
    for chunk in range(0, 60, 10):           # forward between late arrivals
        repo.record_many([(sid, "cpu_percent", float(i), t)
                          for i, t in enumerate(times[chunk:chunk + 10])])
        f.cycle()
    f.run()
    assert stored(db) == stored(spool) and len(stored(db)) == 60


def test_rows_stored_before_the_spool_was_enabled_are_forwarded(spool, db):
    repo = MetricRepository(spool)
    sid = repo.add_server("before")
    repo.record_many(samples([sid], base_time(), 5, random.Random(3)))
    enable_spool(spool)
    enable_spool(spool)                                      # idempotent: not seeded twice
    repo.record_many(samples([sid], base_time() + timedelta(hours=1), 5, random.Random(4)))
    assert status(spool).spool_rows == 40
    forwarder(spool, db).run()
    assert stored(db) == stored(spool) and len(stored(db)) == 40


def test_duplicates_the_writer_ignores_add_nothing_to_the_spool(spool, db):
    repo = MetricRepository(spool)
    sid = repo.add_server("dup")
    enable_spool(spool)
    rows = samples([sid], base_time(), 5, random.Random(5))
    repo.record_many(rows)
    assert repo.record_many(rows).duplicates == len(rows)
    assert status(spool).spool_rows == len(rows)


def test_servers_are_mapped_by_name_and_registered_on_first_sight(spool, db):
    central = MetricRepository(db)
    for name in ("other-1", "other-2", "b"):                 # different ids centrally
        central.add_server(name)
    repo = MetricRepository(spool)
    a, b = repo.add_server("a"), repo.add_server("b")
    t = base_time()
    repo.record_many([(a, "cpu_percent", 1.0, t), (b, "cpu_percent", 2.0, t)])
    forwarder(spool, db).run()
    assert {(n, v) for n, _, _, v in stored(db)} == {("a", 1.0), ("b", 2.0)}
    assert sorted(s.name for s in central.servers()) == ["a", "b", "other-1", "other-2"]
    mapping = dict(spool.execute_sql("SELECT name, central_id FROM forward_servers"))
    assert mapping == {s.name: s.id for s in central.servers() if s.name in ("a", "b")}


def test_poison_rows_are_quarantined_with_the_reason_and_the_rest_goes_on(spool, db, backend):
    db.execute_sql("DELETE FROM metric_types WHERE name = 'wait_time_ms'")   # unknown there
    db.execute_sql("UPDATE metric_types SET unit = ? WHERE name = 'connection_count'".replace(
        "?", "%s" if backend == "postgresql" else "?"), ("%",))
    repo = MetricRepository(spool)
    sid = repo.add_server("poison")
    t = base_time()
    rows = [(sid, "cpu_percent", 5.0, t), (sid, "wait_time_ms", 7.0, t),
            (sid, "connection_count", 150.0, t), (sid, "connection_count", 50.0,
                                                  t + timedelta(seconds=15))]
    repo.record_many(rows)
    forwarder(spool, db, batch_rows=100).run()
    assert {(m, v) for _, m, _, v in stored(db)} == {("cpu_percent", 5.0),
                                                      ("connection_count", 50.0)}
    s = status(spool)
    assert s.counts["forwarded"] == 2 and s.counts["quarantined"] == 2
    assert s.spool_rows == 0                                 # the spool is not blocked
    reasons = {q.metric: q.reason for q in s.quarantined}
    assert "unknown metric 'wait_time_ms'" in reasons["wait_time_ms"]
    assert "out of range" in reasons["connection_count"]
    assert {q.row["value"] for q in s.quarantined} == {7.0, 150.0}
    assert not s.ok and any("quarantined" in p for p in s.problems)


REFUSE_HUGE = {   # a rule only the central database knows, enforced by the database itself
    "postgresql": "ALTER TABLE metrics ADD CONSTRAINT no_huge CHECK (value < 1000000)",
    "sqlite": ("CREATE TRIGGER no_huge BEFORE INSERT ON metrics WHEN NEW.value >= 1000000 "
               "BEGIN SELECT RAISE(ABORT, 'no huge values'); END"),
}


def test_a_statement_the_central_database_refuses_is_split_down_to_the_poison_row(
        spool, db, backend):
    db.execute_sql(REFUSE_HUGE[backend])
    repo = MetricRepository(spool)
    sid = repo.add_server("huge")
    t = base_time()
    rows = [(sid, "wait_time_ms", 5e6 if k == 13 else float(k), t + timedelta(seconds=15 * k))
            for k in range(40)]
    repo.record_many(rows)
    forwarder(spool, db, batch_rows=40).run()
    assert len(stored(db)) == 39
    s = status(spool)
    assert s.counts["forwarded"] == 39 and s.counts["quarantined"] == 1
    (q,) = s.quarantined
    assert q.row["value"] == 5e6 and "refused" in q.reason


def test_rows_older_than_the_central_retention_count_as_expired(spool, db):
    metricstore.set_retention_days(spool, 90)
    repo = MetricRepository(spool)
    sid = repo.add_server("old")
    now = utcnow().replace(microsecond=0)
    repo.record_many([(sid, "cpu_percent", 1.0, now - timedelta(days=40)),
                      (sid, "cpu_percent", 2.0, now - timedelta(days=20))])
    totals = forwarder(spool, db, local_retention=None).run()
    assert totals.expired == 1 and totals.inserted == 1 and totals.quarantined == []
    s = status(spool)
    assert s.counts["expired"] == 1 and s.counts["quarantined"] == 0 and s.spool_rows == 0


class Crash(BaseException):
    """Stands for kill -9 (nothing of the process runs after it)."""


def test_killed_between_the_central_commit_and_the_local_record_counts_exactly(
        spool, db, monkeypatch):
    repo = MetricRepository(spool)
    sid = repo.add_server("crash")
    repo.record_many(samples([sid], base_time(), 30, random.Random(6)))
    real = forwarder_module.Forwarder._acknowledge
    calls = []

    def crash_on_third(self, inflight, outcome):
        calls.append(inflight["batch"])
        if len(calls) == 3:
            raise Crash()
        return real(self, inflight, outcome)

    monkeypatch.setattr(forwarder_module.Forwarder, "_acknowledge", crash_on_third)
    with pytest.raises(Crash):
        forwarder(spool, db, batch_rows=25, live_rows=25).run()
    monkeypatch.setattr(forwarder_module.Forwarder, "_acknowledge", real)
    db.close()                                               # the process is gone
    db.connect()
    assert status(spool).in_flight
    again = forwarder(spool, db, batch_rows=25, live_rows=25)
    again.run()
    assert again.recovered == 1
    s = status(spool)
    assert stored(db) == stored(spool)
    assert s.counts["forwarded"] == 120 and s.counts["duplicate"] == 0


def test_killed_before_the_central_commit_resends_the_batch(spool, db, monkeypatch):
    repo = MetricRepository(spool)
    sid = repo.add_server("crash2")
    repo.record_many(samples([sid], base_time(), 30, random.Random(7)))
    real = central_module.Central.ship

    def crash_inside_the_transaction(self, spool_id, batch_no, shipment):
        repo = self.open()
        with self.dialect.write_transaction(self.db):
            repo.record_many(shipment.metrics, on_error="skip")
            raise Crash()                                    # rolled back: nothing committed

    monkeypatch.setattr(central_module.Central, "ship", crash_inside_the_transaction)
    with pytest.raises(Crash):
        forwarder(spool, db, batch_rows=25, live_rows=25).run()
    monkeypatch.setattr(central_module.Central, "ship", real)
    again = forwarder(spool, db, batch_rows=25, live_rows=25)
    again.run()
    assert again.recovered == 0
    assert stored(db) == stored(spool)
    assert status(spool).counts["forwarded"] == 120
    assert status(spool).counts["duplicate"] == 0


def test_an_unreachable_central_database_is_retried_with_growing_pauses(spool):
    repo = MetricRepository(spool)
    sid = repo.add_server("away")
    repo.record_many([(sid, "cpu_percent", 1.0, base_time())])
    gone = metricstore.connect("postgresql://nobody@127.0.0.1:56439/none")   # nothing listens
    f = Forwarder(spool, gone, backoff=Backoff(base=0.05, cap=0.4, rng=random.Random(0)))
    pauses = []
    wait = f.stopping.wait

    def record(timeout=None):
        pauses.append(timeout)
        if len(pauses) >= 6:
            f.stop()
        return wait(0)

    f.stopping.wait = record
    f.run(follow=True)
    assert len(pauses) == 6
    assert all(p > 0 for p in pauses)                          # never a busy loop
    assert pauses[3] > pauses[0] and max(pauses) <= 0.4        # exponential, capped
    s = status(spool)
    assert s.spool_rows == 1 and s.last_error and not s.ok
    with pytest.raises(metricstore.MetricstoreError):          # --once gives up, clearly
        Forwarder(spool, gone).run()
    assert status(spool).spool_rows == 1


def test_backoff_grows_exponentially_with_jitter_and_resets():
    b = Backoff(base=1, cap=30, rng=random.Random(1))
    delays = [b.next() for _ in range(8)]
    for n, d in enumerate(delays):
        ceiling = min(30, 2 ** n)
        assert ceiling / 2 <= d <= ceiling
    b.reset()
    assert b.next() <= 1


def test_while_a_backlog_drains_the_newest_rows_go_out_first(spool, db):
    repo = MetricRepository(spool)
    sid = repo.add_server("lanes")
    t0 = base_time()
    repo.record_many([(sid, "cpu_percent", 1.0, t0 + timedelta(seconds=15 * k))
                      for k in range(500)])
    fresh = t0 + timedelta(hours=3)
    repo.record_many([(sid, "cpu_percent", 2.0, fresh)])
    f = forwarder(spool, db, batch_rows=100, live_rows=10)
    f.start()
    f.cycle()                                                # one backfill + one live batch
    times = {t for _, _, t, _ in stored(db)}
    assert fresh in times and len(times) == 110
    assert min(times) == t0                                  # and the backlog from its start
    f.run()
    assert len(stored(db)) == 501


def test_one_forwarder_per_spool(spool, db):
    first = forwarder(spool, db)
    first.start()
    with pytest.raises(ConfigurationError, match="already running"):
        forwarder(spool, db).start()
    first.close()
    forwarder(spool, db).run()


def test_another_destination_is_refused_unless_retargeted(spool, db, tmp_path):
    repo = MetricRepository(spool)
    sid = repo.add_server("x")
    repo.record_many([(sid, "cpu_percent", 1.0, base_time())])
    forwarder(spool, db).run()
    other = metricstore.connect("sqlite:///" + str(tmp_path / "other.db"))
    metricstore.provision(other)
    with pytest.raises(ConfigurationError, match="retarget"):
        forwarder(spool, other).run()
    repo.record_many([(sid, "cpu_percent", 2.0, base_time() + timedelta(seconds=15))])
    forwarder(spool, other, retarget=True).run()
    assert {v for *_, v in stored(other)} == {2.0}


def test_local_retention_prunes_forwarded_rows_only(spool, db):
    repo = MetricRepository(spool)
    sid = repo.add_server("prune")
    now = utcnow().replace(microsecond=0)
    old = [(sid, "cpu_percent", 1.0, now - timedelta(days=3, seconds=15 * k)) for k in range(10)]
    repo.record_many(old)
    forwarder(spool, db, local_retention=None).run()
    repo.record_many([(sid, "memory_percent", 2.0, now - timedelta(days=3))])  # not forwarded
    f = forwarder(spool, db, local_retention=timedelta(days=1))
    f.start()
    assert f.maintain()["pruned"] == 10
    assert {(m, v) for _, m, _, v in stored(spool)} == {("memory_percent", 2.0)}
    f.close()
    forwarder(spool, db).run()
    assert len(stored(db)) == 11


def test_a_full_spool_thins_what_it_cannot_compact_to_5_minutes_then_drops_and_counts_it_all(
        spool, db):
    # Snapshots have no rollup tier: the cap thins them (metric rows are
    # compacted first: tests/test_forward_compaction.py).
    repo = MetricRepository(spool)
    ids = [repo.add_server("cap-%d" % i) for i in range(2)]
    t0 = base_time()
    snaps = [SnapshotSample(sid, t0 + timedelta(seconds=15 * k), float(k % 100), 50.0, k, "online")
             for k in range(400) for sid in ids]                 # 100 min x 2 servers
    enable_spool(spool)
    repo.record_snapshots(snaps)
    f = forwarder(spool, db, cap=SpoolCap(max_rows=500), local_retention=None)
    f.start()
    counts = f.maintain()
    thinned = counts["dropped:thinned"]
    assert thinned >= 300 and "dropped:cap" not in counts and not counts.get("compacted")
    left = stored_snapshots(spool)
    assert len(left) == 800 - thinned <= 500
    f.run()
    central = stored_snapshots(db)
    assert central == left
    # 100 % time coverage at 5-minute resolution, for every server
    for name in ("cap-0", "cap-1"):
        windows = {to_micros(r[1]) // THIN_WINDOW_US for r in central if r[0] == name}
        expected = {to_micros(t0 + timedelta(seconds=15 * k)) // THIN_WINDOW_US
                    for k in range(400)}
        assert windows == expected
    s = status(spool)
    assert s.counts["forwarded"] + s.counts["dropped:thinned"] == 800
    # a cap below what thinning can reach drops the oldest, counted
    repo.record_snapshots([SnapshotSample(ids[0], t0 + timedelta(seconds=15 * k + 1), 1.0, 1.0,
                                          1, "online") for k in range(40)])
    g = forwarder(spool, db, cap=SpoolCap(max_rows=len(left) + 10), local_retention=None)
    g.start()
    counts = g.maintain()
    assert counts["pruned"] >= 30                              # forwarded rows go first
    g.close()
    tiny = forwarder(spool, db, cap=SpoolCap(max_rows=1), local_retention=None)
    tiny.start()
    repo.record_snapshots([SnapshotSample(ids[1], t0 + timedelta(seconds=15 * k + 2), 1.0, 1.0,
                                          1, "online") for k in range(3)])
    counts = tiny.maintain()
    tiny.run()
    s = status(spool)
    assert s.counts["forwarded"] + s.dropped == 800 + 40 + 3
    assert s.local_rows <= 1


def test_the_spool_may_be_postgresql_and_the_central_side_sqlite(db, tmp_path):
    central = metricstore.connect("sqlite:///" + str(tmp_path / "central.db"))
    central.connect()
    metricstore.provision(central)
    repo = MetricRepository(db)                    # the selected backend as the spool
    sid = repo.add_server("pg-agent")
    enable_spool(db)
    repo.record_many(samples([sid], base_time(), 10, random.Random(8)))
    repo.record_snapshot(sid, base_time(), 10.0, 20.0, 3, "warning")
    forwarder(db, central, batch_rows=15).run()
    assert stored(central) == stored(db) and len(stored(central)) == 40
    assert stored_snapshots(central) == stored_snapshots(db)
    assert status(db).counts["forwarded"] == 41


def test_follow_mode_forwards_new_rows_within_a_poll(spool, db):
    repo = MetricRepository(spool)
    sid = repo.add_server("follow")
    f = forwarder(spool, db, poll_s=0.05)
    thread = threading.Thread(target=f.run, kwargs={"follow": True})
    thread.start()
    try:
        t = base_time()
        repo.record_many([(sid, "cpu_percent", 3.0, t)])
        deadline = time.monotonic() + 10
        while not stored(db) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert stored(db) == stored(spool)
    finally:
        f.stop()
        thread.join(10)
    assert not thread.is_alive()


def test_more_refused_rows_than_the_ingest_lists_are_all_quarantined(spool, db):
    db.execute_sql("DELETE FROM metric_types WHERE name = 'wait_time_ms'")
    repo = MetricRepository(spool)
    sid = repo.add_server("many")
    t0 = base_time()
    repo.record_many([(sid, "wait_time_ms" if k % 16 else "cpu_percent", 1.0,
                       t0 + timedelta(seconds=k)) for k in range(2400)])
    forwarder(spool, db, batch_rows=5000).run()
    s = status(spool, quarantine_limit=5000)
    assert s.counts["quarantined"] == 2250 and len(s.quarantined) == 2250
    assert s.counts["forwarded"] == 150 == len(stored(db))
    assert s.spool_rows == 0


def test_a_spool_queued_before_migration_005_forwards_every_value_after_it(spool, db):
    import importlib

    from metricstore.schema import HISTORY_TABLE
    m005 = importlib.import_module("metricstore.migrations.005_forward_values_and_compaction")
    repo = MetricRepository(spool)
    sid = repo.add_server("upgraded")
    enable_spool(spool)
    m005.rollback(None, spool)                      # the spool as it was at migration 004
    spool.execute_sql("DELETE FROM %s WHERE name LIKE '005%%'" % HISTORY_TABLE)
    old = samples([sid], base_time(), 5, random.Random(9))
    repo.record_many(old)
    assert "value" not in {c.name for c in spool.get_columns("forward_outbox")}
    assert "005_forward_values_and_compaction" in metricstore.provision(spool).migrations_applied
    new = samples([sid], base_time() + timedelta(minutes=5), 5, random.Random(10))
    repo.record_many(new)
    (entries,) = spool.execute_sql("SELECT count(*) FROM forward_outbox").fetchone()
    (same,) = spool.execute_sql(
        "SELECT count(*) FROM forward_outbox o JOIN metrics m ON m.server_id = o.server_id "
        "AND m.metric_type_id = o.metric_type_id AND m.collected_at = o.collected_at "
        "AND m.value = o.value").fetchone()
    assert entries == same == len(old) + len(new)             # backfilled, then by the trigger
    forwarder(spool, db).run()
    assert stored(db) == stored(spool) and len(stored(db)) == 40
