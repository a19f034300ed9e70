"""`metricstore rollups status|rebuild` and the tier retention settings."""

from datetime import datetime, timedelta, timezone

import metricstore
from metricstore import MetricRepository
from metricstore.cli import main
from metricstore.rollups.store import tier_rows
from metricstore.rollups.tiers import TIER_1H
from metricstore.timeutil import utcnow


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_status_rebuild_and_tier_settings(capsys, db, tenant_url):
    repo = MetricRepository(db)
    sid = repo.add_server("cli-a")
    now = utcnow().replace(microsecond=0)
    repo.record_many([(sid, "cpu_percent", float(i % 70), now - timedelta(seconds=15 * i))
                      for i in range(1, 500)])
    code, out, _ = run(capsys, "rollups", "status", "--url", tenant_url)
    assert code == 0
    lines = {line.split()[0]: line for line in out.splitlines() if line[:2] in ("5m", "1h", "1d")}
    assert set(lines) == {"5m", "1h", "1d"}
    assert "180 d" in lines["5m"] and "lag" in out and "0 s" in lines["5m"]

    mid = repo.metric_rules()["cpu_percent"].id
    before = tier_rows(db, TIER_1H, [(sid, mid, 0, 2 ** 62)])
    db.execute_sql("DELETE FROM rollup_1h")
    code, out, _ = run(capsys, "rollups", "rebuild", "--start", "-1d", "--url", tenant_url)
    assert code == 0 and "rebuilt" in out
    assert tier_rows(db, TIER_1H, [(sid, mid, 0, 2 ** 62)]) == before

    code, out, err = run(capsys, "rollups", "rebuild", "--start", "-40d", "--url", tenant_url)
    assert code == 2 and "past the retention" in err and "Traceback" not in err

    code, out, _ = run(capsys, "settings", "set", "retention-1h-days", "400", "--url", tenant_url)
    assert code == 0
    code, out, _ = run(capsys, "settings", "get", "retention-1h-days", "--url", tenant_url)
    assert out.strip() == "400"
    code, out, _ = run(capsys, "settings", "set", "retention-1h-days", "20", "--url", tenant_url)
    code, out, _ = run(capsys, "settings", "get", "--url", tenant_url)
    assert "retention-1h-days = 20 (kept 181" in out and "retention-days = 30" in out
    code, _, err = run(capsys, "settings", "set", "retention-5m-days", "0", "--url", tenant_url)
    assert code == 2 and "retention-5m-days" in err
    code, out, _ = run(capsys, "status", "--url", tenant_url)
    assert "rollup_5m:" in out and "1h tier 181 days" in out
