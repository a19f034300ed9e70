"""The ``metricstore`` command: a thin layer over the library.

Every command parses its arguments, makes one or two library calls and
prints. The database URL comes from ``--url``, else ``DATABASE_URL``, else
the local SQLite default. User mistakes print one ``error: ...`` line on
stderr and exit 2; ``status`` exits 1 when the tenant needs attention.
"""

import csv
import io
import json
import logging
import os
import signal
import sys
from array import array
from datetime import datetime, timedelta

import click

from . import demo as demo_data
from .connection import connect, default_url
from .distribute import distribute as distribute_tenant
from .errors import MetricstoreError, QueryError, ValidationError
from . import forwarding
from .guard import DRIVER_ERRORS
from .maintenance import maintain as run_maintenance
from .partitioning import SERIES_TABLES, PartitionManager
from .partitioning.plan import human_bytes
from .provision import provision
from .repository import MetricRepository
from .rollups.rebuild import rebuild as rebuild_tiers, tier_status
from .rollups.tiers import TIERS
from .settings import (effective_tier_retention, get_retention_days, get_tier_retention,
                       set_retention_days, set_tier_retention)
from .status import status as tenant_status
from .textplot import sparkline, table
from .timeutil import parse_duration, parse_when, utcnow

EXIT_USAGE, EXIT_ATTENTION, EXIT_ENVIRONMENT = 2, 1, 1
INGEST_COMMIT_ROWS = 20_000

url_option = click.option("--url", envvar="DATABASE_URL", default=None,
                          help="Database URL (default: $DATABASE_URL, else "
                               "sqlite:///metricstore.db).")
format_option = click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]),
                             default="table", show_default=True, help="Output format.")


def open_db(url):
    db = connect(url or default_url())
    db.connect()
    return db


def echo_err(text):
    click.echo(text, err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="metricstore")
def cli():
    """metricstore: the metrics data layer (SQLite or partitioned PostgreSQL).

    \b
    Example:
      metricstore demo                     # a fleet on a local SQLite file
      metricstore status --url postgresql://root@127.0.0.1:5432/test
    """


@cli.command()
@click.argument("url_arg", metavar="[URL]", required=False)
@url_option
@click.option("--retention-days", type=int, default=None,
              help="Set the retention (a new tenant gets 30).")
def init(url_arg, url, retention_days):
    """Provision a tenant: migrations, seeds, settings, partitions (idempotent).

    \b
    Example:
      metricstore init sqlite:///tenant.db
      metricstore init postgresql://root@127.0.0.1:5432/test?schema=tenant_a
    """
    db = open_db(url_arg or url)
    report = provision(db, retention_days=retention_days)
    click.echo("\n".join(report.lines()))


@cli.command()
@url_option
@click.option("--servers", type=click.IntRange(1, 500), default=8, show_default=True)
@click.option("--days", type=click.FloatRange(0.01, 30), default=3, show_default=True,
              help="Days of history (at most the default retention, 30).")
def demo(url, servers, days):
    """Provision, load a synthetic fleet (15 s samples), maintain, show the fleet.

    \b
    Example:
      metricstore demo
      metricstore demo --servers 20 --days 7 --url postgresql://root@127.0.0.1:5432/test
    """
    db = open_db(url)
    provision(db)
    repo = MetricRepository(db)
    ids = tuple(repo.add_server("demo-sql-%02d" % (i + 1)) for i in range(servers))
    end = utcnow().replace(microsecond=0)
    end -= timedelta(seconds=end.second % 15)
    fleet = demo_data.plan(repo, ids, end, days)
    total = fleet.steps * len(ids) * demo_data.METRICS_PER_SAMPLE
    click.echo("loading %d servers x %.3g days of 15 s samples (~%d metric rows) into %s"
               % (servers, days, total, db.database), err=True)
    with click.progressbar(length=total, label="loading", file=sys.stderr) as bar:
        metrics, snapshots = demo_data.load(repo, fleet, progress=bar.update)
    result = run_maintenance(db)
    click.echo("stored %d new metric rows and %d snapshots; maintenance: %d partition(s) "
               "created, %d expired row(s) deleted" % (
                   metrics, snapshots, len(result.created), sum(result.deleted.values())),
               err=True)
    click.echo(fleet_view(repo, fleet, end))


def fleet_view(repo, fleet, now):
    """The demo's report: fleet status, top CPU, one server's day, its I/O rates."""
    out = []
    entries = repo.latest_snapshots(stale_after=timedelta(minutes=2), now=now)
    out.append("Fleet at %s (latest snapshot; STALE = nothing for 2 min)"
               % now.strftime("%Y-%m-%d %H:%M:%SZ"))
    out.append(table(["server", "status", "cpu %", "mem %", "conns", "last seen"],
                     [(e.server_name, "STALE" if e.stale else e.status, e.cpu_percent,
                       e.memory_percent, e.connection_count,
                       _ago(now, e.collected_at)) for e in entries]))
    day = now - timedelta(hours=24)
    top = repo.top("cpu_percent", day, now, n=5, stat="p95")
    out.append("\nTop servers by CPU p95, last 24 h")
    out.append(table(["server", "cpu p95 %"], [(r.server_name, r.value) for r in top]))
    sid = fleet.server_ids[0]
    name = next(e.server_name for e in entries if e.server_id == sid)
    buckets = repo.buckets(sid, "cpu_percent", day, now, timedelta(hours=1), fill=True)
    day_stats = repo.summary(sid, "cpu_percent", day, now, stats=("min", "avg", "p95", "max"))
    out.append("\n%s CPU, last 24 h (1-hour buckets)" % name)
    out.append("  %s" % sparkline([b.avg for b in buckets]))
    out.append("  " + "  ".join("%s %s" % (k, "-" if v is None else "%.1f" % v)
                                for k, v in day_stats.items()))
    out.append("\n%s I/O rates, last 24 h (per second, 1-hour buckets)" % name)
    for metric in ("disk_io_reads", "disk_io_writes", "batch_requests_sec"):
        rates = repo.rate(sid, metric, day, now, timedelta(hours=1))
        values = [r.rate for r in rates]
        if values:
            out.append("  %-19s %s  avg %.1f/s" % (metric, sparkline(values),
                                                   sum(values) / len(values)))
    out.append(month_view(repo, sid, name, now))
    silent = repo.silent_servers(now - timedelta(minutes=30))
    if silent:
        out.append("\nSilent for 30 min: %s" % ", ".join(s.name for s in silent))
    return "\n".join(out)


def month_view(repo, sid, name, now):
    """30 days of CPU in daily buckets and the fleet's 30-day p95 ranking,
    served from the rollup tiers (the resolution is printed)."""
    month = now - timedelta(days=30)
    days = repo.buckets(sid, "cpu_percent", month, now, timedelta(days=1),
                        stats=("avg", "p95"), fill=True)
    top = repo.top("cpu_percent", month, now, n=3, stat="p95")
    out = ["\n%s CPU, last 30 days (1-day buckets; served from %s)" % (name, days.resolution),
           "  %s" % sparkline([b.avg for b in days]),
           "Top servers by CPU p95, last 30 days (served from %s, within %.0f %%): %s" % (
               top.resolution, 100 * top.error,
               ", ".join("%s %.1f" % (r.server_name, r.value) for r in top))]
    return "\n".join(out)


def _ago(now, then):
    if then is None:
        return "never"
    seconds = int((now - then).total_seconds())
    return "%ds ago" % seconds if seconds < 120 else "%dm ago" % (seconds // 60)


@cli.command()
@url_option
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
@click.option("--now", "now_text", default=None, help="Pretend it is this time (testing).")
def maintain(url, dry_run, now_text):
    """Create partitions ahead, empty the default partition, enforce retention.

    Safe to run from cron, a systemd timer or pg_cron, from several hosts at once.

    \b
    Example:
      metricstore maintain --dry-run
      metricstore maintain --url postgresql://root@127.0.0.1:5432/test
    """
    db = open_db(url)
    now = parse_when(now_text) if now_text else None
    click.echo(str(run_maintenance(db, dry_run=dry_run, now=now)))


@cli.command()
@click.argument("url_arg", metavar="[URL]", required=False)
@url_option
@click.option("--shards", type=click.IntRange(1, 1024), default=None,
              help="Shards per distributed table (default: citus.shard_count, 32).")
def distribute(url_arg, url, shards):
    """Shard one large tenant across a Citus cluster (idempotent; coordinator URL).

    servers, metric_types, tenant_settings, maintenance_runs and the migration
    history become reference tables; metrics and server_snapshots are
    distributed by server_id, co-located. Existing rows move to the shards.

    \b
    Example:
      metricstore distribute postgresql://root@127.0.0.1:9700/test?schema=big
    """
    db = open_db(url_arg or url)
    click.echo("\n".join(distribute_tenant(db, shard_count=shards).lines()))


@cli.command()
@url_option
def partitions(url):
    """List each partition with its UTC bounds, row estimate and size (read-only).

    \b
    Example:
      metricstore partitions --url postgresql://root@127.0.0.1:5432/test
    """
    db = open_db(url)
    manager = PartitionManager(db)
    if not manager.dialect.partitioned:
        click.echo("%s is not partitioned (SQLite): retention deletes rows in batches"
                   % db.database)
        return
    rows = []
    for name in SERIES_TABLES:
        for p in manager.live(name):
            count, size = manager.figures(p)
            rows.append((name, p.name, "DEFAULT" if p.is_default else p.start,
                         "" if p.is_default else p.end, count,
                         human_bytes(size), "yes" if p.owned else "NO"))
    click.echo(table(["table", "partition", "from", "to", "rows", "size", "managed"], rows))
    for conflict in manager.plan().conflicts:
        click.echo("BLOCKED %s %s: %s" % (conflict.table, conflict.month.strftime("%Y-%m"),
                                          conflict))


@cli.command()
@url_option
@click.option("--max-age", default="2d", show_default=True,
              help="Maintenance older than this is overdue.")
def status(url, max_age):
    """Schema, rows, time span, retention, last maintenance; exit 1 if it needs care.

    \b
    Example:
      metricstore status || alert "metricstore needs maintenance"
    """
    db = open_db(url)
    s = tenant_status(db, max_maintenance_age=parse_duration(max_age))
    click.echo("engine: %s  database: %s" % (s.engine, db.database))
    click.echo("schema: %s%s" % (", ".join(s.applied) or "not provisioned",
                                 "  (pending: %s)" % ", ".join(s.pending) if s.pending else ""))
    click.echo("retention: %d days (raw)%s" % (s.retention_days, "".join(
        ", %s tier %d days" % (k, v) for k, v in s.tier_retention.items())))
    for name, (count, exact) in s.rows.items():
        first, last = s.span[name]
        click.echo("%s: %s%d rows, %s .. %s" % (name, "" if exact else "~", count,
                                                 _when(first), _when(last)))
    run = s.last_run
    click.echo("last maintenance: %s" % (
        "never" if run is None else "%s (created %d, dropped %d, deleted %d rows)%s" % (
            _when(run.started_at), run.created, run.dropped, run.deleted,
            " FAILED: " + run.error if run.error else "")))
    for t in s.tiers:
        click.echo("%s: %s%d buckets, %s .. %s, lag %s" % (
            t.table, "" if t.exact else "~", t.rows, _when(t.first), _when(t.last),
            "-" if t.lag is None else "%.0f s" % t.lag.total_seconds()))
    for name, rows in s.default_rows.items():
        click.echo("%s default partition: %d rows" % (name, rows))
    for problem in s.problems:
        click.echo("attention: " + problem)
    if not s.ok:
        raise SystemExit(EXIT_ATTENTION)


def _when(dt):
    return "-" if dt is None else dt.strftime("%Y-%m-%d %H:%M:%SZ")


@cli.group()
def settings():
    """Read or change tenant settings.

    \b
    Example:
      metricstore settings get retention-days
      metricstore settings set retention-days 7
    """


SETTING_NAMES = ["retention-days"] + ["retention-%s-days" % t.name for t in TIERS]


@settings.command("get")
@click.argument("name", type=click.Choice(SETTING_NAMES), required=False)
@url_option
def settings_get(name, url):
    """Print a setting, or all of them (read-only).

    Example: metricstore settings get retention-1h-days
    """
    db = open_db(url)
    values = {"retention-days": get_retention_days(db)}
    values.update(("retention-%s-days" % k, v) for k, v in get_tier_retention(db).items())
    if name:
        click.echo(values[name])
        return
    effective = effective_tier_retention(db)
    for key, value in values.items():
        tier = key[len("retention-"):-len("-days")]
        kept = effective.get(tier, value)
        click.echo("%s = %d%s" % (key, value, "" if kept == value else
                                  " (kept %d: a tier outlives the finer level)" % kept))


@settings.command("set")
@click.argument("name", type=click.Choice(SETTING_NAMES))
@click.argument("value", type=int)
@url_option
def settings_set(name, value, url):
    """Change a setting; retention applies at the next maintenance.

    Example: metricstore settings set retention-days 7
    """
    db = open_db(url)
    if name == "retention-days":
        set_retention_days(db, value)
    else:
        set_tier_retention(db, name[len("retention-"):-len("-days")], value)
    click.echo("%s = %d (applies at the next `metricstore maintain`)" % (name, value))


@cli.group()
def rollups():
    """Rollup tiers (5 min, 1 h, 1 d): coverage, lag, rebuild.

    \b
    Example:
      metricstore rollups status
      metricstore rollups rebuild --start -7d --end now
    """


@rollups.command("status")
@url_option
def rollups_status(url):
    """Each tier's rows, covered buckets, retention and lag behind raw (read-only).

    Example: metricstore rollups status
    """
    db = open_db(url)
    rows = []
    for t in tier_status(db):
        rows.append((t.name, t.table, ("" if t.exact else "~") + str(t.rows), _when(t.first),
                     _when(t.last), "%d d" % t.retention_days,
                     "-" if t.lag is None else "%.0f s" % t.lag.total_seconds()))
    click.echo(table(["tier", "table", "rows", "from", "to", "retention", "lag"], rows))
    click.echo("tiers are updated in the write transaction: a read right after a write "
               "sees it")


@rollups.command("rebuild")
@url_option
@click.option("--start", required=True, help="ISO-8601 with offset, or relative (-7d).")
@click.option("--end", default="now", show_default=True)
def rollups_rebuild(url, start, end):
    """Recompute the tiers from raw over whole UTC days (idempotent).

    Refuses days whose raw samples are past the retention.

    \b
    Example:
      metricstore rollups rebuild --start 2026-11-01T00:00:00Z --end 2026-11-08T00:00:00Z
    """
    db = open_db(url)
    n = rebuild_tiers(db, parse_when(start), parse_when(end))
    click.echo("rebuilt %d 5-minute bucket(s) and the hours and days above them" % n)


@cli.command()
@click.argument("file", type=click.File("r"))
@url_option
@click.option("--format", "fmt", type=click.Choice(["auto", "csv", "jsonl"]), default="auto",
              show_default=True, help="Input format (auto: by file name, else CSV).")
@click.option("--skip-invalid", is_flag=True,
              help="Store the valid rows and report the rest (default: stop at a bad row).")
@click.option("--atomic", is_flag=True,
              help="One transaction for the whole input: all rows or none (holds the "
                   "write lock for the final insert of everything).")
@click.option("--commit-every", type=click.IntRange(1), default=INGEST_COMMIT_ROWS,
              show_default=True, help="Rows per committed transaction (without --atomic).")
def ingest(file, url, fmt, skip_invalid, atomic, commit_every):
    """Load samples from CSV or JSON Lines (- for stdin), streamed.

    Rows: server_id, metric, value, collected_at (ISO-8601 with an offset).
    The input is read and validated without holding the database's write
    lock; rows are committed every --commit-every rows, so other writers
    never wait long. If a load fails part-way, re-running the same input is
    safe: ingest is idempotent, rows already stored are skipped as
    duplicates. --atomic commits everything at once instead.

    \b
    Example:
      metricstore ingest samples.csv
      collector --dump | metricstore ingest --format jsonl -
    """
    if fmt == "auto":
        fmt = "jsonl" if file.name.endswith((".jsonl", ".ndjson", ".json")) else "csv"
    repo = MetricRepository(open_db(url))
    lines = array("L")                     # line number of each row, for error reports
    size = os.fstat(file.fileno()).st_size if file.name != "<stdin>" else 0
    consumed = [0]

    def counted(stream):                   # characters read so far, for the progress bar
        for text in stream:
            consumed[0] += len(text)
            yield text

    rows = (_csv_rows if fmt == "csv" else _jsonl_rows)(counted(file), lines)
    with click.progressbar(length=max(size, 1), label="ingesting", file=sys.stderr) as bar:
        def tracked():
            for n, row in enumerate(rows, 1):
                yield row
                if n % 10_000 == 0:
                    bar.update(consumed[0] - bar.pos)
        try:
            result = repo.record_many(tracked(), on_error="skip" if skip_invalid else "raise",
                                      commit_every=None if atomic else commit_every)
        except ValidationError as exc:
            _report_rejected(exc.errors, lines, exc.rows)
            kept = ("nothing was written" if not exc.committed else
                    "rows before line %d were committed, nothing after; re-running the "
                    "fixed input is safe" % lines[exc.committed])
            raise MetricstoreError("%d invalid row(s); %s (fix them, or pass --skip-invalid "
                                   "to store the valid rows)" % (exc.rows, kept)) \
                from None
        bar.update(size)
    _report_rejected(result.rejected, lines, result.rejected_rows)
    click.echo("inserted %d, duplicates %d, rejected %d, expired %d" % (
        result.inserted, result.duplicates, result.rejected_rows, result.expired))


def _report_rejected(errors, lines, rows):
    """One line per kept RowError (the library keeps the first 1,000), then
    how many more of the ``rows`` bad rows were left out."""
    for e in errors:
        echo_err("line %d: %s: %s" % (lines[e.position], e.field, e.reason))
    listed = len({e.position for e in errors})
    if rows > listed:
        echo_err("... and %d more invalid row(s) not listed" % (rows - listed))


def _number(text, kind):
    try:
        return kind(text)
    except (TypeError, ValueError):
        return text


def _time(text):
    if isinstance(text, str):
        try:
            return datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            pass
    return text


def _csv_rows(file, lines):
    reader = csv.DictReader(file)
    for record in reader:
        lines.append(reader.line_num)
        yield (_number(record.get("server_id"), int), record.get("metric"),
               _number(record.get("value"), float), _time(record.get("collected_at")))


def _jsonl_rows(file, lines):
    for number, text in enumerate(file, 1):
        if not text.strip():
            continue
        lines.append(number)
        try:
            record = json.loads(text)
        except ValueError as exc:
            yield ("invalid JSON: %s" % exc,)    # fails validation with its line number
            continue
        if isinstance(record, dict):
            record = [record.get(k) for k in ("server_id", "metric", "value", "collected_at")]
        if isinstance(record, list) and len(record) == 4:
            record[3] = _time(record[3])
        yield tuple(record) if isinstance(record, list) else record


@cli.group()
def query():
    """Read series, buckets, rates, latest values and rankings.

    \b
    Example:
      metricstore query buckets demo-sql-01 cpu_percent --start -24h --every 1h
    """


def _server(repo, ref):
    """A server id from an id or a name."""
    for s in repo.servers():
        if str(s.id) == ref or s.name == ref:
            return s.id
    raise QueryError("unknown server %r; known: %s" % (
        ref, ", ".join(s.name for s in repo.servers()) or "none (run `metricstore demo`)"))


range_options = [
    click.option("--start", default="-24h", show_default=True,
                 help="ISO-8601 with offset, 'now' or relative (-24h)."),
    click.option("--end", default="now", show_default=True),
]


def with_range(f):
    for option in reversed(range_options):
        f = option(f)
    return f


def one_series(f):
    """SERVER METRIC, the time range, --url and --format."""
    for decorator in reversed([click.argument("server"), click.argument("metric"),
                               *range_options, url_option, format_option]):
        f = decorator(f)
    return f


def emit(headers, rows, fmt, spark=None):
    if fmt == "json":
        click.echo(json.dumps([dict(zip(headers, [_plain(v) for v in r])) for r in rows],
                              indent=1))
    elif fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(headers)
        writer.writerows([[_plain(v) for v in r] for r in rows])
        click.echo(buffer.getvalue(), nl=False)
    else:
        click.echo(table(headers, rows))
        if spark is not None:
            click.echo(sparkline(spark))


def _plain(value):
    return value.isoformat() if isinstance(value, datetime) else value


@query.command("series")
@one_series
def query_series(server, metric, start, end, url, fmt):
    """Raw points of one server's metric.

    Example: metricstore query series demo-sql-01 cpu_percent --start -1h
    """
    repo = MetricRepository(open_db(url))
    points = list(repo.series(_server(repo, server), metric, parse_when(start),
                              parse_when(end)))
    emit(["collected_at", "value"], points, fmt, [p.value for p in points])


@query.command("buckets")
@one_series
@click.option("--every", default="1h", show_default=True, help="Bucket width (15s, 5m, 1h, 1d).")
@click.option("--stats", default="avg,min,max,count", show_default=True,
              help="Comma-separated: avg,min,max,sum,count,last,p50,p90,p95,p99.")
@click.option("--fill", is_flag=True, help="Show empty buckets too.")
def query_buckets(server, metric, start, end, every, stats, fill, url, fmt):
    """Statistics per UTC-aligned bucket.

    Example: metricstore query buckets demo-sql-01 cpu_percent --every 1h --stats avg,p95
    """
    repo = MetricRepository(open_db(url))
    names = tuple(s.strip() for s in stats.split(",") if s.strip())
    buckets = repo.buckets(_server(repo, server), metric, parse_when(start), parse_when(end),
                           parse_duration(every), stats=names, fill=fill)
    emit(["start"] + list(names), [(b.start, *b.stats.values()) for b in buckets], fmt,
         [b.stats[names[0]] for b in buckets])


@query.command("rate")
@one_series
@click.option("--every", default="1h", show_default=True, help="Bucket width.")
@click.option("--max-gap", default="5m", show_default=True,
              help="Leave out sample pairs further apart.")
def query_rate(server, metric, start, end, every, max_gap, url, fmt):
    """Per-second rate of a counter per bucket (resets handled).

    Example: metricstore query rate demo-sql-01 disk_io_reads --every 1h
    """
    repo = MetricRepository(open_db(url))
    rates = repo.rate(_server(repo, server), metric, parse_when(start), parse_when(end),
                      parse_duration(every), max_gap=parse_duration(max_gap))
    emit(["start", "rate_per_s", "pairs"], [(r.start, r.rate, r.pairs) for r in rates], fmt,
         [r.rate for r in rates])


@query.command("latest")
@click.argument("metric")
@url_option
@format_option
def query_latest(metric, url, fmt):
    """The latest value of a metric for every server.

    Example: metricstore query latest cpu_percent --format json
    """
    repo = MetricRepository(open_db(url))
    emit(["server", "collected_at", "value"],
         [(r.server_name, r.collected_at, r.value) for r in repo.latest(metric)], fmt)


@query.command("top")
@click.argument("metric")
@with_range
@click.option("-n", default=10, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--stat", default="avg", show_default=True,
              type=click.Choice(["avg", "min", "max", "last", "p50", "p90", "p95", "p99"]))
@click.option("--ascending", is_flag=True, help="Lowest first.")
@url_option
@format_option
def query_top(metric, start, end, n, stat, ascending, url, fmt):
    """The servers ranked by a statistic of a metric.

    Example: metricstore query top cpu_percent --stat p95 -n 5 --start -24h
    """
    repo = MetricRepository(open_db(url))
    ranked = repo.top(metric, parse_when(start), parse_when(end), n=n, stat=stat,
                      ascending=ascending)
    emit(["server", stat], [(r.server_name, r.value) for r in ranked], fmt)


@cli.group(invoke_without_command=True)
@click.option("--from", "source", metavar="URL", help="The spool (the agent's database).")
@click.option("--to", "target", metavar="URL", help="The central tenant database.")
@click.option("--once", "mode", flag_value="once", default=True,
              help="Forward what is waiting, then exit (default).")
@click.option("--follow", "mode", flag_value="follow",
              help="Keep forwarding; ride out outages (Ctrl-C or SIGTERM stops).")
@click.option("--batch-rows", type=click.IntRange(1, 1_000_000), default=200_000,
              show_default=True, help="Rows per backfill batch.")
@click.option("--live-rows", type=click.IntRange(1, 1_000_000), default=2_000,
              show_default=True, help="Rows per newest-first batch while a backlog drains.")
@click.option("--max-rows", type=click.IntRange(1), default=None,
              help="Spool cap in metric + snapshot rows.")
@click.option("--max-bytes", type=click.IntRange(1), default=None,
              help="Spool cap in bytes used by the local database.")
@click.option("--local-retention", default="7d", show_default=True,
              help="Delete forwarded rows older than this locally ('none' keeps them).")
@click.option("--max-backoff", default="60s", show_default=True,
              help="Longest pause between retries while the central side is away.")
@click.option("--poll", default="1s", show_default=True,
              help="Pause when the spool is empty (--follow).")
@click.option("--retarget", is_flag=True,
              help="Accept a destination other than the spool's previous one.")
@click.option("-v", "--verbose", is_flag=True, help="Log each retry and recovery on stderr.")
@click.pass_context
def forward(ctx, source, target, mode, batch_rows, live_rows, max_rows, max_bytes,
            local_retention, max_backoff, poll, retarget, verbose):
    """Forward the spool's samples, snapshots and servers to the central database.

    Exactly once in effect: kill it at any point and restart it. Without
    --follow it forwards what is waiting and exits (1 if the central side is
    unreachable: the rows stay in the spool).

    \b
    Example:
      metricstore forward --from sqlite:///agent.db --to postgresql://app@db/tenant --follow
      metricstore forward --from sqlite:///agent.db --to postgresql://app@db/tenant --once
    """
    if ctx.invoked_subcommand is not None:
        return
    if not source or not target:
        raise click.UsageError("forward needs --from URL (the spool) and --to URL (the "
                               "central database); see `metricstore forward --help`")
    if verbose:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s",
                            stream=sys.stderr)
    retention = None if local_retention.lower() == "none" else parse_duration(local_retention)
    forwarder = forwarding.Forwarder(
        open_db(source), connect(target), batch_rows=batch_rows, live_rows=live_rows,
        poll_s=parse_duration(poll).total_seconds(),
        backoff=forwarding.Backoff(cap=max(parse_duration(max_backoff).total_seconds(), 0.5)),
        cap=forwarding.SpoolCap(max_rows, max_bytes) if max_rows or max_bytes else None,
        local_retention=retention, retarget=retarget)
    signal.signal(signal.SIGTERM, lambda *_: forwarder.stop())
    try:
        totals = forwarder.run(follow=mode == "follow")
    except KeyboardInterrupt:
        totals = forwarder.totals
    click.echo("forwarded %d, duplicates %d, expired %d, quarantined %d" % (
        totals.inserted, totals.duplicates, totals.expired, len(totals.quarantined)))


@forward.command("status")
@click.option("--from", "source", metavar="URL", envvar="DATABASE_URL", default=None,
              help="The spool (default: $DATABASE_URL, else sqlite:///metricstore.db).")
@click.option("--max-lag", default="5m", show_default=True,
              help="An unforwarded sample older than this needs attention.")
@click.option("--quarantined", "limit", type=click.IntRange(0), default=20, show_default=True,
              help="How many quarantined rows to list.")
def forward_status(source, max_lag, limit):
    """Spool rows and bytes, lag, last success and error, counts, quarantined rows.

    Exits 1 when something needs attention (lag, a failed last attempt,
    quarantined or dropped rows). Read-only.

    \b
    Example:
      metricstore forward status --from sqlite:///agent.db || alert "forwarding"
    """
    s = forwarding.status(open_db(source), max_lag=parse_duration(max_lag),
                          quarantine_limit=limit)
    click.echo("spool: %s  destination: %s" % (s.spool_id or "not enabled",
                                                s.destination or "-"))
    click.echo("waiting: %d rows  (local rows %d, %s)" % (s.spool_rows, s.local_rows,
                                                          human_bytes(s.spool_bytes)))
    if s.compacted_waiting[0]:
        click.echo("waiting compacted: %d 5-minute states of %d rows" % s.compacted_waiting)
    click.echo("oldest unforwarded: %s%s" % (_when(s.oldest_unforwarded), "" if s.lag is None
                                             else "  (lag %s)" % _short(s.lag)))
    click.echo("last success: %s" % _when(s.last_success_at))
    click.echo("last error: %s%s" % (_when(s.last_error_at),
                                     "  " + s.last_error if s.last_error else ""))
    click.echo("rows: " + ", ".join("%s %d" % (k, v) for k, v in s.counts.items()))
    if s.quarantined:
        click.echo("quarantined (newest first):")
        click.echo(table(["when", "server", "metric", "collected_at", "field", "reason"],
                         [(_when(q.quarantined_at), q.server_name, q.metric or "(snapshot)",
                           _when(q.collected_at), q.field, q.reason[:80])
                          for q in s.quarantined]))
    for problem in s.problems:
        click.echo("attention: " + problem)
    if not s.ok:
        raise SystemExit(EXIT_ATTENTION)


def _short(delta):
    return str(timedelta(seconds=int(delta.total_seconds())))


def _quiet_driver_noise(hook=sys.unraisablehook):
    """psycopg2 2.9 reports a server error that ends a COPY a second time, as
    an unraisable SystemError printed to stderr; metricstore already raised
    it as an error of its own, so the CLI drops that print (only that one:
    a SystemError chained to a psycopg2 error, or the interpreter's "returned
    a result with an exception set" raised inside the driver's decoding)."""
    def unraisable(info):
        exc = info.exc_value
        if not (isinstance(exc, SystemError) and (
                "returned a result with an exception set" in str(exc)
                or any(type(e).__module__.startswith("psycopg2") for e in _chain(exc)))):
            hook(info)
    return unraisable


def _chain(exc):
    """The exceptions ``exc`` was raised from or during, nearest first."""
    seen = []
    while exc is not None and exc not in seen and len(seen) < 10:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen[1:]


def main(argv=None):
    """Run the command line; return the exit code."""
    sys.unraisablehook = _quiet_driver_noise()
    try:
        cli.main(args=argv, prog_name="metricstore", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.Abort:
        echo_err("error: aborted")
        return EXIT_USAGE
    except click.ClickException as exc:
        echo_err("error: %s" % exc.format_message())
        return EXIT_USAGE
    except MetricstoreError as exc:
        echo_err("error: %s" % _one_line(exc))
        return exc.exit_code
    except DRIVER_ERRORS as exc:          # a path the library failed to guard
        echo_err("error: database: %s" % _one_line(exc))
        return EXIT_ENVIRONMENT
    except OSError as exc:                # e.g. stdout or an input file went away
        echo_err("error: %s" % _one_line(exc))
        return EXIT_ENVIRONMENT
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 0
    return 0


def _one_line(exc):
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def entry_point():
    sys.exit(main())
