"""The tier tables and settings columns in engine-neutral terms (migration 003)."""

from ..dialects import Column, Table
from .tiers import OWN_QUANTILES, TIERS

MAX_TIER_DAYS = 36600


# NULL in rows written before migration 007 (until rewritten): reads use the sketch.
OWN_QUANTILE_COLUMNS = tuple(Column(c, "float", null=True) for c in OWN_QUANTILES.values())


def tier_table(tier):
    """A tier's table: one row per (server, metric, UTC-aligned bucket)."""
    return Table(tier.table, (
        Column("server_id", "int"),
        Column("metric_type_id", "smallint"),
        Column("bucket", "timestamp"),
        Column("n", "int"),
        Column("total", "float"),
        Column("low", "float"),
        Column("high", "float"),
        Column("first_at", "bigint"),          # epoch microseconds (UTC)
        Column("first_v", "float"),
        Column("last_at", "bigint"),
        Column("last_v", "float"),
        Column("increase", "float", null=True),  # counters only
        Column("elapsed", "float", null=True),
        Column("pairs", "int", null=True),
        Column("sketch", "blob"),
    ) + OWN_QUANTILE_COLUMNS, primary_key=("server_id", "metric_type_id", "bucket"), series=True,
        time_column="bucket")


TIER_TABLES_DDL = tuple(tier_table(t) for t in TIERS)
SETTINGS_COLUMNS = tuple(
    Column(t.setting, "int", default=str(t.default_days),
           check="%s BETWEEN 2 AND %d" % (t.setting, MAX_TIER_DAYS)) for t in TIERS)
