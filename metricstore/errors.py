"""metricstore's exceptions: one base class, a few narrow subclasses.

Every message names the bad input and says how to fix it. Driver errors are
wrapped in :class:`DatabaseError` with the original kept as ``__cause__``.
"""


class MetricstoreError(Exception):
    """Base class of every error metricstore raises on purpose."""


class ConfigurationError(MetricstoreError):
    """A database URL, setting or identifier is malformed or out of range."""


class TimeError(MetricstoreError, ValueError):
    """A datetime is naive, or otherwise cannot be placed on the UTC axis."""


class UnknownMetricError(MetricstoreError, LookupError):
    """A metric name that the tenant's ``metric_types`` does not hold."""


class UnknownServerError(MetricstoreError, LookupError):
    """A server id (or name) that the tenant's ``servers`` does not hold."""


class ValidationError(MetricstoreError, ValueError):
    """A batch held invalid rows; nothing of it was written.

    ``errors`` lists every bad row as :class:`metricstore.validation.RowError`
    (position in the batch, field, reason).
    """

    def __init__(self, errors, what="batch"):
        self.errors = list(errors)
        shown = "\n".join("  " + str(e) for e in self.errors[:20])
        more = len(self.errors) - 20
        if more > 0:
            shown += "\n  ... and %d more" % more
        super().__init__(
            "%d invalid row(s) in the %s; nothing was written (pass "
            "on_error='skip' to store the valid rows and get the rejected "
            "ones back):\n%s" % (len(self.errors), what, shown))


class SchemaError(MetricstoreError):
    """The database is not provisioned, or its schema is not what we expect."""


class MaintenanceError(MetricstoreError):
    """Partition maintenance or retention could not complete."""


class DatabaseError(MetricstoreError):
    """The database driver failed; the driver's exception is ``__cause__``."""


class QueryError(MetricstoreError, ValueError):
    """A call's arguments do not make sense (unknown stat, rate of a gauge,
    empty server name, unknown on_error mode, ...)."""
