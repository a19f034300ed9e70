"""A batch on its way to the central database, and what became of it.

:class:`Shipment` turns spool rows into central rows (central server ids,
metric names); :class:`Outcome` is what the central ingest reported:
inserted, duplicates, expired (older than the central retention: counted,
not an error) and quarantined (refused, kept aside with the reason).
"""

from dataclasses import dataclass, field

from ..ingest import SnapshotSample
from ..timeutil import to_utc


class Incomplete(Exception):
    """The central ingest counted more refused rows than it listed (it keeps
    the first MAX_ROW_ERRORS): the batch is rolled back and sent in halves,
    so that every refused row is quarantined by name."""


@dataclass
class Outcome:
    inserted: int = 0
    duplicates: int = 0
    expired: int = 0
    quarantined: list = field(default_factory=list)   # dicts: row fields + field, reason
    states: dict = field(default_factory=dict)        # compacted:<outcome> -> raw rows

    def to_json(self):
        return {"inserted": self.inserted, "duplicates": self.duplicates,
                "expired": self.expired, "quarantined": self.quarantined,
                "states": self.states}

    @classmethod
    def from_json(cls, data):
        return cls(data["inserted"], data["duplicates"], data["expired"],
                   data["quarantined"], data.get("states", {}))


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
        cids = {lid: cid for lid, (cid, _) in servers.items() if cid is not None}
        self.names = {cid: name for cid, name in servers.values() if cid is not None}
        self.refused = []
        metrics = batch.metrics
        if not ({r[0] for r in metrics} <= cids.keys()
                and {r[1] for r in metrics} <= metric_names.keys()):
            known = []
            for row in metrics:
                if row[0] in cids and row[1] in metric_names:
                    known.append(row)
                else:
                    self.refused.append(self._unknown(row, servers, metric_names))
            metrics = known
        self.metrics = [(cids[sid], metric_names[mid], value, t)
                        for sid, mid, value, t in metrics]
        self.snapshots = []
        for row in batch.snapshots:
            if row[0] in cids:
                self.snapshots.append(SnapshotSample(cids[row[0]], *row[1:]))
            else:
                self.refused.append(dict(describe("snapshot", "#%d" % row[0], row),
                                         field="server_id",
                                         reason="the spool has no server with id %d" % row[0]))

    def __len__(self):
        return len(self.metrics) + len(self.snapshots)

    @staticmethod
    def _unknown(row, servers, metric_names):
        sid, mid, value, t = row
        name = servers.get(sid, (None, None))[1]
        metric = metric_names.get(mid)
        what, ident = ("server", sid) if name is None else ("metric type", mid)
        return dict(describe("metric", name or "#%d" % sid,
                             (sid, metric or "#%d" % mid, value, t)),
                    field="server_id" if name is None else "metric",
                    reason="the spool has no %s with id %d" % (what, ident))

    def quarantine_all(self, reason):
        """Every row, refused by the central database for ``reason``."""
        return list(self.refused) + [
            dict(describe(kind, self.names.get(row[0]), row), field="row", reason=reason)
            for kind, rows in (("metric", self.metrics), ("snapshot", self.snapshots))
            for row in rows]

    def outcome(self, metrics_result, snapshots_result):
        """Combine the two WriteResults (either may be None) into an Outcome."""
        out = Outcome(quarantined=list(self.refused))
        for kind, result, rows in (("metric", metrics_result, self.metrics),
                                   ("snapshot", snapshots_result, self.snapshots)):
            if result is None:
                continue
            out.inserted += result.inserted
            out.duplicates += result.duplicates
            out.expired += result.expired
            by_row = {}
            for error in result.rejected:
                by_row.setdefault(error.position, []).append(error)
            if len(by_row) < result.rejected_rows:
                raise Incomplete(result.rejected_rows)
            for position, errors in sorted(by_row.items()):
                row = rows[position]
                out.quarantined.append(dict(
                    describe(kind, self.names.get(row[0]), row),
                    field=", ".join(e.field for e in errors),
                    reason="; ".join(e.reason for e in errors)))
        return out
