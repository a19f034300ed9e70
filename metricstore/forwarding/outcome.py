"""A batch on its way to the central database, and what became of it.

:class:`Shipment` turns spool rows into central rows (central server ids,
metric names); :class:`Outcome` is what the central ingest reported:
inserted, duplicates, expired (older than the central retention: counted,
not an error) and quarantined (refused, kept aside with the reason).
"""

from dataclasses import dataclass, field

from ..ingest import SnapshotSample
from ..timeutil import to_utc

RETENTION_REASON = "older than the tenant's retention"


def is_expired(error):
    """True for a row the central side refused only for being older than its
    retention. (Until ``WriteResult.expired`` reports them itself.)"""
    return error.field == "collected_at" and RETENTION_REASON in error.reason


@dataclass
class Outcome:
    inserted: int = 0
    duplicates: int = 0
    expired: int = 0
    quarantined: list = field(default_factory=list)   # dicts: row fields + field, reason

    def to_json(self):
        return {"inserted": self.inserted, "duplicates": self.duplicates,
                "expired": self.expired, "quarantined": self.quarantined}

    @classmethod
    def from_json(cls, data):
        return cls(data["inserted"], data["duplicates"], data["expired"],
                   data["quarantined"])


def describe(kind, server, row):
    """A spool row as stored in quarantine (JSON-able)."""
    if kind == "metric":
        _, metric, value, t = row
        return {"kind": kind, "server": server, "metric": metric, "value": value,
                "collected_at": to_utc(t).isoformat()}
    _, t, cpu, mem, conns, status = row
    return {"kind": kind, "server": server, "collected_at": to_utc(t).isoformat(),
            "cpu_percent": cpu, "memory_percent": mem, "connection_count": conns,
            "status": status}


class Shipment:
    """The central form of a :class:`~metricstore.forwarding.outbox.Batch`.

    ``servers``: ``{local id: (central id, name)}``; ``metric_names``:
    ``{local metric_type_id: name}``. Rows whose server or metric the spool
    itself cannot name are quarantined here, before anything is sent.
    """

    def __init__(self, batch, servers, metric_names):
        self.metrics, self.snapshots = [], []
        self._metric_servers, self._snapshot_servers = [], []
        self.refused = []
        for sid, mid, value, t in batch.metrics:
            cid, name = servers.get(sid, (None, None))
            metric = metric_names.get(mid)
            if cid is None or metric is None:
                self.refused.append(dict(
                    describe("metric", name or "#%d" % sid, (sid, metric or "#%d" % mid, value, t)),
                    field="server_id" if cid is None else "metric",
                    reason="the spool has no %s with id %d" % (
                        "server" if cid is None else "metric type", sid if cid is None else mid)))
                continue
            self.metrics.append((cid, metric, value, t))
            self._metric_servers.append(name)
        for sid, t, cpu, mem, conns, status in batch.snapshots:
            cid, name = servers.get(sid, (None, None))
            if cid is None:
                self.refused.append(dict(
                    describe("snapshot", "#%d" % sid, (sid, t, cpu, mem, conns, status)),
                    field="server_id", reason="the spool has no server with id %d" % sid))
                continue
            self.snapshots.append(SnapshotSample(cid, t, cpu, mem, conns, status))
            self._snapshot_servers.append(name)

    def __len__(self):
        return len(self.metrics) + len(self.snapshots)

    def outcome(self, metrics_result, snapshots_result):
        """Combine the two WriteResults (either may be None) into an Outcome."""
        out = Outcome(quarantined=list(self.refused))
        for kind, result, rows, servers in (
                ("metric", metrics_result, self.metrics, self._metric_servers),
                ("snapshot", snapshots_result, self.snapshots, self._snapshot_servers)):
            if result is None:
                continue
            out.inserted += result.inserted
            out.duplicates += result.duplicates
            reported = getattr(result, "expired", 0)
            out.expired += reported if isinstance(reported, int) else len(reported)
            by_row = {}
            for error in result.rejected:
                by_row.setdefault(error.position, []).append(error)
            for position, errors in sorted(by_row.items()):
                if all(is_expired(e) for e in errors):
                    out.expired += 1
                    continue
                out.quarantined.append(dict(
                    describe(kind, servers[position], rows[position]),
                    field=", ".join(e.field for e in errors),
                    reason="; ".join(e.reason for e in errors)))
        return out
