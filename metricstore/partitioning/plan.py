"""A maintenance plan: what should change, printable before it is applied."""

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class Creation:
    table: str
    name: str
    start: datetime
    end: datetime
    waiting_rows: int = 0     # rows in the default partition that will move in


@dataclass
class Plan:
    """What maintenance will do at ``now``; read-only until applied."""
    engine: str
    now: datetime
    retention_days: int
    cutoff: datetime
    create: list = field(default_factory=list)
    drop: list = field(default_factory=list)          # LivePartition
    default_rows: dict = field(default_factory=dict)  # table -> rows in DEFAULT
    partitions: dict = field(default_factory=dict)    # table -> [LivePartition]
    cutoffs: dict = field(default_factory=dict)       # table -> its retention cutoff

    def lines(self):
        yield "maintenance plan at %s (%s)" % (_t(self.now), self.engine)
        yield "retention: %d days -> delete rows collected before %s" % (
            self.retention_days, _t(self.cutoff))
        for table, cutoff in sorted(self.cutoffs.items()):
            if cutoff != self.cutoff:
                yield "retention of %s: delete buckets starting before %s" % (table, _t(cutoff))
        for c in self.create:
            moved = " (moves %d rows from the default partition)" % c.waiting_rows \
                if c.waiting_rows else ""
            yield "  create %s [%s, %s)%s" % (c.name, _t(c.start), _t(c.end), moved)
        for p in self.drop:
            rows = "?" if p.rows_estimate is None else "~%d" % p.rows_estimate
            yield "  drop   %s [%s, %s) %s rows, %s" % (
                p.name, _t(p.start), _t(p.end), rows, human_bytes(p.bytes))
        yield "  delete rows older than the cutoff in bounded batches"
        for table, rows in sorted(self.default_rows.items()):
            yield "  %s default partition holds %d row(s)" % (table, rows)
        if not self.create and not self.drop:
            yield "  no partitions to create or drop"

    def __str__(self):
        return "\n".join(self.lines())


@dataclass
class Result:
    """What :func:`metricstore.maintain` did (or would do, for a dry run)."""
    plan: Plan
    dry_run: bool
    created: list = field(default_factory=list)
    moved: int = 0
    dropped: list = field(default_factory=list)
    deleted: dict = field(default_factory=dict)
    tier_deleted: dict = field(default_factory=dict)  # rollup table -> expired buckets
    default_rows_after: dict = field(default_factory=dict)
    run_id: int = None

    def lines(self):
        yield from self.plan.lines()
        if self.dry_run:
            yield "dry run: nothing changed"
            return
        yield "done: created %d partition(s), moved %d row(s), dropped %d partition(s), " \
              "deleted %d expired row(s)" % (len(self.created), self.moved,
                                              len(self.dropped), sum(self.deleted.values()))
        if any(self.tier_deleted.values()):
            yield "rollup tiers: deleted %s expired bucket(s)" % ", ".join(
                "%s %d" % (t, n) for t, n in sorted(self.tier_deleted.items()))

    def __str__(self):
        return "\n".join(self.lines())


def _t(dt):
    return dt.strftime("%Y-%m-%d %H:%M:%SZ")


def human_bytes(n):
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return "%.0f %s" % (n, unit) if unit == "B" else "%.1f %s" % (n, unit)
        n /= 1024.0
