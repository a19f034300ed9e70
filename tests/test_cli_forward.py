"""`metricstore forward` and `metricstore forward status` through the real entry point."""

from datetime import timedelta
from pathlib import Path

import pytest

import metricstore
from metricstore.cli import main
from metricstore.timeutil import utcnow

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def agent(tmp_path):
    url = "sqlite:///" + str(tmp_path / "agent.db")
    db = metricstore.connect(url)
    db.connect()
    metricstore.provision(db)
    repo = metricstore.MetricRepository(db)
    sid = repo.add_server("cli-agent")
    t = utcnow().replace(microsecond=0) - timedelta(hours=1)
    repo.record_many([(sid, "cpu_percent", float(k), t + timedelta(seconds=15 * k))
                      for k in range(30)])
    repo.record_snapshot(sid, t, 1.0, 2.0, 3)
    yield url
    db.close()


def test_forward_has_help_with_an_example_and_is_in_the_readme(capsys):
    code, out, _ = run(capsys, "forward", "--help")
    assert code == 0 and "Example" in out and "--follow" in out
    assert "`metricstore forward --from URL --to URL [--once" in README


def test_forward_once_then_status(capsys, agent, tenant_url):
    run(capsys, "init", tenant_url)
    code, out, err = run(capsys, "forward", "--from", agent, "--to", tenant_url, "--once")
    assert code == 0, err
    assert "forwarded 31, duplicates 0, expired 0, quarantined 0" in out
    central = metricstore.connect(tenant_url)
    with central.connection_context():
        assert central.execute_sql("SELECT count(*) FROM metrics").fetchone()[0] == 30
    code, out, _ = run(capsys, "forward", "status", "--from", agent)
    assert code == 0
    assert "waiting: 0 rows" in out and "forwarded 31" in out and "attention" not in out
    code, out, _ = run(capsys, "forward", "--from", agent, "--to", tenant_url)
    assert code == 0 and "forwarded 0" in out                   # nothing waits: nothing sent


def test_an_unreachable_central_database_is_one_error_line_and_nothing_is_lost(capsys, agent):
    code, out, err = run(capsys, "forward", "--from", agent, "--to",
                         "postgresql://nobody@127.0.0.1:56439/none")
    assert code == 1                                    # the environment, not the caller
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert "nothing is lost" in err and "Traceback" not in err
    code, out, _ = run(capsys, "forward", "status", "--from", agent)
    assert code == 1
    assert "waiting: 31 rows" in out and "attention: the last attempt failed" in out
    assert "lag" in out


def test_forward_needs_both_urls(capsys, agent):
    code, _, err = run(capsys, "forward", "--from", agent)
    assert code == 2 and "--to URL" in err


def test_status_of_a_database_that_is_not_a_spool_says_how_to_start(capsys, tenant_url):
    run(capsys, "init", tenant_url)
    code, out, _ = run(capsys, "forward", "status", "--from", tenant_url)
    assert code == 1 and "not a spool yet" in out


def test_status_lists_quarantined_rows(capsys, agent, tenant_url):
    run(capsys, "init", tenant_url)
    central = metricstore.connect(tenant_url)
    with central.connection_context():
        central.execute_sql("DELETE FROM metric_types WHERE name = 'cpu_percent'")
    code, out, err = run(capsys, "forward", "--from", agent, "--to", tenant_url)
    assert code == 0 and "quarantined 30" in out
    code, out, _ = run(capsys, "forward", "status", "--from", agent)
    assert code == 1 and "quarantined (newest first)" in out
    assert "unknown metric 'cpu_percent'" in out and "cli-agent" in out
