"""A maintenance plan: what should change, printable before it is applied."""

from dataclasses import dataclass, field
from datetime import datetime

from ..timeutil import add_months


@dataclass(frozen=True)
class Creation:
    table: str
    name: str
    start: datetime
    end: datetime
    waiting_rows: int = 0     # rows in the default partition that will move in


@dataclass(frozen=True)
class Conflict:
    """A table that keeps a month from getting its partition: ``blocker``
    (not made by metricstore) is either attached and covers only part of
    the month (``kind='overlap'``) or a detached table holding the month
    partition's name (``kind='name'``). Rows of the month go to the default
    partition until it is resolved; :attr:`fix` says how."""
    table: str
    month: datetime
    blocker: str
    kind: str

    @property
    def fix(self):
        if self.kind == "name":
            return ("rename it (ALTER TABLE %s RENAME TO ...), drop it, or re-attach it "
                    "(ALTER TABLE %s ATTACH PARTITION %s FOR VALUES FROM ('%s') TO ('%s'))"
                    % (self.blocker, self.table, self.blocker, _t(self.month),
                       _t(add_months(self.month, 1))))
        return ("detach it (ALTER TABLE %s DETACH PARTITION %s), move its rows back "
                "(INSERT INTO %s SELECT * FROM %s), drop it, then run `metricstore maintain`"
                % (self.table, self.blocker, self.table, self.blocker))

    def __str__(self):
        what = ("is a table that is not a partition of %s but holds the name of its %s "
                "partition" if self.kind == "name" else
                "is a partition of %s covering only part of %s")
        return "%s %s; rows of that month wait in the default partition: %s" % (
            self.blocker, what % (self.table, self.month.strftime("%Y-%m")), self.fix)


@dataclass
class Plan:
    """What maintenance will do at ``now``; read-only until applied."""
    engine: str
    now: datetime
    retention_days: int
    cutoff: datetime
    create: list = field(default_factory=list)
    drop: list = field(default_factory=list)          # LivePartition
    conflicts: list = field(default_factory=list)     # Conflict
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
        for c in self.conflicts:
            yield "  BLOCKED %s: %s" % (c.month.strftime("%Y-%m"), c)
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
    errors: list = field(default_factory=list)        # steps that failed (retention still ran)
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
