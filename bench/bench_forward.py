"""Store and forward, measured: drain throughput, freshness, spool ingest cost.

    python bench/bench_forward.py                      # 1,000,000 rows, all three
    python bench/bench_forward.py --rows 200000 --only drain --rounds 1

Rows: bench_ingest.generate (50 servers x 9 metrics, 15 s apart, ending
now), generated once before any timing; every timed run gets fresh tenants.

- drain: the same rows (a) through ``record_many`` straight into a fresh
  PostgreSQL tenant, (b) from an SQLite spool holding them (loaded before
  timing) through ``Forwarder.run()`` into another fresh PostgreSQL tenant:
  the forwarder's rows/s over record_many's (target >= 0.8). Order rotates
  per round; medians.
- ingest: ``record_many`` of the rows into a fresh SQLite tenant with the
  spool enabled (outbox triggers) and without: the cost of tracking.
- cap: a 7-day outage of 2 servers x 9 metrics (15 s samples, 725,760 rows)
  written hour by hour into a spool capped at half of it, the cap enforced
  every 6 simulated hours, then forwarded: time coverage of every series at
  5-minute resolution in the central tenant (raw rows and the 5-minute
  tier), the tier's buckets checked against plain Python over every stored
  row, and every row accounted for (forwarded + compacted + dropped by
  reason = stored).
- freshness: a spool holding the rows (a backlog) drains with
  ``Forwarder.run(follow=True)`` in a thread while an agent thread writes a
  fresh sample of 20 more servers every second; a reader polls the central
  tenant for the newest of those samples. Reported: how long each fresh
  sample took to be visible centrally while the backlog drained (target:
  within 30 s), and the drain time.
"""

import argparse
import statistics
import threading
import time
from datetime import timedelta

import _common as C
from bench_ingest import METRICS, generate

import metricstore
from metricstore.forwarding import Forwarder, enable_spool
from metricstore.timeutil import utcnow


def spool_with(rows, servers=50):
    """A fresh SQLite spool holding ``rows`` (loaded untimed)."""
    t = C.Tenant("sqlite", servers=servers)
    enable_spool(t.db)
    t.repo.record_many(rows)
    return t


def drain(rows, rounds, batch_rows):
    direct, forwarded = [], []
    for r in range(rounds):
        order = ("direct", "forward") if r % 2 == 0 else ("forward", "direct")
        for path in order:
            if path == "direct":
                with C.Tenant("postgresql", servers=50, label="bench_fwd") as central:
                    central.ensure_months(rows[0][3], rows[-1][3])
                    with C.timed(direct, cpu=True):
                        result = central.repo.record_many(rows)
                    assert result.inserted == len(rows)
            else:
                spool = spool_with(rows)
                with C.Tenant("postgresql", label="bench_fwd") as central:
                    central.ensure_months(rows[0][3], rows[-1][3])
                    f = Forwarder(spool.db, central.db, batch_rows=batch_rows,
                                  local_retention=None)
                    with C.timed(forwarded, cpu=True):
                        totals = f.run()
                    assert totals.inserted == len(rows), totals
                spool.close()
        print("  round %d: record_many %.2f s (client CPU %.2f s), forward %.2f s (client CPU "
              "%.2f s)" % ((r + 1,) + direct[-1] + forwarded[-1]))
    d, f = C.median([w for w, _ in direct]), C.median([w for w, _ in forwarded])
    print("drain, %d rows into PostgreSQL (batch_rows %d): record_many %s rows/s, "
          "forwarder %s rows/s, ratio %.2f (target >= 0.8); client CPU %.2f s vs %.2f s"
          % (len(rows), batch_rows, C.fmt_rate(len(rows), d), C.fmt_rate(len(rows), f), d / f,
             C.median([c for _, c in direct]), C.median([c for _, c in forwarded])))


def ingest(rows, rounds):
    plain, tracked = [], []
    for r in range(rounds):
        order = (False, True) if r % 2 == 0 else (True, False)
        for spool in order:
            with C.Tenant("sqlite", servers=50) as t:
                if spool:
                    enable_spool(t.db)
                with C.timed(tracked if spool else plain):
                    t.repo.record_many(rows)
    p, t = C.median(plain), C.median(tracked)
    print("ingest into SQLite, %d rows: plain %s rows/s, with the outbox triggers %s rows/s "
          "(%.2fx the time)" % (len(rows), C.fmt_rate(len(rows), p),
                                C.fmt_rate(len(rows), t), t / p))


def freshness(rows, batch_rows, live_rows):
    spool = spool_with(rows)
    agent_repo = metricstore.MetricRepository(metricstore.connect(spool.url))
    agent_repo.db.connect()
    fresh_ids = [agent_repo.add_server("fresh-%02d" % i) for i in range(20)]
    with C.Tenant("postgresql", label="bench_fwd") as central:
        central.ensure_months(rows[0][3], utcnow())
        f = Forwarder(spool.db, central.db, batch_rows=batch_rows, live_rows=live_rows,
                      poll_s=0.2, local_retention=None)
        reader = metricstore.connect(central.url)
        reader.connect()
        written = {}                      # fresh sample time -> wall time it was stored
        seen = {}                         # fresh sample time -> wall time seen centrally
        done = threading.Event()

        def agent():
            while not done.is_set():
                t = utcnow().replace(microsecond=0)
                if t not in written:
                    agent_repo.record_many([(sid, m, 1.0, t) for sid in fresh_ids
                                            for m in METRICS[:2]])
                    written[t] = time.monotonic()
                time.sleep(0.2)

        def poll():
            while not done.is_set():
                (newest,) = reader.execute_sql(
                    "SELECT max(m.collected_at) FROM metrics m JOIN servers s "
                    "ON s.id = m.server_id WHERE s.name LIKE 'fresh-%%'").fetchone()
                now = time.monotonic()
                for t in written:
                    if newest is not None and t <= newest and t not in seen:
                        seen[t] = now
                time.sleep(0.1)

        runner = threading.Thread(target=f.run, kwargs={"follow": True})
        threads = [threading.Thread(target=agent), threading.Thread(target=poll)]
        t0 = time.monotonic()
        runner.start()
        for th in threads:
            th.start()
        while True:
            (left,) = spool.db.execute_sql("SELECT count(*) FROM forward_outbox").fetchone()
            if left == 0 or time.monotonic() - t0 > 600:
                break
            time.sleep(0.5)
        drained = time.monotonic() - t0
        time.sleep(2)
        done.set()
        f.stop()
        runner.join()
        for th in threads:
            th.join()
        during = [seen[t] - w for t, w in written.items() if t in seen and w - t0 < drained]
        missing = [t for t in written if t not in seen]
        reader.close()
    agent_repo.db.close()
    spool.close()
    print("freshness while %d backlog rows drained (%.1f s, batch %d + live %d): %d fresh "
          "samples written during the drain, visible centrally after median %.1f s, max %.1f "
          "s (target <= 30 s); %d never seen" % (
              len(rows), drained, batch_rows, live_rows, len(during),
              statistics.median(during), max(during), len(missing)))


def cap(days=7, servers=2):
    from collections import defaultdict

    from metricstore.forwarding import SpoolCap, enforce, status
    from metricstore.forwarding.cap import THIN_WINDOW_US
    from metricstore.timeutil import to_micros
    per_hour = 240 * servers * len(METRICS)
    total = per_hour * 24 * days
    limit = SpoolCap(max_rows=total // 2)
    end = utcnow().replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    start = end - timedelta(days=days)
    spool = C.Tenant("sqlite", servers=servers)
    enable_spool(spool.db)
    names = dict(spool.db.execute_sql("SELECT id, name FROM servers"))
    expected = defaultdict(lambda: [0, 0.0])          # plain Python: (server, metric, 5 min)
    stored, enforce_s = 0, []
    for hour in range(24 * days):
        t0 = start + timedelta(hours=hour)
        rows = [(sid, m, 1.0 + (k % 50), t0 + k * C.STEP) for k in range(240)
                for sid in range(1, servers + 1) for m in METRICS]
        for sid, m, v, t in rows:
            e = expected[names[sid], m, to_micros(t) // THIN_WINDOW_US]
            e[0] += 1
            e[1] += v
        stored += spool.repo.record_many(rows).inserted
        if hour % 6 == 5:
            with C.timed(enforce_s):
                enforce(spool.db, limit, None, utcnow())
    assert stored == total
    held = spool.db.execute_sql("SELECT count(*) FROM metrics").fetchone()[0]
    waiting = status(spool.db).compacted_waiting
    with C.Tenant("postgresql", label="bench_fwd") as central:
        central.ensure_months(start, end)
        t_fwd = []
        with C.timed(t_fwd):
            Forwarder(spool.db, central.db, local_retention=None).run()
        window = "floor(extract(epoch FROM {t}) * 1000000 / %d)::bigint" % THIN_WINDOW_US
        (raw_windows,) = central.db.execute_sql(
            "SELECT count(DISTINCT (server_id, metric_type_id, %s)) FROM metrics"
            % window.format(t="collected_at")).fetchone()
        (windows,) = central.db.execute_sql(
            "SELECT count(*) FROM (SELECT server_id, metric_type_id, {raw} FROM metrics "
            "UNION SELECT server_id, metric_type_id, {tier} FROM rollup_5m WHERE n > 0) x"
            .format(raw=window.format(t="collected_at"),
                    tier=window.format(t="bucket"))).fetchone()
        tier = central.db.execute_sql(
            "SELECT s.name, t.name, %s, r.n, r.total FROM rollup_5m r JOIN servers s "
            "ON s.id = r.server_id JOIN metric_types t ON t.id = r.metric_type_id"
            % window.format(t="r.bucket")).fetchall()
        exact = sum(1 for name, m, w, n, tot in tier
                    if expected.get((name, m, w), [None])[0] == n
                    and abs(expected[name, m, w][1] - tot) < 1e-9 * tot)
        (central_rows,) = central.db.execute_sql("SELECT count(*) FROM metrics").fetchone()
    s = status(spool.db)
    spool.close()
    wanted = servers * len(METRICS) * days * 24 * 12
    accounted = s.counts["forwarded"] + s.counts["compacted"] + s.dropped
    print("cap at half of a %d-day outage (%d of %d rows, enforced every 6 h: median %.2f s, "
          "max %.2f s): %d raw rows + %d compacted states (%d rows) held locally at the end; "
          "forwarding took %.1f s; central has %d raw rows covering %d windows, raw + 5-minute "
          "tier cover %d of %d series x 5-minute windows (%.1f %%); tier buckets whose count "
          "and sum equal plain Python over every stored row: %d of %d; forwarded %d + "
          "compacted %d + dropped %s = %d of %d stored; compacted outcomes %s"
          % (days, limit.max_rows, total, C.median(enforce_s), max(enforce_s), held,
             waiting[0], waiting[1], t_fwd[0], central_rows, raw_windows, windows, wanted,
             100.0 * windows / wanted, exact, len(expected), s.counts["forwarded"],
             s.counts["compacted"],
             {k: v for k, v in s.counts.items() if k.startswith("dropped")}, accounted,
             stored, {k: v for k, v in s.counts.items() if k.startswith("compacted:")}))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch-rows", type=int, default=200_000)
    p.add_argument("--live-rows", type=int, default=2_000)
    p.add_argument("--only", choices=("drain", "ingest", "freshness", "cap"), default=None)
    args = p.parse_args()
    if args.only == "cap":
        return cap()
    rows = generate(args.rows, servers=50, end=utcnow() - timedelta(hours=1))
    if args.only in (None, "ingest"):
        ingest(rows, args.rounds)
    if args.only in (None, "drain"):
        drain(rows, args.rounds, args.batch_rows)
    if args.only in (None, "freshness"):
        freshness(rows, args.batch_rows, args.live_rows)
    if args.only is None:
        cap()


if __name__ == "__main__":
    main()
