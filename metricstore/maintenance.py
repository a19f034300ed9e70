"""One maintenance run: partitions ahead, rows out of the default partition,
expired partitions dropped, expired rows deleted, and a record of it all."""

import json

from .dialects import dialect_for
from .errors import MaintenanceError
from .guard import guarded
from .models import MaintenanceRun
from .partitioning import PartitionManager, Result, forget_months
from .retention import delete_expired
from .rollups.rebuild import expire as expire_tiers
from .timeutil import utcnow


@guarded("maintain", atomic=False)
def maintain(db, dry_run=False, now=None, strategy=None):
    """Plan and (unless ``dry_run``) apply maintenance; return a :class:`Result`.

    ``now`` (aware, default the current UTC time) drives the plan. After a
    run no row collected before ``now - retention_days`` remains in
    ``metrics`` or ``server_snapshots``, and each rollup tier keeps only
    buckets from ``now`` minus its own retention (raw expiry never changes a
    tier). A dry run reads only. A real run
    is recorded in ``maintenance_runs``, failures included. Safe to run from
    several processes at once.
    """
    manager = PartitionManager(db, strategy=strategy,
                               clock=utcnow if now is None else (lambda: now))
    plan = manager.plan()
    result = Result(plan=plan, dry_run=dry_run)
    if dry_run:
        result.default_rows_after = dict(plan.default_rows)
        return result
    dialect = dialect_for(db)
    with dialect.write_transaction(db):   # the wall clock, even when ``now`` is pretended
        run = MaintenanceRun.insert(started_at=utcnow(), dry_run=False).execute(db)
    result.run_id = run
    try:
        # A failed creation never stops retention: apply() goes on with the
        # drops, the expired rows are deleted, and the failure is raised last.
        result.created, result.moved, result.dropped = manager.apply(plan, result.errors)
        forget_months(db)                  # dropped months are gone now
        result.deleted = delete_expired(db, plan.cutoff)
        result.tier_deleted = expire_tiers(db, now=plan.now)
        result.default_rows_after = {t: manager.default_rows(t) for t in manager.tables} \
            if dialect.partitioned else {}
    except Exception as exc:
        _finish(db, dialect, result, error="%s: %s" % (type(exc).__name__, exc))
        raise
    if result.errors:
        error = "; ".join(str(e) for e in result.errors)
        _finish(db, dialect, result, error=error)
        raise MaintenanceError("maintenance on %s: retention ran, but %d partition step(s) "
                               "failed: %s" % (db.url or "the database", len(result.errors),
                                               error)) from result.errors[0]
    _finish(db, dialect, result)
    return result


def _finish(db, dialect, result, error=None):
    detail = json.dumps({"planned_at": result.plan.now.isoformat(), "created": result.created,
                         "dropped": result.dropped,
                         "conflicts": [str(c) for c in result.plan.conflicts],
                         "deleted": result.deleted,
                         "tier_deleted": result.tier_deleted,
                         "default_rows_after": result.default_rows_after})
    with dialect.write_transaction(db):
        (MaintenanceRun.update(finished_at=utcnow(), created=len(result.created),
                               moved=result.moved, dropped=len(result.dropped),
                               deleted=sum(result.deleted.values()), detail=detail,
                               error=error)
         .where(MaintenanceRun.id == result.run_id).execute(db))


@guarded("reading the last maintenance run", read_only=True)
def last_run(db):
    """The most recent real maintenance run, or None (read-only)."""
    return (MaintenanceRun.select().where(MaintenanceRun.dry_run == False)  # noqa: E712
            .order_by(MaintenanceRun.started_at.desc(), MaintenanceRun.id.desc())
            .bind(db).first())
