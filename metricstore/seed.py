"""Seeding: an idempotent upsert of the shipped metric types."""

from .errors import ConfigurationError
from .models import KINDS, MetricType
from .seeds.metric_types import METRIC_TYPES


def seed_metric_types(db, metric_types=METRIC_TYPES):
    """Insert missing metric types and update changed unit/description/kind.

    Never deletes; re-running changes nothing. Returns the number of rows
    written (inserted or updated). Runs in the caller's transaction.
    """
    rows = [dict(name=n, unit=u, description=d, kind=k) for n, u, d, k in metric_types]
    for row in rows:
        if row["kind"] not in KINDS:
            raise ConfigurationError("metric type %r has kind %r; use one of %s"
                                     % (row["name"], row["kind"], ", ".join(KINDS)))
    existing = {(m.name, m.unit, m.description, m.kind)
                for m in MetricType.select().bind(db)}
    changed = [r for r in rows if tuple(r.values()) not in existing]
    if changed:
        (MetricType.insert_many(changed)
         .on_conflict(conflict_target=[MetricType.name],
                      preserve=[MetricType.unit, MetricType.description, MetricType.kind])
         .execute(db))
    return len(changed)
