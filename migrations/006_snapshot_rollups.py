"""006: the snapshot columns in the rollup tiers (issue 9).

``server_snapshots``' cpu_percent, memory_percent and connection_count are
rolled up from now on as series of their own in the tier tables (negative
``metric_type_id``, see ``metricstore.rollups.snapshots``); the snapshots
already stored are rolled up here. No table changes.
"""

from metricstore.rollups.rebuild import backfill


def migrate(migrator, database, *, fake=False):
    if not fake:
        backfill(database, "server_snapshots")


def rollback(migrator, database, *, fake=False):
    database.execute_sql("DELETE FROM rollup_5m WHERE metric_type_id < 0")
    database.execute_sql("DELETE FROM rollup_1h WHERE metric_type_id < 0")
    database.execute_sql("DELETE FROM rollup_1d WHERE metric_type_id < 0")
