"""Row-based sharding of one large tenant on Citus (``metricstore distribute``).

Layout: ``servers``, ``metric_types``, ``tenant_settings``, ``maintenance_runs``
and the migration history become reference tables (a copy on every node, so a
collector connected to any node reads them); every time-partitioned table
keyed by ``server_id`` (``metrics``, ``server_snapshots``, and the rollup
tiers once a migration has added them) is hash-distributed by ``server_id``,
all co-located with ``metrics``, so every one-server query is a router query
to one shard. New month partitions created later are distributed by Citus
with their parent; run ``distribute`` again after a migration adds a table.

A collector may use any node: ``servers.id`` is an int identity that only
the coordinator can draw (Citus gives workers bigint sequence ranges), so on
a worker ``add_server`` of a new name runs its insert on the coordinator
(``CitusDialect.insert_drawing_id``). Provision, maintain and distribute run
on the coordinator.
"""

from contextlib import nullcontext
from dataclasses import dataclass, field

from .dialects import dialect_for
from .partitioning import SERIES_TABLES
from .provision import provision
from .schema import HISTORY_TABLE

DISTRIBUTION_COLUMN = "server_id"
REFERENCE_TABLES = ("servers", "metric_types", "tenant_settings", "maintenance_runs",
                    HISTORY_TABLE)
# The tenant's time-partitioned tables keyed by server_id, metrics first
# (the co-location anchor): read from the catalog, so the rollup tiers are
# included once their migration has created them.
SHARDED_TABLES = ("SELECT c.relname::text FROM pg_class c JOIN pg_attribute a "
                  "ON a.attrelid = c.oid AND a.attname = %s AND NOT a.attisdropped "
                  "WHERE c.relkind = 'p' AND NOT c.relispartition "
                  "AND c.relnamespace = current_schema()::regnamespace "
                  "ORDER BY c.relname <> %s, c.relname")


@dataclass
class DistributionReport:
    """What :func:`distribute` provisioned and changed (``changed`` empty when
    the tenant was already distributed)."""
    provisioned: object
    changed: list = field(default_factory=list)

    def lines(self):
        yield from self.provisioned.lines()
        if not self.changed:
            yield "already distributed: nothing to do"
        for change in self.changed:
            yield "distributed: %s" % change


def distribute(db, retention_days=None, shard_count=None):
    """Provision the tenant if needed and shard it across the Citus cluster
    (see the module doc); idempotent, run on the coordinator. Existing rows
    are copied to the shards (and the coordinator's copy truncated) in one
    transaction under the tenant's provisioning lock. Raises
    ConfigurationError off Citus, on a worker, or for a tenant already in a
    distributed schema (schema-based sharding). ``shard_count``: shards of
    the distributed tables when first made (None: the cluster's
    ``citus.shard_count``, 32 by default)."""
    dialect = dialect_for(db)
    with db.connection_context() if db.is_closed() else nullcontext():
        dialect.prepare_distribution(db)
        report = DistributionReport(provision(db, retention_days=retention_days))
        with db.atomic():
            with dialect.lock(db, "provision"):
                sharded = [name for (name,) in db.execute_sql(
                    SHARDED_TABLES, (DISTRIBUTION_COLUMN, SERIES_TABLES[0])).fetchall()]
                report.changed = dialect.distribute(db, REFERENCE_TABLES, sharded,
                                                    DISTRIBUTION_COLUMN, shard_count)
        if report.changed:
            dialect.provisioned(db)        # statistics for the new shard placements
    return report
