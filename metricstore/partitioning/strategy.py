"""Which monthly partitions should exist, and what retention removes.

Pure functions of the clock and the data: no database access, so the
strategy is tested by walking the clock.
"""

from dataclasses import dataclass
from datetime import timedelta

from ..timeutil import add_months, month_start

MARKER = "metricstore:managed-partition"


@dataclass(frozen=True)
class MonthlyStrategy:
    """One partition per UTC calendar month.

    ``ahead``: months created beyond the current one, so that a few months of
    downtime never leave writes without a partition.
    """
    ahead: int = 3

    def name(self, table, start):
        """Locale-independent partition name, e.g. ``metrics_p2026_11``."""
        return "%s_p%04d_%02d" % (table, start.year, start.month)

    def bounds(self, start):
        """``[start, end)`` of the month starting at ``start`` (UTC)."""
        return start, add_months(start, 1)

    def cutoff(self, now, retention_days):
        """Rows collected before this instant are past retention."""
        return now - timedelta(days=retention_days)

    def wanted(self, now, data_months=(), cutoff=None):
        """Month starts that should have a partition.

        The current month and ``ahead`` more, plus every month that holds
        data (``data_months``), except months wholly before ``cutoff``.
        """
        current = month_start(now)
        months = {add_months(current, i) for i in range(self.ahead + 1)}
        months.update(month_start(m) for m in data_months)
        if cutoff is not None:
            months = {m for m in months if add_months(m, 1) > cutoff}
        return sorted(months)
