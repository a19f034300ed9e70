"""Tenant settings: one row in ``tenant_settings``."""

from .errors import ConfigurationError, SchemaError
from .guard import guarded
from .models import RETENTION_DAYS_DEFAULT, RETENTION_DAYS_RANGE, TenantSettings
from .timeutil import utcnow


def check_retention_days(days):
    """Return ``days`` if it is a whole number of days in the allowed range."""
    low, high = RETENTION_DAYS_RANGE
    if isinstance(days, bool) or not isinstance(days, int) or not low <= days <= high:
        raise ConfigurationError("retention_days must be a whole number from %d to %d, "
                                 "got %r" % (low, high, days))
    return days


def ensure_settings(db, retention_days=None):
    """Create the settings row if missing; set retention if one is given.

    A new tenant gets ``RETENTION_DAYS_DEFAULT`` (30) unless told otherwise;
    an existing one keeps its setting unless ``retention_days`` is passed.
    """
    if retention_days is not None:
        check_retention_days(retention_days)
    (TenantSettings.insert(id=1, retention_days=retention_days or RETENTION_DAYS_DEFAULT,
                           updated_at=utcnow())
     .on_conflict_ignore().execute(db))
    if retention_days is not None:
        set_retention_days(db, retention_days)
    return get_settings(db)


@guarded("reading the tenant settings", read_only=True)
def get_settings(db):
    """The settings row (read-only). SchemaError when not provisioned."""
    row = TenantSettings.select().where(TenantSettings.id == 1).bind(db).first()
    if row is None:
        raise SchemaError("tenant settings are missing: the database is not provisioned; "
                          "run metricstore.provision(db) or `metricstore init`")
    return row


def get_retention_days(db):
    """The tenant's retention in days."""
    return get_settings(db).retention_days


@guarded("setting retention_days")
def set_retention_days(db, days):
    """Set the retention in days (1..3660); takes effect at the next maintenance."""
    check_retention_days(days)
    (TenantSettings.update(retention_days=days, updated_at=utcnow())
     .where(TenantSettings.id == 1).execute(db))
