"""The receiving side: one connection, one transaction per batch, one ack row.

A batch's rows go in through the central database's own idempotent ingest
(``record_many`` / ``record_snapshots`` with ``on_error='skip'``) and, in the
same transaction, ``forward_acks`` records the batch number and its outcome
for the spool. A forwarder killed after that commit but before its local
bookkeeping reads the ack on restart instead of guessing: the counts stay
exact and nothing is sent twice.

After any failure the forwarder calls :meth:`Central.reset`: the
connection is discarded and the next call opens a new one.
"""

import json
import os

from ..dialects import dialect_for
from ..guard import guarded
from ..repository import MetricRepository
from ..timeutil import utcnow
from . import compaction
from .outcome import Outcome

ACK = ("INSERT INTO forward_acks (spool_id, batch, outcome, acked_at) "
       "VALUES (:spool, :batch, :outcome, :at) ON CONFLICT (spool_id) DO UPDATE SET "
       "batch = excluded.batch, outcome = excluded.outcome, acked_at = excluded.acked_at")


class Central:
    """The central tenant database ``db`` as a forwarding destination."""

    def __init__(self, db, clock=utcnow):
        self.db = db
        self.dialect = dialect_for(db)
        self.repo = MetricRepository(db, clock=clock)

    def open(self):
        if self.db.is_closed():
            self.db.connect()
        return self.repo

    def reset(self):
        """Forget the connection after a failure (it may be dead): the next
        call opens a new one."""
        self.db.discard_connection()

    def identity(self):
        """Where this destination is, for the spool's destination check."""
        db = self.db
        params = getattr(db, "connect_params", {})
        if dialect_for(db, detect=False).name == "sqlite":      # no round trip: may be down
            return "sqlite:" + os.path.abspath(db.database)
        return "postgresql://%s:%s/%s?schema=%s" % (
            params.get("host", ""), params.get("port", 5432), db.database,
            getattr(db, "schema", None) or "public")

    @guarded("forwarding a batch")
    def ship(self, spool_id, batch_no, shipment):
        """Write ``shipment`` and its ack in one central transaction; return
        the :class:`~metricstore.forwarding.outcome.Outcome`."""
        repo = self.open()
        with self.dialect.write_transaction(self.db):
            metrics = repo.record_many(shipment.metrics, on_error="skip") \
                if shipment.metrics else None
            snapshots = repo.record_snapshots(shipment.snapshots, on_error="skip") \
                if shipment.snapshots else None
            outcome = shipment.outcome(metrics, snapshots)
            self.db.execute_sql(self.dialect.sql(ACK), {
                "spool": spool_id, "batch": batch_no, "outcome": json.dumps(outcome.to_json()),
                "at": self.dialect.time_param(utcnow())})
        return outcome

    @guarded("forwarding compacted states")
    def ship_states(self, spool_id, batch_no, states, described, refused_before=()):
        """Merge compacted 5-minute ``states`` ``[(central sid, metric name,
        bucket us, State)]`` and the ack in one central transaction; return
        the :class:`Outcome` (``described``: each state as quarantine shows it;
        ``refused_before``: states the spool could not name, recorded too)."""
        repo = self.open()
        with self.dialect.write_transaction(self.db):
            counts, refused = compaction.merge_central(self.db, repo, states)
            outcome = Outcome(states=counts, quarantined=list(refused_before) + [
                dict(described[i], field="metric", reason=reason) for i, reason in refused])
            self.db.execute_sql(self.dialect.sql(ACK), {
                "spool": spool_id, "batch": batch_no, "outcome": json.dumps(outcome.to_json()),
                "at": self.dialect.time_param(utcnow())})
        return outcome

    @guarded("reading the last forwarded batch", read_only=True)
    def last_ack(self, spool_id):
        """``(batch number, outcome dict)`` of the spool's last committed batch, or None."""
        self.open()
        row = self.db.execute_sql(self.dialect.sql(
            "SELECT batch, outcome FROM forward_acks WHERE spool_id = :spool"),
            {"spool": spool_id}).fetchone()
        return (row[0], json.loads(row[1])) if row else None
