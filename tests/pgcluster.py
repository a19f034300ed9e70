"""Throwaway PostgreSQL clusters for fault tests.

A test that stops, restarts or kills a server makes its own cluster with
``pg_createcluster`` on a port of its own and drops it afterwards; the shared
server on 5432 is never touched. Only loopback addresses are used.
"""

import os
import shutil
import signal
import subprocess
import time

import psycopg2

# Each session runs its throwaway clusters on its own ports (WORKFLOW: the lead
# 55432-55439, helpers their own ranges): METRICSTORE_TEST_PORT_BASE moves them.
PORT_BASE = int(os.environ.get("METRICSTORE_TEST_PORT_BASE", "55432"))


def unavailable():
    """Why no throwaway cluster can be made here ('' when one can)."""
    if not shutil.which("pg_createcluster"):
        return "pg_createcluster is not installed (Debian's postgresql-common)"
    if os.geteuid() != 0:
        return "making a throwaway cluster needs root (pg_createcluster as the postgres user)"
    if not _version():
        return "no PostgreSQL server binaries under /usr/lib/postgresql"
    return ""


def _version():
    root = "/usr/lib/postgresql"
    found = [v for v in os.listdir(root) if os.path.exists(os.path.join(root, v, "bin",
                                                                           "postgres"))] \
        if os.path.isdir(root) else []
    return max(found, key=int) if found else None


def _zombie(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            return any(line.startswith("State:") and "Z" in line for line in f)
    except OSError:
        return False


class ThrowawayCluster:
    """A PostgreSQL cluster on 127.0.0.1:``port`` that exists for one test."""

    def __init__(self, name, port):
        self.name, self.port, self.version = name, port, _version()
        self.url = "postgresql://postgres@127.0.0.1:%d/postgres" % port
        self.dsn = "host=127.0.0.1 port=%d user=postgres dbname=postgres" % port

    def _run(self, *args, check=True, timeout=60):
        done = subprocess.run(args, timeout=timeout, capture_output=True, text=True)
        if check and done.returncode:
            log = "/var/log/postgresql/postgresql-%s-%s.log" % (self.version, self.name)
            tail = open(log).read()[-600:] if os.path.exists(log) else ""
            raise RuntimeError("%s failed: %s %s\n%s" % (" ".join(args), done.stdout,
                                                         done.stderr, tail))
        return done

    def create(self):
        self.drop()                       # a leftover from an interrupted run
        self._run("pg_createcluster", self.version, self.name, "-p", str(self.port),
                  "-o", "listen_addresses=localhost", "-o", "fsync=off",
                  "-o", "max_connections=60", "--", "--auth=trust")
        try:
            self.start()
        except Exception:
            self.drop()
            raise
        return self

    def start(self):
        self._run("pg_ctlcluster", "--skip-systemctl-redirect", self.version, self.name,
                  "start")
        return self.wait_ready()

    def stop(self):
        self._run("pg_ctlcluster", "--skip-systemctl-redirect", self.version, self.name,
                  "stop", "-m", "fast")

    def restart(self):
        self._run("pg_ctlcluster", "--skip-systemctl-redirect", self.version, self.name,
                  "restart", "-m", "fast")
        return self.wait_ready()

    def postmaster_pid(self):
        path = "/var/lib/postgresql/%s/%s/postmaster.pid" % (self.version, self.name)
        with open(path) as f:
            return int(f.readline())

    def kill9(self):
        """SIGKILL the postmaster (a crash); its backends exit on their own."""
        pid = self.postmaster_pid()
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:      # until every backend has gone
            out = self._run("pgrep", "-f", "postgres.*%s" % self.name, check=False).stdout
            if not out.strip():
                break
            time.sleep(0.05)
        else:
            raise RuntimeError("backends of %s still running 30 s after kill -9" % self.name)
        # In a container whose init does not reap orphans the dead postmaster
        # stays a zombie, and its socket lock file then looks alive: remove it.
        if _zombie(pid):
            for suffix in (".lock", ""):
                path = "/var/run/postgresql/.s.PGSQL.%d%s" % (self.port, suffix)
                if os.path.exists(path):
                    os.unlink(path)

    def terminate_backends(self, application_name="metricstore"):
        """pg_terminate_backend() of every session of ``application_name``."""
        with psycopg2.connect(self.dsn) as conn:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                            "WHERE application_name = %s", (application_name,))
                return cur.fetchone()[0]

    def accepting(self):
        try:
            psycopg2.connect(self.dsn, connect_timeout=2).close()
            return True
        except psycopg2.OperationalError:
            return False

    def wait_ready(self, timeout=60):
        """Poll until the server accepts connections; return that monotonic time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.accepting():
                return time.monotonic()
            time.sleep(0.01)
        raise RuntimeError("cluster %s did not accept connections in %ds" % (self.name,
                                                                             timeout))

    def drop(self):
        self._run("pg_dropcluster", "--stop", self.version, self.name, check=False)
