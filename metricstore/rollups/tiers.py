"""The rollup tiers: fixed UTC-aligned bucket widths, each with its own table
and per-tenant retention (a ``tenant_settings`` column).

Each tier is built from the next finer level only: 5 min from raw samples,
1 h from 5 min rows, 1 d from 1 h rows, so every coarser bucket is a merge
of finer mergeable states, never an average of averages. A tier's retention
must be at least one day longer than the finer level's, so a bucket that a
write touches always has all its finer rows (see settings.check_tier_days).
"""

from dataclasses import dataclass
from datetime import timedelta

from ..queries import PERCENTILES

US = 1_000_000
TIER_MAX_GAP = timedelta(minutes=5)    # counter pairs further apart are not rated
TIER_MAX_GAP_US = 300 * US


@dataclass(frozen=True)
class Tier:
    """``name`` ('5m'), ``table``, bucket ``width``, the ``setting`` column that
    holds its retention and that retention's default in days."""
    name: str
    table: str
    width: timedelta
    setting: str
    default_days: int

    @property
    def width_us(self):
        return self.width // timedelta(microseconds=1)


TIER_5M = Tier("5m", "rollup_5m", timedelta(minutes=5), "retention_5m_days", 180)
TIER_1H = Tier("1h", "rollup_1h", timedelta(hours=1), "retention_1h_days", 730)
TIER_1D = Tier("1d", "rollup_1d", timedelta(days=1), "retention_1d_days", 3650)
TIERS = (TIER_5M, TIER_1H, TIER_1D)            # finest first
TIER_TABLES = tuple(t.table for t in TIERS)
BY_NAME = {t.name: t for t in TIERS}
BY_TABLE = {t.table: t for t in TIERS}
RAW = "raw"


def finer(tier):
    """The tier a tier is built from (None: raw samples)."""
    i = TIERS.index(tier)
    return TIERS[i - 1] if i else None


def coarser(tier):
    i = TIERS.index(tier)
    return TIERS[i + 1] if i + 1 < len(TIERS) else None


# The snapshot columns rolled up as series of their own (rollups.snapshots):
# negative metric_type_id values, never a metric type's id.
SNAPSHOT_SERIES = (("cpu_percent", -1), ("memory_percent", -2), ("connection_count", -3))
SNAPSHOT_COLUMN = {i: c for c, i in SNAPSHOT_SERIES}

# Each tier row also stores its own sketch's quantiles (clamped to the row's
# min and max), one column a percentile: a bucket served by exactly one row
# (a 1 h chart from the 1 h tier) reads that number instead of the sketch.
# Derived from the row's state, never merged: a coarser bucket merges sketches.
OWN_QUANTILES = {stat: "q" + stat[1:] for stat in PERCENTILES}      # p95 -> q95
