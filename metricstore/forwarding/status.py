"""Where the spool stands (read-only): what `metricstore forward status` prints."""

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ..dialects import dialect_for
from ..guard import guarded
from ..timeutil import to_utc, utcnow
from . import cap, compaction, outbox, quarantine, state

DEFAULT_MAX_LAG = timedelta(minutes=5)


@dataclass
class ForwardStatus:
    """``spool_rows``: entries not yet forwarded; ``spool_bytes``: bytes the
    local series tables and outbox use; ``local_rows``: metric + snapshot
    rows held locally (forwarded or not); ``oldest_unforwarded``: the oldest
    collected_at waiting (UTC; None when empty) and ``lag`` its age;
    ``counts``: rows per outcome (forwarded, duplicate, expired,
    quarantined, compacted, compacted:<outcome>, dropped:<reason>, pruned);
    ``compacted_waiting``: ``(states, raw rows they hold)`` compacted by the
    cap and not yet forwarded; ``quarantined``: the latest quarantined rows,
    newest first."""
    enabled: bool
    spool_id: str
    destination: str
    spool_rows: int
    spool_bytes: int
    local_rows: int
    oldest_unforwarded: datetime
    lag: timedelta
    last_success_at: datetime
    last_error_at: datetime
    last_error: str
    in_flight: bool
    counts: dict = field(default_factory=dict)
    compacted_waiting: tuple = (0, 0)
    quarantined: list = field(default_factory=list)
    problems: list = field(default_factory=list)

    @property
    def ok(self):
        return not self.problems

    @property
    def dropped(self):
        return sum(v for k, v in self.counts.items() if k.startswith(state.DROPPED))


@guarded("forward status", read_only=True)
def status(db, now=None, max_lag=DEFAULT_MAX_LAG, quarantine_limit=20):
    """The spool's :class:`ForwardStatus`; ``problems`` says what needs care
    (the spool is not enabled, the oldest waiting row is older than
    ``max_lag``, the last attempt failed, rows were quarantined or dropped)."""
    now = to_utc(now or utcnow(), "now")
    d = dialect_for(db)
    s = state.get(db)
    (oldest,) = db.execute_sql("SELECT MIN(collected_at) FROM forward_outbox").fetchone()
    oldest = d.time_result(oldest)
    rows, used = cap.usage(db)
    result = ForwardStatus(
        enabled=s["spool_id"] is not None, spool_id=s["spool_id"],
        destination=s["destination"], spool_rows=outbox.pending(db), spool_bytes=used,
        local_rows=rows, oldest_unforwarded=oldest,
        lag=None if oldest is None else max(now - oldest, timedelta(0)),
        last_success_at=s["last_success_at"], last_error_at=s["last_error_at"],
        last_error=s["last_error"], in_flight=s["inflight"] is not None,
        counts=state.counts(db), compacted_waiting=compaction.waiting(db),
        quarantined=quarantine.rows(db, quarantine_limit))
    if not result.enabled:
        result.problems.append("this database is not a spool yet: run `metricstore forward "
                               "--from URL --to URL` once")
    if result.lag is not None and result.lag > max_lag:
        result.problems.append("the oldest unforwarded sample is %s old (more than %s)"
                               % (_short(result.lag), _short(max_lag)))
    if result.last_error_at and (result.last_success_at is None
                                 or result.last_error_at > result.last_success_at):
        result.problems.append("the last attempt failed: %s" % result.last_error)
    if result.counts.get(state.QUARANTINED):
        result.problems.append("%d row(s) quarantined (refused centrally)"
                               % result.counts[state.QUARANTINED])
    if result.counts.get(compaction.OVERLAP):
        result.problems.append("%d compacted row(s) not merged centrally: the central "
                               "5-minute bucket held interleaving samples"
                               % result.counts[compaction.OVERLAP])
    if result.dropped:
        result.problems.append("%d row(s) dropped before forwarding" % result.dropped)
    return result


def _short(delta):
    return str(timedelta(seconds=int(delta.total_seconds())))
