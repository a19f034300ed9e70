"""Exact retention by bounded DELETE batches (both engines).

Whole expired partitions are dropped by the partition manager first; this
removes what is left: every row collected before the cutoff, one server and
at most one day of samples per statement, each batch its own transaction,
so writers are never blocked for long.
"""

from datetime import timedelta

import peewee as pw

from .dialects import dialect_for
from .models import Metric, ServerSnapshot

SERIES_MODELS = (Metric, ServerSnapshot)
BATCH_SPAN = timedelta(days=1)


def delete_expired(db, cutoff, models=SERIES_MODELS, span=BATCH_SPAN):
    """Delete rows with ``collected_at < cutoff`` (aware UTC); return rows deleted per table."""
    dialect = dialect_for(db)
    deleted = {}
    for model in models:
        total = 0
        for server_id in expired_server_ids(db, model, cutoff):
            while True:
                oldest = (model.select(pw.fn.MIN(model.collected_at))
                          .where((model.server == server_id) & (model.collected_at < cutoff))
                          .bind(db).scalar())
                if oldest is None:
                    break
                oldest = model.collected_at.python_value(oldest)
                upper = min(oldest + span, cutoff)
                with dialect.write_transaction(db):
                    total += (model.delete()
                              .where((model.server == server_id)
                                     & (model.collected_at >= oldest)
                                     & (model.collected_at < upper))
                              .execute(db))
        deleted[model._meta.table_name] = total
    return deleted


def expired_server_ids(db, model, cutoff):
    """Server ids holding rows of ``model`` before ``cutoff``, one index probe each.

    Read from the series table itself, not from ``servers``: the hot tables have
    no foreign key, so rows of a server removed from ``servers`` expire too.
    """
    ids, last = [], None
    while True:
        query = model.select(pw.fn.MIN(model.server)).where(model.collected_at < cutoff)
        if last is not None:
            query = query.where(model.server > last)
        last = query.bind(db).scalar()
        if last is None:
            return ids
        ids.append(last)
