"""Tenant settings: one row in ``tenant_settings``."""

from .errors import ConfigurationError, SchemaError
from .guard import guarded
from .models import RETENTION_DAYS_DEFAULT, RETENTION_DAYS_RANGE, TenantSettings
from .rollups.schema import MAX_TIER_DAYS
from .rollups.tiers import BY_NAME, TIERS
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


def get_tier_retention(db):
    """``{tier name: days}`` of the rollup tiers' retention (read-only)."""
    row = get_settings(db)
    return {t.name: getattr(row, t.setting) for t in TIERS}


def effective_retention(db):
    """``(raw days, {tier name: days kept})`` from one read of the settings."""
    row = get_settings(db)
    out, previous = {}, row.retention_days
    for t in TIERS:
        previous = out[t.name] = max(getattr(row, t.setting), previous + 1)
    return row.retention_days, out


def effective_tier_retention(db):
    """``{tier name: days}`` each tier is actually kept: its setting, raised
    to one day more than the finer level's when that is longer, so a write
    always finds the finer rows of the bucket it touches (read-only)."""
    return effective_retention(db)[1]


def set_tier_retention(db, tier, days):
    """Set tier ``tier``'s ('5m', '1h', '1d') retention in days; applies at the
    next maintenance. A tier is kept at least one day longer than the finer
    level whatever its setting (see :func:`effective_tier_retention`)."""
    if tier not in BY_NAME:
        raise ConfigurationError("unknown rollup tier %r; tiers are %s"
                                 % (tier, ", ".join(BY_NAME)))
    if isinstance(days, bool) or not isinstance(days, int) or not 2 <= days <= MAX_TIER_DAYS:
        raise ConfigurationError("retention-%s-days must be a whole number from 2 to %d, "
                                 "got %r" % (tier, MAX_TIER_DAYS, days))
    (TenantSettings.update(**{BY_NAME[tier].setting: days, "updated_at": utcnow()})
     .where(TenantSettings.id == 1).execute(db))
