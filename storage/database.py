"""Engines, sessions and migrations for SQLite (default) and PostgreSQL.

SQLite runs in WAL mode with a busy timeout, so the API workers and the scheduler
(separate processes) read while one of them writes, and a writer waits for another
instead of failing. Data files of deleted acquisitions are removed after the
deleting transaction commits, and only then: a rolled-back delete loses nothing.
"""

import contextlib
import fcntl
import logging
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from .models import Acquisition

logger = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000
PG_CONNECT_TIMEOUT_S = 10
# pg_advisory_lock key for migrations: "scos" in ASCII.
_MIGRATION_LOCK = 0x73636F73
_DOOMED = "grscos_doomed_files"
_SQLITE_BEGIN = "grscos_sqlite_begin"


def make_engine(url: str, busy_timeout_ms: int = SQLITE_BUSY_TIMEOUT_MS) -> Engine:
    """An engine for ``url``; SQLite gets WAL, a busy timeout (how long a writer waits
    for another before "database is locked") and foreign keys."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": busy_timeout_ms / 1000})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(connection, _record):
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms:d}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        # pysqlite's own transaction handling defers BEGIN and breaks SAVEPOINT and
        # locking order; issue BEGIN ourselves (SQLAlchemy's documented recipe).
        @event.listens_for(engine, "connect")
        def _no_implicit_begin(connection, _record):
            connection.isolation_level = None

        # A session that writes begins IMMEDIATE (``Database.write_sessions``): it takes
        # the write lock at once, waiting for another writer. A deferred transaction
        # that has read cannot wait when it comes to write: SQLite fails it at once
        # with "database is locked" (its snapshot would be stale).
        @event.listens_for(engine, "begin")
        def _begin(connection):
            mode = connection.get_execution_options().get(_SQLITE_BEGIN, "")
            connection.exec_driver_sql(f"BEGIN {mode}".rstrip())

        return engine
    # pre-ping: a connection the server dropped (a restart, a failover) is replaced
    # before use instead of failing the statement. connect_timeout: a server that is
    # gone from the network (no RST) fails the attempt instead of hanging it.
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=10,
        max_overflow=20,
        connect_args={"connect_timeout": PG_CONNECT_TIMEOUT_S},
    )


def _alembic_config() -> AlembicConfig:
    alembic = AlembicConfig()
    alembic.set_main_option("script_location", str(MIGRATIONS))
    return alembic


class Database:
    """One database: its engine, sessions, migrations and the data directory whose
    files its acquisitions own."""

    def __init__(
        self, url: str, data_dir: str | Path, busy_timeout_ms: int = SQLITE_BUSY_TIMEOUT_MS
    ):
        self.url = url
        self.data_dir = Path(data_dir)
        self.engine = make_engine(url, busy_timeout_ms)
        # sessions: for reading (on SQLite they never wait for a writer);
        # write_sessions: for work that writes (on SQLite they wait for other writers).
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.write_sessions = sessionmaker(
            self.engine.execution_options(**{_SQLITE_BEGIN: "IMMEDIATE"}), expire_on_commit=False
        )
        for sessions in (self.sessions, self.write_sessions):
            event.listen(sessions, "persistent_to_deleted", _doom_files)
            event.listen(sessions, "deleted_to_persistent", _spare_files)
            event.listen(sessions, "after_commit", self._remove_doomed_files)
            event.listen(sessions, "after_transaction_end", _forget_doomed_files)

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """A session that writes: it commits when the block ends and rolls back on an
        error."""
        with self.write_sessions() as session, session.begin():
            yield session

    def upgrade(self) -> tuple[str | None, str | None]:
        """Bring the schema to the newest migration; safe when several processes
        start at once (an advisory lock on PostgreSQL, a file lock on SQLite).
        (revision before, revision after); None for an empty database."""
        with self._migration_lock(), self.engine.begin() as connection:
            before = MigrationContext.configure(connection).get_current_revision()
            alembic = _alembic_config()
            alembic.attributes["connection"] = connection
            command.upgrade(alembic, "head")
            return before, MigrationContext.configure(connection).get_current_revision()

    def revisions(self) -> tuple[str | None, str]:
        """(the database's revision, the newest migration's), changing nothing; the
        first is None for an empty database."""
        with self.engine.connect() as connection:
            current = MigrationContext.configure(connection).get_current_revision()
        return current, ScriptDirectory.from_config(_alembic_config()).get_current_head()

    @contextlib.contextmanager
    def _migration_lock(self) -> Iterator[None]:
        if self.engine.dialect.name == "postgresql":
            with self.engine.connect() as connection:
                connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _MIGRATION_LOCK})
                try:
                    yield
                finally:
                    connection.execute(
                        text("SELECT pg_advisory_unlock(:key)"), {"key": _MIGRATION_LOCK}
                    )
            return
        database = make_url(self.url).database
        if not database or database == ":memory:":
            yield
            return
        with open(f"{database}.migrate-lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def data_file(self, relative: str) -> Path:
        return self.data_dir / relative

    def _remove_doomed_files(self, session: Session) -> None:
        if session.in_nested_transaction():
            return  # a savepoint is released: the outer transaction may still roll back
        for relative in session.info.pop(_DOOMED, {}).values():
            data = self.data_file(relative)
            for path in (data, data.with_suffix(".sigmf-meta")):
                try:
                    path.unlink()
                except FileNotFoundError:
                    pass
                except OSError as error:
                    logger.error("cannot remove %s of a deleted acquisition: %s", path, error)
            remove_empty_parents(data.parent, self.data_dir)

    def dispose(self) -> None:
        self.engine.dispose()


# An acquisition deleted by a flush (by Session.delete, a cascade or as an orphan) dooms
# its files; a rollback that restores it (of the transaction or of the savepoint that
# deleted it) spares them; they go when the outermost transaction commits, and are
# forgotten when it ends otherwise (rollback, close).
def _doom_files(session: Session, instance) -> None:
    if isinstance(instance, Acquisition):
        session.info.setdefault(_DOOMED, {})[instance] = instance.data_path


def _spare_files(session: Session, instance) -> None:
    session.info.get(_DOOMED, {}).pop(instance, None)


def _forget_doomed_files(session: Session, transaction) -> None:
    if transaction.parent is None:
        session.info.pop(_DOOMED, None)


def remove_empty_parents(directory: Path, root: Path) -> None:
    """Remove the task's now empty folders, never ``root`` itself."""
    while directory != root and root in directory.parents:
        try:
            directory.rmdir()
        except OSError:
            return
        directory = directory.parent
