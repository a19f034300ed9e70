"""Rows the central database refused, kept aside with the reason.

A poison row never blocks the spool: it leaves the outbox in the same
local transaction as the rest of its batch and lands here.
"""

import json
from datetime import datetime
from typing import NamedTuple

from ..dialects import dialect_for
from ..timeutil import utcnow

ADD = ("INSERT INTO forward_quarantine (quarantined_at, server_name, metric, collected_at, "
       "row, field, reason) VALUES (:at, :server, :metric, :t, :row, :field, :reason)")


class Quarantined(NamedTuple):
    id: int
    quarantined_at: datetime
    server_name: str
    metric: str            # None for a snapshot
    collected_at: datetime
    row: dict
    field: str
    reason: str


def add(db, entries, now=None):
    """Store quarantine ``entries`` (dicts from outcome.describe + field, reason)."""
    d = dialect_for(db)
    sql = d.sql(ADD)
    at = d.time_param(now or utcnow())
    for e in entries:
        row = {k: v for k, v in e.items() if k not in ("field", "reason")}
        db.execute_sql(sql, {
            "at": at, "server": e["server"], "metric": e.get("metric"),
            "t": d.time_param(datetime.fromisoformat(e["collected_at"])),
            "row": json.dumps(row), "field": e["field"], "reason": e["reason"]})


def rows(db, limit=100):
    """The most recent ``limit`` quarantined rows, newest first (read-only)."""
    d = dialect_for(db)
    out = []
    for qid, at, server, metric, t, row, fld, reason in db.execute_sql(d.sql(
            "SELECT id, quarantined_at, server_name, metric, collected_at, row, field, reason "
            "FROM forward_quarantine ORDER BY id DESC LIMIT :limit"), {"limit": limit}):
        out.append(Quarantined(qid, d.time_result(at), server, metric, d.time_result(t),
                               json.loads(row), fld, reason))
    return out
