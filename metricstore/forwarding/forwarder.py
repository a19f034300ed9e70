"""The shipping loop: spool -> central database, exactly once in effect.

One batch at a time, each in three steps:

1. local write transaction: read up to ``batch_rows`` outbox entries and
   record them as the batch in flight (its number and seq ranges);
2. central transaction: the rows through the central ingest plus the ack
   row for (spool, batch number);
3. local write transaction: delete the entries, add the outcome to the
   counters, quarantine refused rows, clear the batch in flight.

Killed anywhere, the forwarder finds on restart either no batch in flight,
or one whose ack is (it was committed: step 3 runs with the ack's outcome)
or is not (it was not: its entries are still in the outbox) in the central
database. While a backlog drains, every full oldest-first (backfill) batch
is followed by a newest-first (live) batch, so fresh samples do not wait
behind the backlog. Central failures are retried forever with exponential
backoff and jitter; the wait is an Event, so :meth:`stop` ends it at once.
"""

import logging
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import peewee as pw

from ..dialects import dialect_for
from ..guard import DRIVER_ERRORS, guarded
from ..errors import ConfigurationError, DatabaseError, MetricstoreError
from ..timeutil import utcnow
from . import cap as spool_cap
from . import compaction, outbox, quarantine, state
from .backoff import Backoff
from .central import Central
from .mapping import ServerMap
from .outcome import Incomplete, Outcome, Shipment

log = logging.getLogger("metricstore.forwarding")

try:  # psycopg2 is an optional extra
    import psycopg2
    DRIVERS = (pw, sqlite3, psycopg2)
except ImportError:  # pragma: no cover - SQLite-only install
    DRIVERS = (pw, sqlite3)

RETRYABLE = (MetricstoreError,) + DRIVER_ERRORS
# The central database refused a statement (a rule only it knows): not an outage.
POISON = tuple(getattr(d, name) for d in DRIVERS for name in ("IntegrityError", "DataError"))


def is_poison(exc):
    """True if ``exc`` (or the driver error chained behind it) is a refusal."""
    while exc is not None:
        if isinstance(exc, POISON):
            return True
        exc = exc.__cause__ or exc.__context__
    return False
LOCK_NAME = "forwarder"


class Forwarder:
    """Forward the spool ``local_db`` into ``central_db`` (both peewee
    databases from :func:`metricstore.connect`, provisioned).

    ``batch_rows``: entries per backfill batch; ``live_rows``: per live
    batch; ``poll_s``: pause when the spool is empty (follow mode);
    ``backoff``: a :class:`Backoff`; ``cap``: a :class:`SpoolCap` (None: no
    cap); ``local_retention``: forwarded rows older than this (by
    collected_at, UTC) are deleted locally (None: kept);
    ``maintain_every_s``: how often pruning and the cap run; ``state_rows``:
    compacted 5-minute states per batch (see :mod:`.compaction`); ``retarget``:
    accept a destination other than the one this spool forwarded to before
    (the server mapping is rebuilt). Only one forwarder runs per spool.
    """

    def __init__(self, local_db, central_db, batch_rows=200_000, live_rows=2_000, poll_s=1.0,
                 backoff=None, cap=None, local_retention=timedelta(days=7),
                 maintain_every_s=60.0, retarget=False, clock=utcnow, state_rows=5_000):
        if batch_rows < 1 or live_rows < 1 or state_rows < 1:
            raise ConfigurationError("batch_rows, live_rows and state_rows must be >= 1")
        self.local = self.db = local_db          # .db: what guard names in errors
        self.dialect = dialect_for(local_db)
        self.central = Central(central_db)
        self.batch_rows, self.live_rows, self.poll_s = batch_rows, live_rows, poll_s
        self.state_rows = state_rows
        self.backoff = backoff or Backoff()
        self.cap = cap
        self.local_retention = local_retention
        self.maintain_every_s = maintain_every_s
        self.retarget = retarget
        self.clock = clock
        self.stopping = threading.Event()
        self.totals = Outcome()
        self.recovered = 0            # batches found committed centrally on (re)start
        self._release = None
        self._metric_names = {}
        self._unsure = True           # a batch may be in flight from an earlier run
        self._last_maintenance = None
        self._ahead = None            # the next backfill batch, read while one was sent
        self._pool = None

    # -- life cycle ------------------------------------------------------------------
    @guarded("forward")
    def start(self):
        """Take the spool's forwarder lock, enable the spool, check the destination."""
        if self._release is not None:
            return
        if self.local.is_closed():
            self.local.connect()
        release = self.dialect.process_lock(self.local, LOCK_NAME)
        if release is None:
            raise ConfigurationError("another forwarder is already running on %s; run one "
                                     "per spool" % self.local.database)
        try:
            self.spool_id = outbox.enable_spool(self.local)
            current = state.get(self.local)
            where = self.central.identity()
            if current["destination"] not in (None, where):
                if not self.retarget:
                    raise ConfigurationError(
                        "this spool forwards to %s, not %s; server ids are mapped per "
                        "destination: pass retarget=True (--retarget) to switch"
                        % (current["destination"], where))
                ServerMap(self.local).forget()
            state.update(self.local, destination=where)
            self.batch_no = current["batch"] or 0
            self.servers = ServerMap(self.local)
        except BaseException:
            release()
            raise
        self._release = release

    def stop(self):
        """Ask :meth:`run` to return after the current step (thread-safe)."""
        self.stopping.set()

    def close(self):
        """Release the forwarder lock (and the read-ahead thread's connection)."""
        if self._pool is not None:
            self._pool.submit(self.local.close).result()
            self._pool.shutdown()
            self._pool = None
        self._ahead = None
        if self._release is not None:
            self._release()
            self._release = None

    def run(self, follow=False):
        """Forward until the spool is empty (``follow=False``: a failure
        raises) or, with ``follow``, until :meth:`stop` (failures are retried
        with backoff, forever). Returns the :class:`Outcome` totals."""
        self.start()
        try:
            while not self.stopping.is_set():
                try:
                    shipped = self.cycle()
                    if self._maintenance_due() or not (shipped or follow):
                        self.maintain()
                except RETRYABLE as exc:
                    self._failed(exc)
                    if not follow:
                        raise self._give_up(exc) from exc
                    self.stopping.wait(self.backoff.next())
                    continue
                self.backoff.reset()
                if not shipped:
                    if not follow:
                        break
                    self.stopping.wait(self.poll_s)
        finally:
            self.close()
        return self.totals

    # -- one step ----------------------------------------------------------------------
    def cycle(self):
        """Ship one backfill batch, and a live batch after it if the backfill
        was full (a backlog). Returns the entries shipped."""
        if self._unsure:
            self._recover()
        shipped = self._ship_compacted()
        backfill = self._ship_next(self.batch_rows, newest_first=False)
        shipped += backfill
        if backfill >= self.batch_rows:
            shipped += self._ship_next(self.live_rows, newest_first=True)
        return shipped

    def _ship_compacted(self):
        """Ship one batch of waiting compacted 5-minute states (the spool's
        oldest data); returns how many."""
        if not compaction.any_waiting(self.local):
            return 0
        with self.dialect.write_transaction(self.local), self.dialect.lock(
                self.local, outbox.LOCK):
            ranges, states = compaction.read(self.local, self.state_rows)
            if not states:
                return 0
            self.batch_no += 1
            inflight = {"batch": self.batch_no, "ranges": [], "compacted": ranges,
                        "missing": 0, "entries": 0}
            state.update(self.local, batch=self.batch_no, inflight=inflight)
        self._unsure = True
        repo = self.central.open()
        servers = self.servers.resolve({s[1] for s in states}, repo)
        names = self._names({s[2] for s in states})
        ship, described, unknown = [], [], []
        for _, sid, mid, bucket, st in states:
            cid, server = servers.get(sid, (None, None))
            metric = names.get(mid)
            desc = compaction.describe(server or "#%d" % sid, metric or "#%d" % mid, bucket, st)
            if cid is None or metric is None:
                what, ident = ("server", sid) if cid is None else ("metric type", mid)
                unknown.append(dict(desc, field="server_id" if cid is None else "metric",
                                    reason="the spool has no %s with id %d" % (what, ident)))
            else:
                ship.append((cid, metric, bucket, st))
                described.append(desc)
        try:
            outcome = (self.central.ship_states(self.spool_id, inflight["batch"], ship,
                                                described, unknown)
                       if ship else Outcome(quarantined=unknown))
        except RETRYABLE as exc:
            if not is_poison(exc):
                raise
            reason = "the central database refused it: %s" % str(exc).strip().splitlines()[0]
            outcome = Outcome(quarantined=unknown + [dict(d, field="row", reason=reason)
                                                     for d in described])
        self._acknowledge(inflight, outcome)
        self._unsure = False
        return len(states)

    def _ship_next(self, limit, newest_first):
        """Read, mark and send one batch. A full backfill batch starts the read
        of the next one in a helper thread while the central database works
        (the read is checked again before that batch is marked)."""
        ahead, self._ahead = self._ahead, None
        with self.dialect.write_transaction(self.local), self.dialect.lock(
                self.local, outbox.LOCK):
            if newest_first:
                above = ahead.last_seq if ahead else None
                batch = outbox.read(self.local, limit, newest_first=True, above=above)
                self._ahead = ahead
            elif ahead is not None and ahead.entries and outbox.still_there(self.local, ahead):
                batch = ahead
            else:
                batch = outbox.read(self.local, limit)
            if not batch:
                return 0
            inflight = self._mark(batch)
        pending = None
        if not newest_first and len(batch) >= limit:
            pending = self._reader().submit(outbox.read, self.local, limit,
                                            above=batch.last_seq)
        try:
            self._send(inflight, batch)
        finally:
            if pending is not None:
                try:
                    self._ahead = pending.result()
                except RETRYABLE:
                    self._ahead = None
        return len(batch)

    def _reader(self):
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="metricstore-forward-read")
        return self._pool

    def _ship_ranges(self, ranges):
        with self.dialect.write_transaction(self.local), self.dialect.lock(
                self.local, outbox.LOCK):
            batch = outbox.read_ranges(self.local, ranges)
            if not batch:
                return 0
            inflight = self._mark(batch)
        self._send(inflight, batch)
        return len(batch)

    def _mark(self, batch):
        self.batch_no += 1
        inflight = {"batch": self.batch_no, "ranges": batch.ranges, "missing": batch.missing,
                    "entries": batch.entries}
        state.update(self.local, batch=self.batch_no, inflight=inflight)
        return inflight

    def _send(self, inflight, batch):
        self._unsure = True
        repo = self.central.open()
        local_ids = {r[0] for r in batch.metrics} | {r[0] for r in batch.snapshots}
        servers = self.servers.resolve(local_ids, repo)
        shipment = Shipment(batch, servers, self._names({r[1] for r in batch.metrics}))
        try:
            outcome = (self.central.ship(self.spool_id, inflight["batch"], shipment)
                       if len(shipment) else shipment.outcome(None, None))
        except Incomplete:
            self._split(inflight)
            return
        except RETRYABLE as exc:
            if not is_poison(exc):
                raise
            if batch.entries > 1:
                self._split(inflight)
                return
            outcome = Outcome(quarantined=shipment.quarantine_all(
                "the central database refused it: %s" % str(exc).strip().splitlines()[0]))
        self._acknowledge(inflight, outcome)
        self._unsure = False

    def _split(self, inflight):
        """A statement the central database refused: ship each half apart,
        down to the single row, which is quarantined."""
        state.update(self.local, inflight=None)
        seqs = [s for lo, hi in inflight["ranges"] for s in range(lo, hi + 1)]
        half = len(seqs) // 2
        log.info("batch %d refused centrally; splitting %d entries", inflight["batch"],
                 len(seqs))
        for part in (seqs[:half], seqs[half:]):
            self._ship_ranges(outbox.ranges(part))

    def _acknowledge(self, inflight, outcome):
        now = utcnow()
        with self.dialect.write_transaction(self.local), self.dialect.lock(
                self.local, outbox.LOCK):
            outbox.delete_ranges(self.local, inflight["ranges"])
            compaction.delete(self.local, inflight.get("compacted"))
            quarantine.add(self.local, outcome.quarantined, now)
            state.add_counts(self.local, dict(outcome.states, **{
                state.FORWARDED: outcome.inserted, state.DUPLICATE: outcome.duplicates,
                state.EXPIRED: outcome.expired,
                # a quarantined compacted state stands for its raw rows
                state.QUARANTINED: sum(q.get("rows", 1) for q in outcome.quarantined),
                state.DROPPED + "missing": inflight["missing"]}))
            state.update(self.local, inflight=None, last_success_at=now)
        t = self.totals
        t.inserted += outcome.inserted
        t.duplicates += outcome.duplicates
        t.expired += outcome.expired
        t.quarantined += outcome.quarantined
        for name, rows in outcome.states.items():
            t.states[name] = t.states.get(name, 0) + rows

    def _recover(self):
        """Settle a batch left in flight by an earlier run or a failure."""
        inflight = state.get(self.local)["inflight"]
        if inflight:
            ack = self.central.last_ack(self.spool_id)
            if ack is not None and ack[0] == inflight["batch"]:
                log.info("batch %d was committed centrally before the interruption; "
                         "recording its outcome", inflight["batch"])
                self.recovered += 1
                self._acknowledge(inflight, Outcome.from_json(ack[1]))
            else:
                with self.dialect.write_transaction(self.local):
                    state.update(self.local, inflight=None)
        self._unsure = False

    def _names(self, metric_ids):
        if not metric_ids <= set(self._metric_names):
            self._metric_names = dict(self.local.execute_sql(
                "SELECT id, name FROM metric_types"))
        return self._metric_names

    def _failed(self, exc):
        self._unsure = True
        self._ahead = None
        message = "%s: %s" % (type(exc).__name__, str(exc).strip().splitlines()[0]
                              if str(exc).strip() else "")
        log.warning("forwarding failed (%s); retrying", message)
        self.central.reset()
        try:
            with self.dialect.write_transaction(self.local):
                state.update(self.local, last_error_at=utcnow(), last_error=message[:1000])
        except RETRYABLE:
            log.warning("could not record the error in the spool either")

    def _give_up(self, exc):
        """The error ``run()`` raises in once mode: the same kind, saying that
        the rows wait in the spool."""
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        text = ("forwarding from %s stopped: %s; nothing is lost (the rows wait in the "
                "spool): retry, or run with --follow to retry until the central database "
                "is back" % (self.local.database, detail))
        if not isinstance(exc, MetricstoreError):
            return DatabaseError(text)
        try:
            return type(exc)(text)
        except TypeError:             # an error class that takes other arguments
            return exc

    # -- the spool's size -----------------------------------------------------------------
    def _maintenance_due(self):
        return (self._last_maintenance is None
                or time.monotonic() - self._last_maintenance >= self.maintain_every_s)

    def maintain(self):
        """Prune forwarded rows past the local retention and enforce the cap."""
        self._last_maintenance = time.monotonic()
        return spool_cap.enforce(self.local, self.cap, self.local_retention, now=self.clock())
