"""The DDL that changes partitions: each step a short transaction under the
tenant's partition lock, re-checking the catalog after taking it, with a lock
timeout and retry so that maintenance never stalls ingest for long.
"""

import logging
import random
import time

import peewee as pw

from ..errors import MaintenanceError, PartitionConflictError
from ..guard import cause
from .catalog import blocker, live_partitions, names_taken
from .strategy import MARKER
from ..rollups.tiers import TIER_TABLES

log = logging.getLogger(__name__)

LOCK_NAME = "partitions"
LOCK_TIMEOUT_S = 2
ATTEMPTS = 8
LOCK_NOT_AVAILABLE = "55P03"
DEADLOCK = "40P01"

CREATE_PARTITION = "CREATE TABLE {part} PARTITION OF {parent} FOR VALUES FROM (%s) TO (%s)"
CREATE_DEFAULT = "CREATE TABLE {part} PARTITION OF {parent} DEFAULT"
CREATE_DETACHED = "CREATE TABLE {part} (LIKE {parent} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
MARK = "COMMENT ON TABLE {part} IS %s"
# Parent, then default: the order in which a writer routing a row takes them.
LOCK_PARENT_AND_DEFAULT = ("LOCK TABLE {parent} IN ACCESS EXCLUSIVE MODE; "
                           "LOCK TABLE {default} IN ACCESS EXCLUSIVE MODE")
COUNT_RANGE = "SELECT count(*) FROM {default} WHERE {time} >= %s AND {time} < %s"
MOVE_ROWS = ("WITH moved AS (DELETE FROM {default} WHERE {time} >= %s "
             "AND {time} < %s RETURNING *) INSERT INTO {part} SELECT * FROM moved")
ATTACH = "ALTER TABLE {parent} ATTACH PARTITION {part} FOR VALUES FROM (%s) TO (%s)"
DETACH = "ALTER TABLE {parent} DETACH PARTITION {part}"
DROP = "DROP TABLE {part}"


def literal(dt):
    """A partition bound as an explicit UTC literal, e.g. '2026-11-01 00:00:00+00:00'."""
    return dt.strftime("%Y-%m-%d %H:%M:%S+00:00")


def default_name(table):
    return table + "_default"


def retrying(db, dialect, step, what):
    """Run ``step()`` in a transaction holding the partition lock; retry on lock timeouts."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            with db.atomic():
                with dialect.lock(db, LOCK_NAME, timeout_s=LOCK_TIMEOUT_S):
                    return step()
        except pw.OperationalError as exc:
            code = getattr(cause(exc), "pgcode", None)
            if code not in (LOCK_NOT_AVAILABLE, DEADLOCK) or attempt == ATTEMPTS:
                raise MaintenanceError("%s failed after %d attempt(s): %s; is a long "
                                       "transaction holding the table? retry later"
                                       % (what, attempt, exc)) from exc
            pause = min(5.0, 0.1 * 2 ** attempt) * (0.5 + random.random())
            log.info("%s: lock busy (attempt %d), retrying in %.2fs", what, attempt, pause)
            time.sleep(pause)


def ensure_default(db, dialect, table):
    """Create ``table``'s DEFAULT partition if missing; return its name or None."""
    def step():
        if any(p.is_default for p in live_partitions(db, dialect, table, sizes=False)):
            return None
        part = default_name(table)
        db.execute_sql(CREATE_DEFAULT.format(part=dialect.quote(part),
                                             parent=dialect.quote(table)))
        db.execute_sql(MARK.format(part=dialect.quote(part)), (MARKER,))
        return part
    return retrying(db, dialect, step, "creating %s's default partition" % table)


def create_month(db, dialect, strategy, table, start):
    """Create the partition of the month at ``start`` unless one covers it.

    Rows of that month waiting in the default partition are moved into the
    new partition in the same transaction. Returns ``(name or None, moved)``.
    """
    start, end = strategy.bounds(start)
    name = strategy.name(table, start)
    q = dialect.quote

    def step():
        live = live_partitions(db, dialect, table, sizes=False)
        conflict = blocker(table, name, start, end, live, names_taken(db, dialect, table,
                                                                     [name]))
        if conflict is not None:
            raise PartitionConflictError("cannot create partition %s: %s" % (name, conflict),
                                         conflict)
        if any(p.overlaps(start, end) for p in live):
            return None, 0
        default = next((p.name for p in live if p.is_default), None)
        fmt = dict(part=q(name), parent=q(table), default=q(default or ""),
                   time="bucket" if table in TIER_TABLES else "collected_at")
        waiting = 0
        if default:
            # Lock first: a row routed to the default between the count and the
            # CREATE would make the new partition's constraint check fail.
            db.execute_sql(LOCK_PARENT_AND_DEFAULT.format(**fmt))
            (waiting,) = db.execute_sql(COUNT_RANGE.format(**fmt), (start, end)).fetchone()
        if not waiting:
            db.execute_sql(CREATE_PARTITION.format(**fmt), (literal(start), literal(end)))
            db.execute_sql(MARK.format(**fmt), (MARKER,))
            return name, 0
        db.execute_sql(CREATE_DETACHED.format(**fmt))
        db.execute_sql(MARK.format(**fmt), (MARKER,))
        moved = db.execute_sql(MOVE_ROWS.format(**fmt), (start, end)).rowcount
        db.execute_sql(ATTACH.format(**fmt), (literal(start), literal(end)))
        dialect.attached(db, name)
        return name, moved

    return retrying(db, dialect, step, "creating partition %s" % name)


def drop_partition(db, dialect, table, name):
    """Detach and drop partition ``name`` if it is still there and ours."""
    def step():
        live = {p.name: p for p in live_partitions(db, dialect, table, sizes=False)}
        part = live.get(name)
        if part is None or not part.owned or part.is_default:
            return False
        fmt = dict(part=dialect.quote(name), parent=dialect.quote(table))
        db.execute_sql(DETACH.format(**fmt))
        db.execute_sql(DROP.format(**fmt))
        return True
    return retrying(db, dialect, step, "dropping partition %s" % name)

