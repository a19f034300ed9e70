"""connect(url): which URLs open which database, the defaults, the refusals,
and the session settings every connection runs with (issue 2, item 2)."""

import os

import peewee as pw
import pytest

import metricstore
from metricstore import ConfigurationError, connect

PG = "postgresql://root@127.0.0.1:5432/test"


# -- SQLite URLs ---------------------------------------------------------------

def test_sqlite_three_slashes_is_a_path_relative_to_the_working_directory(tmp_path,
                                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)
    db = connect("sqlite:///tenant.db")
    assert isinstance(db, pw.SqliteDatabase)
    assert db.database == "tenant.db"
    db.connect()
    db.execute_sql("CREATE TABLE t (x INTEGER)")
    db.close()
    assert (tmp_path / "tenant.db").is_file()


def test_sqlite_relative_path_with_folders(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    db = connect("sqlite:///data/tenant.db")
    db.connect()
    db.execute_sql("CREATE TABLE t (x INTEGER)")
    db.close()
    assert (tmp_path / "data" / "tenant.db").is_file()


def test_sqlite_four_slashes_is_an_absolute_path(tmp_path, monkeypatch):
    target = tmp_path / "abs.db"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    db = connect("sqlite:///" + str(target))          # str(target) starts with "/"
    assert db.database == str(target)
    db.connect()
    db.execute_sql("CREATE TABLE t (x INTEGER)")
    db.close()
    assert target.is_file()
    assert list(elsewhere.iterdir()) == []


# -- PostgreSQL URLs (parsing only: nothing here needs a server) ------------------

@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_postgresql_url_gives_a_postgres_database(scheme):
    db = connect(scheme + "://alice:s3cret@db.example:6543/tenants")
    assert isinstance(db, pw.PostgresqlDatabase)
    assert db.database == "tenants"
    assert db.connect_params["host"] == "db.example"
    assert db.connect_params["port"] == 6543
    assert db.connect_params["user"] == "alice"
    assert db.connect_params["password"] == "s3cret"
    assert db.schema is None


def test_postgresql_schema_option_selects_the_tenant_schema():
    db = connect(PG + "?schema=tenant_a")
    assert db.schema == "tenant_a"
    assert "search_path=tenant_a" in db.connect_params["options"]


def test_postgresql_sessions_are_asked_for_utc():
    assert "TimeZone=UTC" in connect(PG).connect_params["options"]


# -- the default URL ---------------------------------------------------------------

def test_database_url_is_the_default(tmp_path, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "sqlite:///" + str(tmp_path / "from_env.db"))
    assert metricstore.default_url() == "sqlite:///" + str(tmp_path / "from_env.db")
    assert connect().database == str(tmp_path / "from_env.db")


def test_database_url_can_pick_postgresql(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", PG + "?schema=from_env")
    db = connect()
    assert isinstance(db, pw.PostgresqlDatabase)
    assert db.schema == "from_env"


@pytest.mark.parametrize("env", [None, ""], ids=["unset", "empty"])
def test_without_database_url_a_local_sqlite_file_is_used(tmp_path, monkeypatch, env):
    if env is None:
        monkeypatch.delenv("DATABASE_URL", raising=False)
    else:
        monkeypatch.setenv("DATABASE_URL", env)
    monkeypatch.chdir(tmp_path)
    assert metricstore.DEFAULT_URL.startswith("sqlite:///")
    assert metricstore.default_url() == metricstore.DEFAULT_URL
    db = connect()
    assert isinstance(db, pw.SqliteDatabase)
    db.connect()
    db.execute_sql("CREATE TABLE t (x INTEGER)")
    db.close()
    expected = tmp_path / metricstore.DEFAULT_URL[len("sqlite:///"):]
    assert expected.is_file()


def test_an_explicit_url_beats_database_url(tmp_path, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", PG)
    db = connect("sqlite:///" + str(tmp_path / "explicit.db"))
    assert isinstance(db, pw.SqliteDatabase)


# -- refusals ------------------------------------------------------------------------

EXPECTED_FORMS = ("sqlite:///", "postgresql://")


@pytest.mark.parametrize("url", [
    "tenant.db",
    "sqlite:tenant.db",
    "localhost:5432/test",
    "://nothing",
])
def test_malformed_url_is_refused_with_the_expected_forms(url):
    with pytest.raises(ConfigurationError) as err:
        connect(url)
    message = str(err.value)
    assert all(form in message for form in EXPECTED_FORMS), message


@pytest.mark.parametrize("url", ["mysql://root@localhost/test", "http://example.com/x",
                                 "sqlite3:///tenant.db"])
def test_unknown_scheme_is_refused_with_the_expected_forms(url):
    with pytest.raises(ConfigurationError) as err:
        connect(url)
    message = str(err.value)
    assert url.split(":")[0] in message
    assert all(form in message for form in EXPECTED_FORMS), message


def test_sqlite_with_two_slashes_is_refused_and_told_to_use_three():
    with pytest.raises(ConfigurationError) as err:
        connect("sqlite://tenant.db")
    message = str(err.value)
    assert "three slashes" in message
    assert "sqlite:///" in message


def test_sqlite_without_a_file_name_is_refused():
    with pytest.raises(ConfigurationError) as err:
        connect("sqlite:///")
    assert "sqlite:///" in str(err.value)


def test_sqlite_in_a_missing_folder_is_refused_with_the_fix(tmp_path):
    missing = tmp_path / "no" / "such" / "dir"
    with pytest.raises(ConfigurationError) as err:
        connect("sqlite:///" + str(missing / "tenant.db"))
    assert str(missing) in str(err.value)
    assert "create it" in str(err.value)


def test_sqlite_options_are_refused():
    with pytest.raises(ConfigurationError) as err:
        connect("sqlite:///tenant.db?schema=x")
    assert "busy_timeout=" in str(err.value)


def test_sqlite_busy_timeout_is_a_url_option(tmp_path):
    db = connect("sqlite:///%s?busy_timeout=2.5" % (tmp_path / "t.db"))
    db.connect()
    assert db.execute_sql("PRAGMA busy_timeout").fetchone()[0] == 2500


@pytest.mark.parametrize("value", ["-1", "abc", "1e9", ""])
def test_bad_timeouts_are_refused_naming_the_option(value):
    for url in ("sqlite:///t.db?busy_timeout=", PG + "?connect_timeout=",
                PG + "?statement_timeout="):
        with pytest.raises(ConfigurationError) as err:
            connect(url + value)
        assert url.rsplit("?", 1)[1].rstrip("=") in str(err.value)


def test_postgresql_timeouts_reach_the_driver():
    db = connect(PG + "?connect_timeout=3&statement_timeout=1.5")
    assert db.connect_params["connect_timeout"] == 3
    assert "statement_timeout=1500" in db.connect_params["options"]
    assert connect(PG).connect_params["connect_timeout"] == 10       # the default


@pytest.mark.postgres
def test_postgresql_statement_timeout_is_in_force(tenant_url):
    db = connect(tenant_url + "&statement_timeout=0.25")
    assert db.execute_sql("SHOW statement_timeout").fetchone()[0] == "250ms"


@pytest.mark.parametrize("url", [
    "postgresql://root@127.0.0.1:5432",
    "postgresql://root@127.0.0.1:5432/",
    "postgresql://root@127.0.0.1:5432/?schema=tenant_a",
    "postgresql://root@127.0.0.1:5432/a/b",
])
def test_postgresql_without_a_database_name_is_refused(url):
    with pytest.raises(ConfigurationError) as err:
        connect(url)
    assert "postgresql://user" in str(err.value) and "/dbname" in str(err.value)


def test_postgresql_with_a_bad_port_is_refused():
    with pytest.raises(ConfigurationError) as err:
        connect("postgresql://root@127.0.0.1:port/test")
    assert "postgresql://" in str(err.value)


def test_postgresql_unknown_option_is_refused_naming_the_allowed_one():
    with pytest.raises(ConfigurationError) as err:
        connect(PG + "?sslmod=require")
    assert "sslmod" in str(err.value)
    assert "schema=" in str(err.value) and "sslmode=" in str(err.value)


def test_postgresql_password_is_not_echoed_in_errors():
    with pytest.raises(ConfigurationError) as err:
        connect("postgresql://root:hunter2@127.0.0.1:5432/test?bogus=1")
    assert "hunter2" not in str(err.value)


@pytest.mark.parametrize("schema", [
    "x; drop table metrics",
    "x;drop",
    "Upper",
    "a" * 64,
    "",
    "1starts_with_digit",
    'quo"te',
    "has-dash",
    "has space",
])
def test_hostile_or_invalid_schema_names_are_refused(schema):
    from urllib.parse import quote
    with pytest.raises(ConfigurationError) as err:
        connect(PG + "?schema=" + quote(schema))
    message = str(err.value)
    assert "lower-case letters" in message     # says what a valid name looks like


@pytest.mark.parametrize("schema", ["tenant_a%0A", "tenant_a%0D", "%0Atenant_a",
                                    "tenant_a%00"])
def test_a_schema_with_a_trailing_newline_or_control_character_is_refused(schema):
    with pytest.raises(ConfigurationError):
        connect(PG + "?schema=" + schema)


def test_a_repeated_option_is_refused():
    with pytest.raises(ConfigurationError) as err:
        connect(PG + "?schema=a&schema=b")
    assert "'schema' twice" in str(err.value)


@pytest.mark.parametrize("schema", ["pg_catalog", "pg_toast", "pg_temp_3",
                                    "information_schema"])
def test_system_schemas_are_refused_by_name(schema):
    with pytest.raises(ConfigurationError) as err:
        connect(PG + "?schema=" + schema)
    assert "system schema" in str(err.value)


def test_public_is_used_by_omitting_schema_not_by_naming_it():
    with pytest.raises(ConfigurationError) as err:
        connect(PG + "?schema=public")
    assert "drop the option" in str(err.value)
    assert connect(PG).schema is None


def test_longest_allowed_schema_name_is_63_characters():
    assert connect(PG + "?schema=" + "a" * 63).schema == "a" * 63


def test_configuration_error_is_a_metricstore_error():
    with pytest.raises(metricstore.MetricstoreError):
        connect("nonsense")


# -- session settings -------------------------------------------------------------------

@pytest.mark.sqlite_only
def test_sqlite_runs_in_wal_mode_with_foreign_keys_and_a_busy_timeout(raw_db):
    assert raw_db.execute_sql("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
    assert raw_db.execute_sql("PRAGMA foreign_keys").fetchone()[0] == 1
    assert raw_db.execute_sql("PRAGMA busy_timeout").fetchone()[0] > 0


@pytest.mark.sqlite_only
def test_sqlite_settings_hold_on_every_new_connection(raw_db):
    raw_db.close()
    raw_db.connect()
    assert raw_db.execute_sql("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
    assert raw_db.execute_sql("PRAGMA foreign_keys").fetchone()[0] == 1
    assert raw_db.execute_sql("PRAGMA busy_timeout").fetchone()[0] > 0


@pytest.mark.sqlite_only
def test_sqlite_foreign_keys_are_enforced(raw_db):
    raw_db.execute_sql("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
    raw_db.execute_sql("CREATE TABLE child (pid INTEGER REFERENCES parent(id))")
    with pytest.raises(pw.IntegrityError):
        raw_db.execute_sql("INSERT INTO child (pid) VALUES (42)")


@pytest.mark.postgres
@pytest.mark.parametrize("pgtz", [None, "Asia/Kolkata", "America/Los_Angeles"])
def test_postgresql_session_time_zone_is_utc(tenant_url, monkeypatch, pgtz):
    # PGTZ is libpq's own default zone; it must not leak into the session.
    if pgtz is None:
        monkeypatch.delenv("PGTZ", raising=False)
    else:
        monkeypatch.setenv("PGTZ", pgtz)
    db = connect(tenant_url)
    db.connect()
    try:
        assert db.execute_sql("SHOW TimeZone").fetchone()[0] == "UTC"
        (offset,) = db.execute_sql(
            "SELECT extract(timezone FROM now())").fetchone()
        assert offset == 0
    finally:
        db.close()


@pytest.mark.postgres
def test_postgresql_time_zone_stays_utc_after_reconnecting(raw_db, monkeypatch):
    monkeypatch.setenv("PGTZ", "Pacific/Chatham")
    raw_db.close()
    raw_db.connect()
    assert raw_db.execute_sql("SHOW TimeZone").fetchone()[0] == "UTC"


@pytest.mark.postgres
def test_postgresql_date_style_is_iso_whatever_the_environment_says(db, monkeypatch):
    # Partition bounds and timestamps are parsed from ISO text; PGDATESTYLE
    # (or ALTER ROLE ... SET DateStyle) must not change what the session prints.
    monkeypatch.setenv("PGDATESTYLE", "SQL, DMY")
    db.close()
    db.connect()
    assert db.execute_sql("SHOW DateStyle").fetchone()[0].startswith("ISO")
    from metricstore.dialects import dialect_for
    from metricstore.partitioning import live_partitions
    bounds = [p.start for p in live_partitions(db, dialect_for(db), "metrics")
              if not p.is_default]
    assert bounds and all(b.day == 1 and b.hour == 0 for b in bounds)


@pytest.mark.postgres
def test_postgresql_schema_url_puts_the_tenant_schema_first_on_the_search_path(raw_db):
    schema = raw_db.schema
    assert schema and schema.startswith("mst_")
    (path,) = raw_db.execute_sql("SHOW search_path").fetchone()
    assert path.split(",")[0].strip() == schema


@pytest.mark.postgres
def test_the_search_path_is_exactly_the_tenant_schema(raw_db, monkeypatch):
    monkeypatch.setenv("PGOPTIONS", "-c search_path=elsewhere,public")
    fresh = connect(raw_db.url)
    (path,) = fresh.execute_sql("SHOW search_path").fetchone()
    assert path == '"%s"' % raw_db.schema or path == raw_db.schema
    fresh.close()


@pytest.mark.postgres
def test_without_schema_the_search_path_is_public_only_not_the_login_role(tenant_url):
    """A login role named like a tenant must not read that tenant's tables."""
    base = tenant_url.split("?")[0]
    tenant = connect(tenant_url)
    metricstore.provision(tenant)
    role = tenant.schema                       # a role with the tenant schema's name
    tenant.execute_sql("CREATE ROLE %s LOGIN" % role)
    try:
        tenant.execute_sql("GRANT USAGE ON SCHEMA %s TO %s" % (role, role))
        tenant.execute_sql("GRANT SELECT ON ALL TABLES IN SCHEMA %s TO %s" % (role, role))
        plain = connect(base.replace("//root@", "//%s@" % role))
        (path,) = plain.execute_sql("SHOW search_path").fetchone()
        assert path == "public"
        (found,) = plain.execute_sql("SELECT to_regclass('metric_types')").fetchone()
        assert found is None or not str(found).startswith(role)
        plain.close()
    finally:
        tenant.execute_sql("DROP OWNED BY %s" % role)
        tenant.execute_sql("DROP ROLE %s" % role)
        tenant.close()


def test_connect_does_not_open_a_connection(tmp_path):
    db = connect("sqlite:///" + str(tmp_path / "lazy.db"))
    assert db.is_closed()
    assert not os.path.exists(tmp_path / "lazy.db")
