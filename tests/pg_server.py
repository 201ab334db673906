"""A real, throwaway PostgreSQL server for the test-suite.

``PostgresServer`` runs ``initdb`` into ``base_dir/data`` and starts the server with
``pg_ctl``, listening on 127.0.0.1 only (on a free TCP port) and on a unix socket
inside ``base_dir``. The cluster is tuned for speed, not durability (``fsync``,
``full_page_writes`` and ``synchronous_commit`` are off): its data is throwaway.

It creates the login role ``scos`` (with a random password) and the database
``scos`` owned by it; :meth:`PostgresServer.url` gives the SQLAlchemy URL the
application connects with, over TCP and with password authentication like in
production. The helper itself talks to the server as the cluster's superuser over
the unix socket (``trust`` authentication: only the socket's owner can reach it).

initdb and postgres refuse to run as root; when the tests run as root the cluster
belongs to the ``postgres`` system user (created by the Debian package) and
``initdb``/``pg_ctl`` run through ``runuser -u postgres --``.

Example::

    with PostgresServer(tmp_path / "pg") as server:
        engine = sqlalchemy.create_engine(server.url())
"""

from __future__ import annotations

import atexit
import contextlib
import getpass
import logging
import os
import pwd
import re
import secrets
import shutil
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)

PG_ROOT = Path("/usr/lib/postgresql")
"""Where Debian installs the server binaries: one ``<version>/bin`` per major version."""

NOT_INSTALLED = "PostgreSQL is not installed: run `bash deploy/bootstrap.sh`"

USER = "scos"
"""The application's login role, owner of the databases the helper creates."""

SYSTEM_USER = "postgres"
"""The system user that owns the cluster when the tests run as root."""

LOG_TAIL_LINES = 40
START_ATTEMPTS = 3
"""Another process may take the free port between our probe and the server's bind."""

START_TIMEOUT_S = 30
STOP_TIMEOUT_S = 30

# sockaddr_un.sun_path is 108 bytes on Linux, including the terminating NUL.
MAX_SOCKET_PATH = 107

# Applied to postgresql.conf once, after initdb. The port is given to each start
# (pg_ctl -o "-p PORT") so that a retry can pick another one.
_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "fsync": "off",
    "full_page_writes": "off",
    "synchronous_commit": "off",
    # Fewer background processes and less shared memory: a few test connections.
    "max_connections": "50",
    "shared_buffers": "16MB",
    "max_wal_senders": "0",
    "wal_level": "minimal",
    "autovacuum": "off",
    "log_min_messages": "warning",
    "log_line_prefix": "%m [%p] ",
}


def find_bin_dir(root: Path = PG_ROOT) -> Path:
    """The ``bin`` directory of the newest PostgreSQL installed under ``root``.

    Raises RuntimeError (telling to run the bootstrap) when there is none.
    """

    def version_key(path: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in path.name.split("."))

    candidates = []
    if root.is_dir():
        for version_dir in root.iterdir():
            if not re.fullmatch(r"\d+(\.\d+)*", version_dir.name):
                continue
            bin_dir = version_dir / "bin"
            if all(os.access(bin_dir / tool, os.X_OK) for tool in ("initdb", "pg_ctl")):
                candidates.append(version_dir)
    if not candidates:
        raise RuntimeError(NOT_INSTALLED)
    return max(candidates, key=version_key) / "bin"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on at the moment."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _can_traverse(st: os.stat_result, uid: int, gids: set[int]) -> bool:
    """Whether a user may search (``x``) a directory, by its mode bits (POSIX picks
    exactly one class: owner, else group, else other)."""
    if st.st_uid == uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid in gids:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def _quote_conf(value: str) -> str:
    """A postgresql.conf value, quoted: read as-is whatever the setting's type."""
    return "'" + value.replace("'", "''") + "'"


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as error:
        return f"(no server log: {error})"
    return "\n".join(text.splitlines()[-lines:]) or "(the server log is empty)"


class PostgresServer:
    """A throwaway PostgreSQL cluster in ``base_dir`` (see the module's docstring).

    Layout: ``base_dir/data`` (the cluster), ``base_dir/socket`` (unix socket
    directory), ``base_dir/server.log`` (the server's log). ``start()`` after
    ``stop()`` restarts the same cluster.
    """

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = Path(base_dir).resolve()  # real path: its ancestors get checked
        self.data_dir = self.base_dir / "data"
        self.socket_dir = self.base_dir / "socket"
        self.log_file = self.base_dir / "server.log"
        self.password = secrets.token_urlsafe(18)  # URL-safe: no quoting in url()
        self.port: int | None = None
        self._as_root = os.geteuid() == 0
        self.superuser = SYSTEM_USER if self._as_root else getpass.getuser()
        self._bin_dir: Path | None = None
        self._running = False

    # -- public API ----------------------------------------------------------------

    def start(self) -> None:
        """Create the cluster (first time only), start the server and wait until it
        accepts connections, then create the role and database ``scos``."""
        if self._running:
            return
        began = time.monotonic()
        self._bin_dir = find_bin_dir()
        self._prepare_dirs()
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        self._start_server()
        try:
            self._create_role_and_database()
        except BaseException:
            self.stop()
            raise
        log.info(
            "PostgreSQL (%s) started on 127.0.0.1:%d in %.2f s, data in %s",
            self._bin_dir.parent.name,
            self.port,
            time.monotonic() - began,
            self.data_dir,
        )

    def url(self, database: str = USER) -> str:
        """The SQLAlchemy URL (psycopg 3 driver) of ``database`` for the ``scos`` role,
        over TCP on 127.0.0.1."""
        if self.port is None:
            raise RuntimeError("the PostgreSQL server has not been started")
        return f"postgresql+psycopg://{USER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str, template: str = "template1") -> str:
        """``CREATE DATABASE name OWNER scos`` as a copy of ``template``; returns its
        :meth:`url`."""
        with self._superuser_connection() as conn:
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {} TEMPLATE {}").format(
                    sql.Identifier(name), sql.Identifier(USER), sql.Identifier(template)
                )
            )
        log.debug("created database %s", name)
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop the database ``name`` if it exists, closing its open connections."""
        with self._superuser_connection() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
        log.debug("dropped database %s", name)

    def stop(self) -> None:
        """Stop the server (``pg_ctl stop -m fast``) and wait for it to exit.
        Idempotent: does nothing when the server is not running."""
        atexit.unregister(self.stop)
        if not self._running:
            return
        self._running = False
        if not (self.data_dir / "postmaster.pid").exists():
            log.warning("PostgreSQL in %s was no longer running", self.data_dir)
            return
        result = self._run(
            [
                "pg_ctl",
                "stop",
                "-D",
                str(self.data_dir),
                "-m",
                "fast",
                "-w",
                "-t",
                str(STOP_TIMEOUT_S),
            ],
            check=False,
        )
        if result.returncode != 0 and (self.data_dir / "postmaster.pid").exists():
            raise RuntimeError(
                f"pg_ctl stop failed ({result.returncode}): {result.stdout.strip()}\n"
                f"--- tail of {self.log_file} ---\n{_tail(self.log_file)}"
            )
        log.info("PostgreSQL on 127.0.0.1:%s stopped", self.port)

    def halt(self) -> None:
        """Stop the server as an operator's ``pg_ctl -m fast stop`` does (every
        connection is cut), keeping its port for :meth:`resume`: a database outage."""
        if not self._running:
            raise RuntimeError("the PostgreSQL server is not running")
        self._run(
            [
                "pg_ctl",
                "stop",
                "-D",
                str(self.data_dir),
                "-m",
                "fast",
                "-w",
                "-t",
                str(STOP_TIMEOUT_S),
            ]
        )
        self._running = False

    def resume(self) -> None:
        """Start the server that :meth:`halt` stopped, on the same port."""
        if self._running or self.port is None:
            raise RuntimeError("the PostgreSQL server was not halted")
        self._pg_ctl_start(check=True)
        self._running = True

    def restart(self) -> None:
        """``pg_ctl -m fast restart``: every connection is cut, the server comes back
        on the same port."""
        self.halt()
        self.resume()

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals -----------------------------------------------------------------

    def _prepare_dirs(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        # The socket is socket_dir/.s.PGSQL.<port> (at most 5 digits).
        socket_path = f"{self.socket_dir}/.s.PGSQL.65535"
        if len(socket_path.encode()) > MAX_SOCKET_PATH:
            raise RuntimeError(
                f"{self.base_dir} is too deep for a unix socket path ({socket_path} is more"
                f" than {MAX_SOCKET_PATH} bytes): use a shorter base_dir"
            )
        if not self._as_root:
            self.socket_dir.mkdir(mode=0o700, exist_ok=True)
            return
        try:
            account = pwd.getpwnam(SYSTEM_USER)
        except KeyError:
            raise RuntimeError(
                f"running as root, but there is no '{SYSTEM_USER}' system user to run"
                f" PostgreSQL as. {NOT_INSTALLED}"
            ) from None
        if shutil.which("runuser") is None:
            raise RuntimeError("running as root, and runuser (util-linux) is not installed")
        # The postgres user must be able to reach base_dir. pytest's temporary
        # directories (/tmp/pytest-of-root/pytest-N/<name>N) are all root-owned 0700.
        # Rather than moving the cluster elsewhere (base_dir would no longer hold it,
        # and pytest's retention of old basetemps would no longer clean it up), grant
        # search permission (o+x: enter, not list) on exactly those ancestors the
        # postgres user cannot traverse. The contents stay protected by their own
        # modes (pytest's other directories are 0700, the cluster is postgres-owned
        # 0700), and pytest resets pytest-of-root to 0700 at its next session.
        gids = set(os.getgrouplist(SYSTEM_USER, account.pw_gid))
        for ancestor in reversed(self.base_dir.parents):
            st = ancestor.stat()
            if not _can_traverse(st, account.pw_uid, gids):
                log.info(
                    "granting o+x on %s so that %s can reach %s",
                    ancestor,
                    SYSTEM_USER,
                    self.base_dir,
                )
                os.chmod(ancestor, stat.S_IMODE(st.st_mode) | stat.S_IXOTH)
        self.socket_dir.mkdir(mode=0o700, exist_ok=True)
        for path in (self.base_dir, self.socket_dir):
            os.chown(path, account.pw_uid, account.pw_gid)
        self.base_dir.chmod(0o700)

    def _run(self, args: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a PostgreSQL program from the bin directory (as the postgres user when
        root), stdout and stderr together in the result's stdout."""
        assert self._bin_dir is not None
        command = [str(self._bin_dir / args[0]), *args[1:]]
        if self._as_root:
            command = ["runuser", "-u", SYSTEM_USER, "--", *command]
        # No PG* variables (PGDATA, PGPORT, PGOPTIONS...) from the caller's environment;
        # the working directory must be one the postgres user can enter.
        env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
        log.debug("running %s", command)
        result = subprocess.run(
            command,
            cwd=self.base_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"{args[0]} failed ({result.returncode}): {' '.join(command)}\n{result.stdout}"
            )
        return result

    def _initdb(self) -> None:
        self._run(
            [
                "initdb",
                "-D",
                str(self.data_dir),
                "-U",
                self.superuser,
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",  # throwaway data: do not wait for the disk
                "--no-instructions",
            ]
        )
        settings = {**_SETTINGS, "unix_socket_directories": str(self.socket_dir)}
        lines = "".join(f"{name} = {_quote_conf(value)}\n" for name, value in settings.items())
        # Appended by root to the postgres-owned file: owner and mode are unchanged.
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write(f"\n# gr-scos test server (tests/pg_server.py)\n{lines}")

    def _pg_ctl_start(self, check: bool) -> subprocess.CompletedProcess[str]:
        """``pg_ctl start`` on ``self.port``, waiting until the server accepts connections."""
        return self._run(
            [
                "pg_ctl",
                "start",
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_file),
                "-o",
                f"-p {self.port}",
                "-w",
                "-t",
                str(START_TIMEOUT_S),
            ],
            check=check,
        )

    def _start_server(self) -> None:
        for attempt in range(1, START_ATTEMPTS + 1):
            self.port = free_port()
            log_start = self.log_file.stat().st_size if self.log_file.exists() else 0
            result = self._pg_ctl_start(check=False)
            if result.returncode == 0:
                self._running = True
                atexit.register(self.stop)  # a test session that dies leaves no server
                return
            # pg_ctl -w may give up while the server still runs: make sure it does not.
            self._run(
                ["pg_ctl", "stop", "-D", str(self.data_dir), "-m", "immediate", "-w"], check=False
            )
            with self.log_file.open("rb") as server_log:
                server_log.seek(log_start)
                port_taken = b"Address already in use" in server_log.read()
            if port_taken and attempt < START_ATTEMPTS:
                log.warning("port %d was taken before PostgreSQL bound it, retrying", self.port)
                continue
            self.port = None
            raise RuntimeError(
                f"PostgreSQL failed to start ({result.returncode}): {result.stdout.strip()}\n"
                f"--- tail of {self.log_file} ---\n{_tail(self.log_file)}"
            )

    @contextlib.contextmanager
    def _superuser_connection(self, dbname: str = "postgres") -> Iterator[psycopg.Connection]:
        """An autocommit connection as the cluster's superuser over the unix socket."""
        if not self._running:
            raise RuntimeError("the PostgreSQL server is not running")
        with psycopg.connect(
            host=str(self.socket_dir),
            port=self.port,
            user=self.superuser,
            dbname=dbname,
            autocommit=True,
        ) as conn:
            yield conn

    def _create_role_and_database(self) -> None:
        with self._superuser_connection() as conn:
            role_exists = conn.execute(
                "SELECT 1 FROM pg_roles WHERE rolname = %s", [USER]
            ).fetchone()
            # Utility statements take no bind parameters: the password is a literal.
            verb = "ALTER" if role_exists else "CREATE"
            conn.execute(
                sql.SQL(verb + " ROLE {} WITH LOGIN PASSWORD {}").format(
                    sql.Identifier(USER), sql.Literal(self.password)
                )
            )
            db_exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", [USER]
            ).fetchone()
            if not db_exists:
                conn.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {}").format(
                        sql.Identifier(USER), sql.Identifier(USER)
                    )
                )
