"""The metricstore command: every command through the real entry point
(``metricstore.cli.main``), its output, exit codes and error lines."""

import json
import re
from datetime import timedelta
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import metricstore
from metricstore.cli import cli, main
from metricstore.timeutil import utcnow

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def walk(group, prefix=()):
    for name, command in sorted(group.commands.items()):
        path = prefix + (name,)
        if isinstance(command, click.Group):
            yield from walk(command, path)
        else:
            yield path, command


COMMANDS = list(walk(cli))


def test_the_command_tree_is_what_the_issue_asks_for():
    names = {" ".join(path) for path, _ in COMMANDS}
    assert {"init", "demo", "maintain", "partitions", "status", "settings get",
            "settings set", "ingest", "query series", "query buckets", "query rate",
            "query latest", "query top", "forward status"} <= names


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=" ".join)
def test_every_command_has_help_with_an_example_and_is_in_the_readme(capsys, path):
    code, out, _ = run(capsys, *path, "--help")
    assert code == 0
    assert "Example" in out, "%s --help shows no example" % " ".join(path)
    assert "`metricstore %s" % " ".join(path) in README, \
        "%s missing from the README's command reference" % " ".join(path)


def test_init_provisions_then_finds_everything_in_place(capsys, tenant_url):
    code, out, _ = run(capsys, "init", tenant_url)
    assert code == 0 and "001_initial" in out and "metric types written: 9" in out
    code, out, _ = run(capsys, "init", tenant_url)
    assert code == 0 and "none (up to date)" in out and "metric types written: 0" in out


def test_malformed_url_is_one_error_line_and_exit_2(capsys):
    code, out, err = run(capsys, "status", "--url", "sqlite://relative.db")
    assert code == 2
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert "three slashes" in err
    code, _, err = run(capsys, "init", "mysql://x/y")
    assert code == 2 and "unknown scheme" in err and "postgresql://" in err


def test_unknown_option_is_a_usage_error_without_traceback(capsys):
    code, _, err = run(capsys, "status", "--bogus")
    assert code == 2 and err.startswith("error: ") and "Traceback" not in err


def test_demo_prints_the_fleet_view(capsys, tenant_url):
    code, out, err = run(capsys, "demo", "--url", tenant_url, "--servers", "3",
                         "--days", "0.25")
    assert code == 0, err
    assert "Fleet at" in out and "Top servers by CPU" in out and "I/O rates" in out
    assert "STALE" in out                       # the silent server
    assert re.search("[▁▂▃▄▅▆▇█]{3,}", out)      # sparklines
    db = metricstore.connect(tenant_url)
    repo = metricstore.MetricRepository(db)
    names = [s.name for s in repo.servers()]
    assert names == ["demo-sql-01", "demo-sql-02", "demo-sql-03"]
    silent = repo.silent_servers(utcnow() - timedelta(minutes=30))
    assert [s.name for s in silent] == ["demo-sql-03"]
    # the counters are monotone except for the one reset of the first server
    points = list(repo.series(1, "disk_io_reads", utcnow() - timedelta(days=1), utcnow()))
    drops = sum(1 for a, b in zip(points, points[1:]) if b.value < a.value)
    assert drops == 1


def test_demo_run_twice_catches_up_without_breaking_counters(capsys, tenant_url):
    assert run(capsys, "demo", "--url", tenant_url, "--servers", "3", "--days", "0.1")[0] == 0
    assert run(capsys, "demo", "--url", tenant_url, "--servers", "3", "--days", "0.1")[0] == 0
    repo = metricstore.MetricRepository(metricstore.connect(tenant_url))
    points = list(repo.series(2, "disk_io_writes", utcnow() - timedelta(days=1), utcnow()))
    assert all(b.value >= a.value for a, b in zip(points, points[1:]))


@pytest.fixture
def provisioned(tenant_url):
    db = metricstore.connect(tenant_url)
    metricstore.provision(db)
    db.close()
    return tenant_url


def test_maintain_dry_run_prints_a_plan_and_changes_nothing(capsys, provisioned):
    code, out, _ = run(capsys, "maintain", "--dry-run", "--url", provisioned)
    assert code == 0 and "maintenance plan at" in out and "dry run: nothing changed" in out
    assert metricstore.last_run(metricstore.connect(provisioned)) is None
    code, out, _ = run(capsys, "maintain", "--url", provisioned)
    assert code == 0 and "done:" in out
    assert metricstore.last_run(metricstore.connect(provisioned)) is not None


def test_status_exit_code_gates_on_maintenance(capsys, provisioned):
    code, out, _ = run(capsys, "status", "--url", provisioned)
    assert code == 1 and "never run" in out
    run(capsys, "maintain", "--url", provisioned)
    code, out, _ = run(capsys, "status", "--url", provisioned)
    assert code == 0, out
    assert "retention: 30 days" in out and "001_initial" in out


def test_status_on_an_unprovisioned_database_says_how_to_fix(capsys, tenant_url):
    code, _, err = run(capsys, "status", "--url", tenant_url)
    assert code == 2 and "metricstore init" in err


def test_partitions_lists_bounds_or_says_sqlite_has_none(capsys, provisioned, backend):
    code, out, _ = run(capsys, "partitions", "--url", provisioned)
    assert code == 0
    if backend == "sqlite":
        assert "not partitioned" in out
    else:
        month = utcnow().strftime("%Y_%m")
        assert "metrics_p%s" % month in out and "DEFAULT" in out


def test_settings_get_and_set(capsys, provisioned):
    assert run(capsys, "settings", "get", "retention-days", "--url", provisioned)[1].strip() \
        == "30"
    code, out, _ = run(capsys, "settings", "set", "retention-days", "7", "--url", provisioned)
    assert code == 0
    assert run(capsys, "settings", "get", "retention-days", "--url", provisioned)[1].strip() \
        == "7"
    code, _, err = run(capsys, "settings", "set", "retention-days", "0", "--url", provisioned)
    assert code == 2 and "retention_days" in err and "1 to 3660" in err


def _csv(path, rows):
    path.write_text("server_id,metric,value,collected_at\n"
                    + "".join("%s,%s,%s,%s\n" % r for r in rows))
    return str(path)


def _count(url):
    db = metricstore.connect(url)
    return db.execute_sql("SELECT count(*) FROM metrics").fetchone()[0]


def test_ingest_csv_is_atomic_and_reports_line_numbers(capsys, provisioned, tmp_path):
    sid = metricstore.MetricRepository(metricstore.connect(provisioned)).add_server("a")
    t = utcnow().replace(microsecond=0) - timedelta(hours=1)
    rows = [(sid, "cpu_percent", 10 + i, (t + timedelta(seconds=15 * i)).isoformat())
            for i in range(5)]
    rows[3] = (sid, "cpu_percent", "abc", rows[3][3])
    path = _csv(tmp_path / "in.csv", rows)
    code, out, err = run(capsys, "ingest", path, "--url", provisioned)
    assert code == 2
    assert "line 5: value" in err and "abc" in err
    assert "nothing was written" in err and _count(provisioned) == 0
    code, out, err = run(capsys, "ingest", path, "--url", provisioned, "--skip-invalid")
    assert code == 0 and "inserted 4, duplicates 0, rejected 1" in out
    code, out, err = run(capsys, "ingest", path, "--url", provisioned, "--skip-invalid")
    assert "inserted 0, duplicates 4, rejected 1" in out
    assert _count(provisioned) == 4


def test_ingest_jsonl_from_stdin(provisioned):
    sid = metricstore.MetricRepository(metricstore.connect(provisioned)).add_server("a")
    t = utcnow().replace(microsecond=0) - timedelta(minutes=5)
    lines = [json.dumps({"server_id": sid, "metric": "memory_percent", "value": 50 + i,
                         "collected_at": (t + timedelta(seconds=15 * i)).isoformat()})
             for i in range(3)]
    result = CliRunner().invoke(cli, ["ingest", "--format", "jsonl", "-", "--url", provisioned],
                                input="\n".join(lines) + "\n")
    assert result.exit_code == 0, result.output
    assert "inserted 3, duplicates 0, rejected 0" in result.output
    assert _count(provisioned) == 3


@pytest.fixture
def loaded(provisioned):
    db = metricstore.connect(provisioned)
    repo = metricstore.MetricRepository(db)
    a, b = repo.add_server("alpha"), repo.add_server("beta")
    end = utcnow().replace(microsecond=0)
    start = end - timedelta(hours=2)
    rows = []
    for i in range(480):
        t = start + timedelta(seconds=15 * i)
        rows += [(a, "cpu_percent", float(i % 50), t), (b, "cpu_percent", 20.0, t),
                 (a, "disk_io_reads", float(100 * i), t)]
    repo.record_many(rows)
    return provisioned, repo, a, start, end


def test_query_series_and_buckets_print_tables_csv_and_json(capsys, loaded):
    url, repo, a, start, end = loaded
    since = end - timedelta(minutes=30)
    code, out, _ = run(capsys, "query", "series", "alpha", "cpu_percent", "--start",
                       since.isoformat(), "--end", end.isoformat(), "--url", url,
                       "--format", "csv")
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0] == "collected_at,value"
    expected = list(repo.series(a, "cpu_percent", since, end))
    assert lines[1:] == ["%s,%s" % (p.collected_at.isoformat(), p.value) for p in expected]
    code, out, _ = run(capsys, "query", "buckets", "alpha", "cpu_percent", "--start", "-2h",
                       "--every", "30m", "--stats", "avg,p95", "--url", url,
                       "--format", "json")
    data = json.loads(out)
    assert data and set(data[0]) == {"start", "avg", "p95"}
    code, out, _ = run(capsys, "query", "buckets", "1", "cpu_percent", "--start", "-2h",
                       "--url", url)
    assert code == 0 and "avg" in out and re.search("[▁▂▃▄▅▆▇█]", out)


def test_query_rate_latest_top(capsys, loaded):
    url, repo, a, start, end = loaded
    code, out, _ = run(capsys, "query", "rate", "alpha", "disk_io_reads", "--every", "1h",
                       "--start", "-3h", "--url", url, "--format", "json")
    assert code == 0
    assert all(abs(r["rate_per_s"] - 100 / 15) < 1e-9 for r in json.loads(out))
    code, out, _ = run(capsys, "query", "latest", "cpu_percent", "--url", url,
                       "--format", "json")
    assert {r["server"] for r in json.loads(out)} == {"alpha", "beta"}
    code, out, _ = run(capsys, "query", "top", "cpu_percent", "--stat", "max", "-n", "1",
                       "--url", url, "--format", "csv")
    assert out.strip().splitlines()[1] == "alpha,49.0"


@pytest.mark.parametrize("argv, needle", [
    (("query", "series", "nobody", "cpu_percent"), "unknown server 'nobody'"),
    (("query", "series", "alpha", "cpu_pct"), "unknown metric 'cpu_pct'"),
    (("query", "buckets", "alpha", "cpu_percent", "--start", "yesterday"), "not understood"),
    (("query", "buckets", "alpha", "cpu_percent", "--every", "0s"), "positive"),
    (("query", "buckets", "alpha", "cpu_percent", "--stats", "median"), "stats must be"),
    (("query", "rate", "alpha", "cpu_percent"), "is a gauge"),
    (("query", "buckets", "alpha", "cpu_percent", "--start", "2026-01-01T00:00:00"), "naive"),
])
def test_query_errors_are_one_line_naming_the_input(capsys, loaded, argv, needle):
    url = loaded[0]
    code, out, err = run(capsys, *argv, "--url", url)
    assert code == 2
    assert err.startswith("error: ") and needle in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_ingest_streams_a_large_csv_with_progress(capsys, provisioned, tmp_path):
    sid = metricstore.MetricRepository(metricstore.connect(provisioned)).add_server("a")
    t = utcnow().replace(microsecond=0) - timedelta(days=2)
    rows = [(sid, "cpu_percent", i % 100, (t + timedelta(seconds=5 * i)).isoformat())
            for i in range(25_000)]
    code, out, err = run(capsys, "ingest", _csv(tmp_path / "big.csv", rows), "--url",
                         provisioned)
    assert code == 0, err
    assert "inserted 25000, duplicates 0, rejected 0" in out
    assert _count(provisioned) == 25_000


def test_cli_drops_only_the_drivers_unraisable_copy_noise():
    """The CLI's unraisable hook drops psycopg2's second report of a COPY
    error (a SystemError chained to a driver error, or the interpreter's
    'returned a result with an exception set'); everything else still prints."""
    import types

    import psycopg2

    from metricstore.cli import _quiet_driver_noise
    forwarded = []
    hook = _quiet_driver_noise(forwarded.append)

    def info(exc):
        return types.SimpleNamespace(exc_value=exc, exc_type=type(exc), exc_traceback=None,
                                     err_msg=None, object=None)

    chained = SystemError("boom")
    chained.__cause__ = psycopg2.OperationalError("server closed the connection")
    in_decode = SystemError("<function decode at 0x1> returned a result with an exception set")
    in_decode.__context__ = UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")
    other_system = SystemError("something else")
    other_system.__cause__ = ValueError("not the driver")
    plain = ValueError("a real bug")
    for exc in (chained, in_decode, other_system, plain):
        hook(info(exc))
    assert [i.exc_value for i in forwarded] == [other_system, plain]
