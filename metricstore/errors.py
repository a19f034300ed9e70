"""metricstore's exceptions: one base class, a few narrow subclasses.

Every message names the bad input and says how to fix it. Driver errors are
wrapped in :class:`DatabaseError` with the original kept as ``__cause__``.
"""


class MetricstoreError(Exception):
    """Base class of every error metricstore raises on purpose.

    ``exit_code``: what the CLI exits with: 2 for the caller's mistakes, 1
    for failures of the environment (database, disk, network).
    """

    exit_code = 2


class ConfigurationError(MetricstoreError):
    """A database URL, setting or identifier is malformed or out of range."""


class TimeError(MetricstoreError, ValueError):
    """A datetime is naive, or otherwise cannot be placed on the UTC axis."""


class UnknownMetricError(MetricstoreError, LookupError):
    """A metric name that the tenant's ``metric_types`` does not hold."""


class UnknownServerError(MetricstoreError, LookupError):
    """A server id (or name) that the tenant's ``servers`` does not hold."""


class ValidationError(MetricstoreError, ValueError):
    """A batch held invalid rows; nothing of it was written after ``committed``.

    ``errors`` lists the first 1,000 problems as
    :class:`metricstore.validation.RowError` (position in the batch, field,
    reason); ``rows`` counts every bad row and ``total`` every problem.
    ``committed``: input rows (from the start) already committed before the
    bad one was met, 0 unless the write committed in steps (``commit_every``).
    """

    def __init__(self, errors, what="batch", committed=0, rows=None, total=None):
        self.errors = list(errors)
        self.committed = committed
        self.rows = len({e.position for e in self.errors}) if rows is None else rows
        self.total = len(self.errors) if total is None else total
        shown = "\n".join("  " + str(e) for e in self.errors[:20])
        more = self.total - min(20, len(self.errors))
        if more > 0:
            shown += "\n  ... and %d more" % more
        if committed:
            kept = ("rows 0-%d were committed before the first bad row; nothing after "
                    "them was written (fix the rows and re-run: stored rows are skipped)"
                    % (committed - 1))
        else:
            kept = ("nothing was written (pass on_error='skip' to store the valid rows "
                    "and get the rejected ones back)")
        problems = " (%d problems)" % self.total if self.total != self.rows else ""
        super().__init__("%d invalid row(s)%s in the %s; %s:\n%s"
                         % (self.rows, problems, what, kept, shown))


class SchemaError(MetricstoreError):
    """The database is not provisioned, or its schema is not what we expect."""


class MaintenanceError(MetricstoreError):
    """Partition maintenance or retention could not complete."""

    exit_code = 1


class PartitionConflictError(MaintenanceError):
    """A table not made by metricstore (a detached or hand-made partition)
    stands where a month partition should go; the message names it and the
    fix, ``conflict`` is the :class:`~metricstore.partitioning.plan.Conflict`."""

    def __init__(self, message, conflict=None):
        self.conflict = conflict
        super().__init__(message)


class DatabaseError(MetricstoreError):
    """The database failed; the driver's exception is ``__cause__``.

    The narrow subclasses below say what the environment did; a plain
    DatabaseError is a driver failure nothing narrower describes.
    """

    exit_code = 1


class ConnectError(DatabaseError):
    """The database cannot be reached: refused, timed out, unknown host, or the
    server is starting up / shutting down. Nothing was sent; retry later."""


class AuthenticationError(ConnectError):
    """The server refused the user name or password in the URL."""


class DatabaseMissingError(ConnectError):
    """The URL names a database (or SQLite folder/file) that does not exist."""


class ConnectionLostError(DatabaseError):
    """The connection died while a call was in flight (server restart,
    terminated backend, crashed postmaster, network cut).

    The connection has been closed for real; the next call opens a new one.
    ``written`` says what happened to the call's own transaction: False when
    it cannot have committed, True when it committed before the loss (in
    the call's clean-up), None when the loss hit the COMMIT itself or the
    call commits in several steps (then some or all may have). Writes are
    idempotent, so ``retry_safe`` is always True: re-sending the same batch
    never duplicates a row.
    """

    retry_safe = True

    def __init__(self, message, written=False):
        self.written = written
        super().__init__(message)


class ReadOnlyError(DatabaseError):
    """The database (or SQLite file or folder) cannot be written."""


class DiskFullError(DatabaseError):
    """The disk holding the database is full; nothing of the failed call was kept."""


class LockTimeoutError(DatabaseError):
    """Another writer held a lock longer than the busy / lock timeout allows."""


class StatementTimeoutError(DatabaseError):
    """A statement ran longer than the URL's ``statement_timeout``."""


class QueryError(MetricstoreError, ValueError):
    """A call's arguments do not make sense (unknown stat, rate of a gauge,
    empty server name, unknown on_error mode, ...)."""
