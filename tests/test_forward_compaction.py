"""Compaction before drop (issue 10, item 4): at the spool cap the oldest
unforwarded metric rows become 5-minute states, forwarded into the central
5-minute tier (merged idempotently), and only then is anything dropped.

The central database is the selected backend (``db``), the spool an SQLite
file. Expected values come from plain Python over the rows the agent stored.
"""

import random
from collections import defaultdict
from datetime import timedelta

import pytest

import metricstore
from metricstore import MetricRepository
from metricstore.dialects import dialect_for
from metricstore.forwarding import Backoff, Forwarder, SpoolCap, enable_spool, status
from metricstore.forwarding import compaction
from metricstore.forwarding.state import get as state_get
from metricstore.forwarding import forwarder as forwarder_module
from metricstore.forwarding.central import Central
from metricstore.rollups.state import State
from metricstore.timeutil import from_micros, to_micros, utcnow

W5 = 300_000_000
GAUGE, COUNTER = "cpu_percent", "disk_io_reads"


class Crash(Exception):
    pass


def forwarder(spool, db, **kwargs):
    kwargs.setdefault("backoff", Backoff(base=0.01, cap=0.05))
    kwargs.setdefault("local_retention", None)
    return Forwarder(spool, db, **kwargs)


def outage(server_ids, start, steps, seed=1):
    """15 s samples of a gauge and a counter (with a reset), times in seconds."""
    rng = random.Random(seed)
    rows, level = [], defaultdict(float)
    for k in range(steps):
        t = start + timedelta(seconds=15 * k)
        for sid in server_ids:
            rows.append((sid, GAUGE, round(rng.uniform(0, 100), 3), t))
            level[sid] = 0.0 if k == steps // 3 else level[sid] + rng.randint(0, 50)
            rows.append((sid, COUNTER, level[sid], t))
    return rows


def expected_buckets(rows, names):
    """{(server name, metric, bucket us): (n, sum, min, max, first, last, increase)}:
    plain Python over the agent's rows."""
    groups = defaultdict(list)
    for sid, metric, value, t in rows:
        us = to_micros(t)
        groups[names[sid], metric, us - us % W5].append((us, value))
    out = {}
    for key, points in groups.items():
        points.sort()
        values = [v for _, v in points]
        inc = None
        if key[1] == COUNTER:
            inc = sum((b - a if b >= a else b) for a, b in zip(values, values[1:]))
        out[key] = (len(values), sum(values), min(values), max(values), values[0],
                    values[-1], inc)
    return out


def central_5m(db):
    """The central 5-minute tier as {(server name, metric, bucket us): same tuple}."""
    d = dialect_for(db)
    rows = db.execute_sql(
        "SELECT s.name, t.name, %s, r.n, r.total, r.low, r.high, r.first_v, r.last_v, "
        "r.increase FROM rollup_5m r JOIN servers s ON s.id = r.server_id "
        "JOIN metric_types t ON t.id = r.metric_type_id" % d.micros_sql("r.bucket"))
    return {(r[0], r[1], r[2]): tuple(r[3:]) for r in rows}


def central_raw(db):
    d = dialect_for(db)
    rows = db.execute_sql(
        "SELECT s.name, t.name, m.collected_at, m.value FROM metrics m "
        "JOIN servers s ON s.id = m.server_id JOIN metric_types t ON t.id = m.metric_type_id")
    return {(n, metric, d.time_result(t), v) for n, metric, t, v in rows}


def close(a, b):
    return all(x == y if x is None or y is None else abs(x - y) <= 1e-9 * max(1, abs(y))
               for x, y in zip(a, b))


def agent(spool, n_servers=2, steps=480, seed=1):
    repo = MetricRepository(spool)
    ids = [repo.add_server("agent-%d" % i) for i in range(n_servers)]
    names = {sid: "agent-%d" % i for i, sid in enumerate(ids)}
    start = utcnow().replace(minute=0, second=0, microsecond=0) - timedelta(hours=5)
    rows = outage(ids, start, steps, seed)
    enable_spool(spool)
    assert repo.record_many(rows).inserted == len(rows)
    return repo, ids, names, rows


def test_the_cap_compacts_the_oldest_buckets_before_dropping_and_they_arrive_in_the_tier(
        spool, db):
    repo, ids, names, rows = agent(spool)                    # 2 h x 2 servers x 2 metrics
    cap = SpoolCap(max_rows=len(rows) // 2)
    f = forwarder(spool, db, cap=cap)
    f.start()
    counts = f.maintain()
    f.close()
    assert counts["compacted"] > 0
    assert not counts.get("dropped:thinned") and not counts.get("dropped:cap")
    s = status(spool)
    assert cap.max_rows - 20 <= s.local_rows <= cap.max_rows   # no more than it needs
    states, held = s.compacted_waiting
    assert held == counts["compacted"] == s.counts["compacted"] and states == held // 20
    # the oldest arrivals went: every compacted bucket is one of the oldest
    left = {(sid, m, to_micros(dialect_for(spool).time_result(t)))
            for sid, m, t in spool.execute_sql(
                "SELECT server_id, metric_type_id, collected_at FROM metrics")}
    assert len(left) == len(rows) - held
    forwarder(spool, db).run()
    s = status(spool)
    assert s.compacted_waiting == (0, 0) and s.spool_rows == 0
    assert s.counts["compacted:forwarded"] == held
    assert s.counts["forwarded"] + s.counts["compacted"] + s.dropped == len(rows)
    # central: raw rows for what was forwarded raw, tier states for everything,
    # equal to plain Python over the agent's rows
    expected = expected_buckets(rows, names)
    tier = central_5m(db)
    assert tier.keys() == expected.keys()                    # 100 % 5-minute coverage
    for key, want in expected.items():
        assert close(tier[key], want), key
    raw = central_raw(db)
    assert len(raw) == s.counts["forwarded"]
    raw_buckets = {(n, m, to_micros(t) - to_micros(t) % W5) for n, m, t, _ in raw}
    assert len(raw_buckets) + states == len(expected)        # each bucket one way only
    # reads through the repository, at 5 minutes, equal plain Python
    central_repo = MetricRepository(db)
    cid = central_repo.add_server("agent-0")
    lo = min(to_micros(r[3]) for r in rows)
    hi = max(to_micros(r[3]) for r in rows) // W5 * W5 + W5
    got = central_repo.buckets(cid, GAUGE, from_micros(lo), from_micros(hi),
                               timedelta(minutes=5), stats=("count", "avg", "max"))
    want = {b: v for (n, m, b), v in expected.items() if n == "agent-0" and m == GAUGE}
    assert {to_micros(b.start): b.count for b in got} == {b: v[0] for b, v in want.items()}
    for b in got:
        assert abs(b.avg - want[to_micros(b.start)][1] / b.count) < 1e-9
    assert "5m" in got.resolution
    rates = central_repo.rate(cid, COUNTER, from_micros(lo), from_micros(hi),
                              timedelta(hours=1))
    raw_rows = sorted((to_micros(t), v) for sid, m, v, t in rows
                      if m == COUNTER and sid == ids[0])
    for r in rates:                                          # counter increase per hour
        a = to_micros(r.start)
        pairs = [(v2 - v1 if v2 >= v1 else v2) for (t1, v1), (t2, v2)
                 in zip(raw_rows, raw_rows[1:]) if a <= t2 < a + 3_600_000_000]
        assert r.pairs == len(pairs) and abs(r.delta - sum(pairs)) < 1e-9 * max(1, r.delta)
        assert abs(r.seconds - 15 * len(pairs)) < 1e-9
    assert len(rates) == 2


def test_a_bucket_with_a_forwarded_row_is_not_compacted(spool, db):
    repo, ids, names, rows = agent(spool, n_servers=1, steps=80)   # 20 min
    forwarder(spool, db).run()                               # all forwarded
    t0 = min(r[3] for r in rows)
    late = [(ids[0], GAUGE, 7.5, t0 + timedelta(seconds=7))]  # into a forwarded bucket
    fresh = outage(ids, t0 + timedelta(hours=1), 40, seed=3)  # 10 min, never forwarded
    spool.execute_sql("DELETE FROM metrics")                 # forwarded, pruned
    repo.record_many(late + fresh)
    f = forwarder(spool, db, cap=SpoolCap(max_rows=4))
    f.start()
    counts = f.maintain()
    f.close()
    assert counts["compacted"] == len(fresh)                 # only the untouched buckets
    assert status(spool).compacted_waiting == (4, len(fresh))
    assert counts["dropped:cap"] == 1                        # then the late row, counted
    forwarder(spool, db).run()
    assert (names[ids[0]], GAUGE, late[0][3], 7.5) not in central_raw(db)
    s = status(spool)
    stored = len(rows) + len(late) + len(fresh)
    assert s.counts["forwarded"] + s.counts["compacted"] + s.dropped == stored
    want = expected_buckets(rows + fresh, names)
    tier = central_5m(db)
    for key in expected_buckets(fresh, names):
        assert close(tier[key], want[key])


def test_a_resent_compacted_state_changes_nothing_and_a_crash_after_the_commit_counts_once(
        spool, db, monkeypatch):
    repo, ids, names, rows = agent(spool, n_servers=1, steps=240)
    f = forwarder(spool, db, cap=SpoolCap(max_rows=len(rows) // 2), state_rows=3)
    f.start()
    held = f.maintain()["compacted"]
    f.close()
    real = forwarder_module.Forwarder._acknowledge
    calls = []

    def crash_on_second(self, inflight, outcome):            # the second batch of states
        calls.extend(["compacted"] if inflight.get("compacted") else [])
        if len(calls) == 2:
            raise Crash()
        return real(self, inflight, outcome)

    monkeypatch.setattr(forwarder_module.Forwarder, "_acknowledge", crash_on_second)
    shipped, ship_states = [], Central.ship_states

    def keep(self, spool_id, batch_no, states, *args):
        shipped.append(states)
        return ship_states(self, spool_id, batch_no, states, *args)

    monkeypatch.setattr(Central, "ship_states", keep)
    with pytest.raises(Crash):
        forwarder(spool, db, state_rows=3).run()
    monkeypatch.setattr(forwarder_module.Forwarder, "_acknowledge", real)
    assert status(spool).in_flight and state_get(spool)["inflight"].get("compacted")
    before = central_5m(db)
    again = forwarder(spool, db, state_rows=3)
    again.run()
    monkeypatch.setattr(Central, "ship_states", ship_states)
    assert again.recovered == 1
    s = status(spool)
    assert s.counts["compacted:forwarded"] == held and not s.counts.get("compacted:duplicate")
    tier = central_5m(db)
    assert all(tier[k] == v for k, v in before.items())
    expected = expected_buckets(rows, names)
    assert tier.keys() == expected.keys()
    assert all(close(tier[k], v) for k, v in expected.items())
    # the same states sent once more: counted as duplicates, the tiers unchanged
    hours = db.execute_sql("SELECT count(*), SUM(n) FROM rollup_1h").fetchone()
    resend = [st for batch in shipped for st in batch]      # every state, shipped once
    assert sum(st[3].count for st in resend) == held
    out = Central(db).ship_states("resend", 1, resend, [{}] * len(resend))
    assert out.states == {compaction.DUPLICATE: sum(st[3].count for st in resend)}
    assert central_5m(db) == tier
    assert db.execute_sql("SELECT count(*), SUM(n) FROM rollup_1h").fetchone() == hours


def test_a_state_merges_with_raw_rows_of_its_bucket_unless_they_interleave(spool, db):
    central_repo = MetricRepository(db)
    cid = central_repo.add_server("merge")
    b = to_micros(utcnow()) // W5 * W5 - 12 * W5
    early = [(b + k * 15_000_000, float(k)) for k in range(10)]          # 0 .. 135 s
    late = [(b + 200_000_000, 50.0), (b + 215_000_000, 60.0)]           # 200, 215 s
    central_repo.record_many([(cid, GAUGE, v, from_micros(t)) for t, v in late])
    central = Central(db)
    st = State.of_points(b, early)
    out = central.ship_states("merge", 1, [(cid, GAUGE, b, st)], [{}])
    assert out.states == {compaction.FORWARDED: 10}
    values = [v for _, v in early + late]
    (n, total, low, high) = db.execute_sql(
        "SELECT n, total, low, high FROM rollup_5m").fetchone()
    assert (n, low, high) == (12, 0.0, 60.0) and abs(total - sum(values)) < 1e-9
    (hn,) = db.execute_sql("SELECT SUM(n) FROM rollup_1h").fetchone()
    assert hn == 12
    inside = State.of_points(b, [(b + 207_000_000, 1.0)])               # between 200 and 215
    out = central.ship_states("merge", 2, [(cid, GAUGE, b, inside)], [{}])
    assert out.states == {compaction.OVERLAP: 1}
    assert db.execute_sql("SELECT n FROM rollup_5m").fetchone()[0] == 12
    old = to_micros(utcnow() - timedelta(days=400)) // W5 * W5
    out = central.ship_states("merge", 3, [(cid, GAUGE, old, State.of_points(old, [(old, 1.0)]))],
                              [{}])
    assert out.states == {compaction.EXPIRED: 1}


def test_the_spool_may_be_the_selected_backend_and_compacts_there_too(db, tmp_path):
    central = metricstore.connect("sqlite:///" + str(tmp_path / "central.db"))
    central.connect()
    metricstore.provision(central)
    repo, ids, names, rows = agent(db, n_servers=1, steps=240)   # the selected backend spools
    f = forwarder(db, central, cap=SpoolCap(max_rows=len(rows) // 2))
    f.start()
    held = f.maintain()["compacted"]
    f.close()
    assert held >= len(rows) // 2
    forwarder(db, central).run()
    s = status(db)
    assert s.counts["compacted:forwarded"] == held
    assert s.counts["forwarded"] + held == len(rows)
    expected = expected_buckets(rows, names)
    tier = central_5m(central)
    assert tier.keys() == expected.keys()
    assert all(close(tier[k], v) for k, v in expected.items())
    central.close()
