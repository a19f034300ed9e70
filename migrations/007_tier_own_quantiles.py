"""007: each rollup tier row stores its own sketch's quantiles (issue 9).

``q50``, ``q90``, ``q95`` and ``q99`` on ``rollup_5m``, ``rollup_1h`` and
``rollup_1d`` (nullable doubles; PostgreSQL adds them to every monthly
partition): the row's own sketch quantile, clamped to its min and max,
what a read of that one row answers. A chart bucket served by exactly one
tier row (1 h buckets from the 1 h tier) reads that number instead of the
row's sketch. Rows already stored get theirs here, computed from their
sketches (no raw sample is needed); a tenant provisioned with 003 already
has the columns (the tier tables' definition carries them).
"""

from metricstore.dialects import dialect_for
from metricstore.rollups.rebuild import fill_own_quantiles
from metricstore.rollups.schema import OWN_QUANTILE_COLUMNS
from metricstore.rollups.tiers import TIERS


def migrate(migrator, database, *, fake=False):
    if fake:             # peewee-migrate replaying history on a mock: nothing to read
        return
    d = dialect_for(database)
    for tier in TIERS:
        have = d.table_columns(database, tier.table)
        for column in OWN_QUANTILE_COLUMNS:
            if column.name not in have:
                for statement in d.add_column_sql(tier.table, column):
                    database.execute_sql(statement)
        fill_own_quantiles(database, tier)


def rollback(migrator, database, *, fake=False):
    d = dialect_for(database)
    for tier in TIERS:
        for column in OWN_QUANTILE_COLUMNS:
            database.execute_sql("ALTER TABLE %s DROP COLUMN %s" % (
                d.quote(tier.table), d.quote(column.name)))
