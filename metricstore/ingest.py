"""Validated, idempotent, atomic bulk writes of samples and snapshots.

Rows stream through in chunks (the iterable is never held in memory); every
row is checked and staged in a temp table while no write lock is held, then
the engine's fastest idempotent path writes them in one transaction (or one
per ``commit_every`` rows) (SQLite: INSERT OR IGNORE ... SELECT under BEGIN
IMMEDIATE; PostgreSQL: COPY into the stage, then one
``INSERT ... SELECT ... ON CONFLICT DO NOTHING``). Re-sending a batch inserts
nothing twice: the natural keys make a repeat a no-op.
"""

from dataclasses import dataclass, field
from datetime import datetime
from itertools import islice
from typing import NamedTuple, Optional

from .dialects import dialect_for
from .dialects.postgres import copy_line
from .errors import QueryError, ValidationError
from .partitioning import ensure_months
from .rollups.tiers import TIER_TABLES
from .timeutil import EPOCH, ONE_US, from_micros, month_start
from .models import GAUGE
from .validation import (MAX_CONNECTIONS, MetricRule, RowError, RowErrors, server_id_of,
                         status_problem, time_problem, unknown_metric, unknown_server,
                         value_problem)

CHUNK_ROWS = 50_000
DAY_US = 86_400_000_000
ON_ERROR = ("raise", "skip")


class Sample(NamedTuple):
    """One metric sample; ``collected_at`` an aware datetime."""
    server_id: int
    metric: str
    value: float
    collected_at: datetime


class SnapshotSample(NamedTuple):
    """One server snapshot; percentages 0..100, ``status`` one of models.STATUSES."""
    server_id: int
    collected_at: datetime
    cpu_percent: Optional[float] = None
    memory_percent: Optional[float] = None
    connection_count: Optional[int] = None
    status: str = "online"


@dataclass
class WriteResult:
    """Outcome of a write: rows ``inserted``, ``duplicates`` of stored rows
    (or repeated within the batch), and (only with ``on_error='skip'``) the
    bad rows: ``rejected_rows`` counts them all, ``rejected`` keeps the first
    :data:`~metricstore.validation.MAX_ROW_ERRORS` RowErrors. ``expired``:
    valid rows older than the tenant's retention cutoff, not stored (the
    next maintenance would delete them) and not an error. Every input row is
    counted once: ``inserted + duplicates + rejected_rows + expired``."""
    inserted: int = 0
    duplicates: int = 0
    rejected: list = field(default_factory=list)
    rejected_rows: int = 0
    expired: int = 0


@dataclass(frozen=True)
class Target:
    """A series table as the bulk writers see it: value columns, then time.

    ``key``: the columns that, with the time, make the primary key. Writers
    insert a batch in key order (stable: of rows repeating a key, the first
    still wins), so each series' rows reach the B-trees back to back: inserts
    stay local (SQLite at 500 servers: ~3x the rows/s) and PostgreSQL leaves
    fuller index pages after a large batch (see bench/RESULTS-repository.md).
    """
    table: str
    columns: tuple
    staging_types: tuple
    copy_line: object     # callable(row tuple) -> COPY text line, or a %-format string
    key: tuple = ()

    @property
    def key_positions(self):
        """Positions in a row tuple (columns, then epoch us) of key then time."""
        return tuple(self.columns.index(c) for c in self.key) + (len(self.columns),)


METRICS = Target("metrics", ("server_id", "metric_type_id", "value"),
                 ("integer", "smallint", "double precision"), "%d\t%d\t%r\t%d\n",
                 key=("server_id", "metric_type_id"))
SNAPSHOTS = Target("server_snapshots",
                   ("server_id", "cpu_percent", "memory_percent", "connection_count", "status"),
                   ("integer", "double precision", "double precision", "integer", "text"),
                   copy_line, key=("server_id",))


def _chunks(iterable, size):
    iterator = iter(iterable)
    position = 0
    while True:
        chunk = list(islice(iterator, size))
        if not chunk:
            return
        yield position, chunk
        position += len(chunk)


def write(db, target, rows, check, on_error="raise", chunk_rows=None, commit_every=None,
          tiers=None):
    """Validate ``rows`` with ``check`` and write the good ones to ``target``.

    ``check(position, chunk, errors) -> (good rows, set of UTC day numbers)``,
    ``errors`` a :class:`~metricstore.validation.RowErrors`.
    ``on_error='raise'`` (default): any bad row -> ValidationError listing
    them, and no row after the last commit is written. ``'skip'``: good rows
    are written and the bad ones returned in ``WriteResult.rejected``.
    ``commit_every``: None (default) writes the whole batch in one
    transaction (all or nothing); N commits after every N input rows, so a
    huge input never holds the write lock for long (re-running it after a
    failure is safe: stored rows are skipped as duplicates). ``chunk_rows``:
    rows read and validated at a time, :data:`CHUNK_ROWS` (read at call time)
    when None. The input is read and staged outside any write lock.
    ``tiers``: a :class:`~metricstore.rollups.update.TierUpdater` that the
    writer feeds the staged rows and, inside each flush's transaction, what
    the raw insert stored: the rollup tiers change with the rows or not at all.
    """
    if on_error not in ON_ERROR:
        raise QueryError("on_error must be 'raise' (all or nothing) or 'skip' (store the "
                         "valid rows), got %r" % (on_error,))
    if commit_every is not None and (isinstance(commit_every, bool)
                                     or not isinstance(commit_every, int) or commit_every < 1):
        raise QueryError("commit_every must be None (one transaction) or a positive number "
                         "of rows, got %r" % (commit_every,))
    try:
        rows = iter(rows)
    except TypeError:
        raise QueryError("rows must be an iterable of tuples, got %r" % (rows,)) from None
    size = min(chunk_rows or CHUNK_ROWS, commit_every or CHUNK_ROWS)
    errors, valid, inserted, committed = RowErrors(), 0, 0, 0
    days, pending = set(), 0
    tables = (target.table,) + (TIER_TABLES if tiers is not None else ())
    with dialect_for(db).writer(db, target, tiers) as writer:
        def flush():
            # Only the months that hold rows get a partition, however far apart.
            months = sorted({month_start(from_micros(d * DAY_US)) for d in days})
            days.clear()
            return writer.flush(lambda: [ensure_months(db, t, months) for t in tables])

        for position, chunk in _chunks(rows, size):
            good, chunk_days = check(position, chunk, errors)
            valid += len(good)
            if errors.rows and on_error == "raise":
                continue                     # keep validating, stop writing
            days |= chunk_days
            writer.add(good)
            pending += len(chunk)
            if commit_every and pending >= commit_every:
                inserted += flush()
                committed, pending = position + len(chunk), 0
        if errors.rows and on_error == "raise":
            raise ValidationError(errors.kept, committed=committed, rows=errors.rows,
                                  total=errors.total)
        inserted += flush()
    return WriteResult(inserted, valid - inserted, errors.kept, errors.rows, errors.expired)


def metric_checker(rules, server_ids, bounds):
    """A ``check`` for metric rows ``(server_id, metric, value, collected_at)``.

    The hot loop is plain comparisons on exact types (the value bounds are
    finite, so NaN, infinities and huge integers fail them exactly); any row
    it does not accept goes through :func:`check_metric_row`, which either
    normalises it (numpy numbers, integer subclasses) or explains every problem.
    """
    # Plain tuples and locals in the hot loop: (id, low, high) per metric name.
    limits = {name: (rule.id, rule.low, rule.high) for name, rule in rules.items()}
    epoch, one_us, day_us = EPOCH, ONE_US, DAY_US
    min_micros, max_micros = bounds.low, bounds.high
    int_, float_ = int, float

    def check(position, chunk, errors):
        good, days = [], set()
        append = good.append
        last_ts = last_us = None
        seen = {}
        for pos, row in enumerate(chunk, position):
            try:
                sid, name, value, ts = row
                mid, low, high = limits[name]
                # The rows of one sample share one datetime object: convert it
                # once (rows in key order, as the forwarder sends them, repeat
                # times that are not adjacent: those come from ``seen``).
                if ts is not last_ts:
                    us = seen.get(ts)
                    if us is None:
                        us = seen[ts] = (ts - epoch) // one_us
                        days.add(us // day_us)
                    last_ts, last_us = ts, us
                else:
                    us = last_us
                ok = (type(sid) is int_ and sid in server_ids
                      and (type(value) is float_ or type(value) is int_)
                      and low <= value <= high
                      and min_micros <= us <= max_micros)
            except (TypeError, ValueError, KeyError):
                ok = False
            if ok:
                append((sid, mid, value, us))
                continue
            fixed, problems = check_metric_row(pos, row, rules, server_ids, bounds)
            if problems:
                errors.add(problems)
            elif fixed is None:
                errors.expired += 1
            else:
                append(fixed)
                days.add(fixed[3] // day_us)
        return good, days
    return check


def check_metric_row(pos, row, rules, server_ids, bounds):
    """``(normalised row, [])`` if ``row`` is acceptable, ``(None, [])`` if it
    is valid but older than the retention cutoff, else ``(None, [RowError...])``."""
    try:
        sid, name, value, ts = row
    except (TypeError, ValueError):
        return None, [RowError(pos, "row", "expected (server_id, metric, value, collected_at), "
                               "got %r" % (row,), row)]
    out = []
    server_id = server_id_of(sid)
    if server_id is None or server_id not in server_ids:
        out.append(RowError(pos, "server_id", unknown_server(sid), row))
    rule = rules.get(name) if isinstance(name, str) else None
    if rule is None:
        out.append(RowError(pos, "metric", unknown_metric(name, rules), row))
    else:
        problem = value_problem(value, rule)
        if problem:
            out.append(RowError(pos, "value", problem, row))
    problem = time_problem(ts, bounds)
    if problem:
        out.append(RowError(pos, "collected_at", problem, row))
    if out:
        return None, out
    micros = (ts - EPOCH) // ONE_US
    if bounds.expired(micros):
        return None, []
    return (server_id, rule.id, float(value), micros), []


def snapshot_checker(server_ids, bounds):
    """A ``check`` for snapshot rows (see :class:`SnapshotSample`)."""
    percent = MetricRule(0, "percent", GAUGE, "%", 0.0, 100.0)
    count = MetricRule(0, "connection_count", GAUGE, "count", 0.0, MAX_CONNECTIONS)

    def check(position, chunk, errors):
        good, days = [], set()
        for pos, row in enumerate(chunk, position):
            if isinstance(row, dict):
                try:
                    row = SnapshotSample(**row)
                except TypeError as exc:
                    errors.add([RowError(pos, "row", str(exc), row)])
                    continue
            try:
                sid, ts, cpu, mem, conns, status = SnapshotSample(*row)
            except TypeError:
                errors.add([RowError(pos, "row", "expected (server_id, collected_at, "
                                     "cpu_percent, memory_percent, connection_count, "
                                     "status), got %r" % (row,), row)])
                continue
            found = []
            server_id = server_id_of(sid)
            if server_id is None or server_id not in server_ids:
                found.append(RowError(pos, "server_id", unknown_server(sid), row))
            problem = time_problem(ts, bounds)
            if problem:
                found.append(RowError(pos, "collected_at", problem, row))
            for name, value, rule in (("cpu_percent", cpu, percent),
                                      ("memory_percent", mem, percent),
                                      ("connection_count", conns, count)):
                problem = value is not None and value_problem(value, rule)
                if problem:
                    found.append(RowError(pos, name, problem, row))
            if conns is not None and not found and conns != int(conns):
                found.append(RowError(pos, "connection_count",
                                      "must be a whole number, got %r" % (conns,), row))
            problem = status_problem(status)
            if problem:
                found.append(RowError(pos, "status", problem, row))
            if found:
                errors.add(found)
                continue
            us = (ts - EPOCH) // ONE_US
            if bounds.expired(us):
                errors.expired += 1
                continue
            good.append((server_id, None if cpu is None else float(cpu),
                         None if mem is None else float(mem),
                         None if conns is None else int(conns), status, us))
            days.add(us // DAY_US)
        return good, days
    return check
