"""The spool's bookkeeping row and counters, in the local database.

``forward_state`` holds one row (id = 1); ``forward_counts`` one row per
outcome. Every function runs in the caller's transaction, if any.
"""

import json

from ..dialects import dialect_for

FORWARDED, DUPLICATE, EXPIRED = "forwarded", "duplicate", "expired"
QUARANTINED, COMPACTED, PRUNED = "quarantined", "compacted", "pruned"
DROPPED = "dropped:"            # + reason: thinned, cap, missing
# COMPACTED + ":" + forwarded, duplicate, expired, overlap: what became of
# the compacted rows centrally (see compaction.py)
COUNTS = (FORWARDED, DUPLICATE, EXPIRED, QUARANTINED, COMPACTED)
TIME_FIELDS = ("enabled_at", "last_success_at", "last_error_at")
FIELDS = ("spool_id", "destination", "enabled_at", "batch", "inflight", "thinned_through",
          "last_success_at", "last_error_at", "last_error")

ADD_COUNT = ("INSERT INTO forward_counts (name, rows) VALUES (:name, :rows) "
             "ON CONFLICT (name) DO UPDATE SET rows = forward_counts.rows + excluded.rows")


def ensure_row(db):
    db.execute_sql(dialect_for(db).sql(
        "INSERT INTO forward_state (id) VALUES (1) ON CONFLICT (id) DO NOTHING"))


def get(db):
    """The state row as a dict (times aware UTC, ``inflight`` decoded)."""
    d = dialect_for(db)
    row = db.execute_sql("SELECT %s FROM forward_state WHERE id = 1" % d.cols(FIELDS)).fetchone()
    if row is None:
        return dict.fromkeys(FIELDS)
    out = dict(zip(FIELDS, row))
    for name in TIME_FIELDS:
        out[name] = d.time_result(out[name])
    out["inflight"] = json.loads(out["inflight"]) if out["inflight"] else None
    return out


def update(db, **fields):
    """Set ``fields`` of the state row (datetimes aware; ``inflight`` a dict or None)."""
    d = dialect_for(db)
    params = {}
    for name, value in fields.items():
        if name in TIME_FIELDS and value is not None:
            value = d.time_param(value)
        elif name == "inflight" and value is not None:
            value = json.dumps(value)
        params[name] = value
    sets = ", ".join("%s = :%s" % (d.quote(n), n) for n in params)
    db.execute_sql(d.sql("UPDATE forward_state SET %s WHERE id = 1" % sets), params)


def add_counts(db, counts):
    """Add ``{name: rows}`` to the counters (zeros are skipped)."""
    sql = dialect_for(db).sql(ADD_COUNT)
    for name, rows in counts.items():
        if rows:
            db.execute_sql(sql, {"name": name, "rows": int(rows)})


def counts(db):
    """``{name: rows}`` with every standard counter present (read-only)."""
    out = dict.fromkeys(COUNTS, 0)
    out.update(db.execute_sql("SELECT name, rows FROM forward_counts ORDER BY name"))
    return out
