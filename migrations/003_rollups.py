"""003: rollup tiers (issue 9) and their per-tier retention settings.

One table per tier (``rollup_5m``, ``rollup_1h``, ``rollup_1d``), keyed like
``metrics`` by (server_id, metric_type_id, bucket) and partitioned by month
of ``bucket`` on PostgreSQL (WITHOUT ROWID on SQLite). ``tenant_settings``
gains one retention column per tier. Raw rows already stored are rolled up
here, so the tiers cover everything raw holds from the start.
"""

from metricstore.dialects import dialect_for
from metricstore.rollups.rebuild import backfill
from metricstore.rollups.schema import SETTINGS_COLUMNS, TIER_TABLES_DDL


def migrate(migrator, database, *, fake=False):
    dialect = dialect_for(database)
    dialect.create_tables(database, TIER_TABLES_DDL)
    for column in SETTINGS_COLUMNS:
        for statement in dialect.add_column_sql("tenant_settings", column):
            database.execute_sql(statement)
    if not fake:
        backfill(database)


def rollback(migrator, database, *, fake=False):
    dialect = dialect_for(database)
    dialect.drop_tables(database, TIER_TABLES_DDL)
    for column in SETTINGS_COLUMNS:
        database.execute_sql("ALTER TABLE tenant_settings DROP COLUMN %s"
                             % dialect.quote(column.name))
