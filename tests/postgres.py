"""A throwaway PostgreSQL server for the tests: Debian's (or any) server binaries, a cluster in a
temporary directory, listening on a free loopback port with its unix socket in that directory,
password authentication, fsync off (test data). The fixtures in tests/conftest.py start one per
test session and make a fresh database per test; they skip, with the reason, only when no server
can be started here (no binaries, no psycopg2, initdb or start-up failing).

Run as root, the server runs as the `postgres` user (Debian's package makes it), as initdb and
postgres refuse root, via `runuser`; otherwise as the user running the tests.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

SERVER_USERS = ("postgres", "nobody")  # who runs the server when the tests run as root
ADMIN = "research"  # the cluster's superuser


class Unavailable(Exception):
    """No server can be started here: the reason, in one line."""


def find_bin() -> Path:
    """The directory holding initdb, pg_ctl and postgres: PATH's first, else the newest
    /usr/lib/postgresql/*/bin (Debian's layout), else /usr/local/pgsql/bin."""
    candidates = []
    found = shutil.which("initdb")
    if found:
        candidates.append(Path(found).resolve().parent)
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                                           key=lambda p: [int(x) for x in Path(p).parent.name.split(".")
                                                          if x.isdigit()], reverse=True)]
    candidates.append(Path("/usr/local/pgsql/bin"))
    for d in candidates:
        if all((d / tool).is_file() and os.access(d / tool, os.X_OK) for tool in ("initdb", "pg_ctl", "postgres")):
            return d
    raise Unavailable("no PostgreSQL server binaries (initdb, pg_ctl, postgres) in PATH or /usr/lib/postgresql/*/bin "
                      "(Debian: apt-get install postgresql)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, n: int = 3) -> str:
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return " | ".join(lines[-n:])


class PostgresServer:
    """initdb + pg_ctl start in a temporary directory; `stop()` stops it and removes the directory."""

    def __init__(self):
        try:
            import psycopg2  # noqa: F401
        except ImportError:
            raise Unavailable("psycopg2 is not installed (pip install -e '.[postgres]')") from None
        self.bin = find_bin()
        self.run_as = self._server_user()
        # (another user runs the server: a directory it can reach, whatever $TMPDIR is)
        where = "/tmp" if self.run_as is not None and os.path.isdir("/tmp") else None
        self.dir = Path(tempfile.mkdtemp(prefix="research-agents-pg-", dir=where))
        self.data, self.log = self.dir / "data", self.dir / "server.log"
        self.password = secrets.token_hex(12)
        self.port = None
        self.started = False
        try:
            if self.run_as is not None:
                os.chown(self.dir, self.run_as.pw_uid, self.run_as.pw_gid)
            self._initdb()
            self._start()
        except BaseException:
            self.stop()
            raise

    @staticmethod
    def _server_user():
        """None: this user runs the server; else the non-root user it runs as (we are root)."""
        if os.geteuid() != 0:
            return None
        if shutil.which("runuser") is None:
            raise Unavailable("the tests run as root, which PostgreSQL refuses, and there is no runuser")
        for name in SERVER_USERS:
            try:
                return pwd.getpwnam(name)
            except KeyError:
                continue
        raise Unavailable(f"the tests run as root, which PostgreSQL refuses, and there is no user "
                          f"{' or '.join(SERVER_USERS)} to run the server as")

    def _run(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess:
        cmd = [str(self.bin / argv[0]), *argv[1:]]
        if self.run_as is not None:
            cmd = ["runuser", "-u", self.run_as.pw_name, "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=self.dir,
                              env={**os.environ, "LC_ALL": "C", "LANG": "C"})

    def _initdb(self) -> None:
        pwfile = self.dir / "pw"
        pwfile.write_text(self.password + "\n")
        if self.run_as is not None:
            os.chown(pwfile, self.run_as.pw_uid, self.run_as.pw_gid)
        done = self._run("initdb", "-D", str(self.data), "-U", ADMIN, f"--pwfile={pwfile}", "-A", "scram-sha-256",
                         "-E", "UTF8", "--locale=C", "--no-sync")
        pwfile.unlink()
        if done.returncode != 0:
            raise Unavailable(f"initdb failed: {' '.join((done.stderr or done.stdout).split())[:300]}")

    def _start(self) -> None:
        for _ in range(3):  # a port taken between choosing and binding: another one
            self.port = _free_port()
            options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} -c fsync=off "
                       "-c synchronous_commit=off -c full_page_writes=off -c max_connections=50")
            done = self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60",
                             "start", timeout=90)
            if done.returncode == 0:
                self.started = True
                return
            if "already in use" not in _tail(self.log, 10):
                break
        raise Unavailable(f"the PostgreSQL server did not start: {_tail(self.log) or ' '.join(done.stderr.split())}"
                          [:400])

    def url(self, database: str = "postgres", driver: str = "psycopg2") -> str:
        return f"postgresql+{driver}://{ADMIN}:{self.password}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new, empty database; its SQLAlchemy URL."""
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user=ADMIN, password=self.password,
                                dbname="postgres", connect_timeout=10)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        return self.url(name)

    def stop(self) -> None:
        if self.started:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "-t", "30", "stop")
            self.started = False
        shutil.rmtree(self.dir, ignore_errors=True)
