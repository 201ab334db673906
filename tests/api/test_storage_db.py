"""Storage on SQLite and on PostgreSQL (``db_backend``), without HTTP: the models
match the migrations, migrating is idempotent and safe from several processes at
once, and an acquisition's data files go exactly when its row does."""

import datetime
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config as AlembicConfig
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, select, text
from sqlalchemy.orm import Session

from grscos.storage.database import MIGRATIONS, Database
from grscos.storage.models import (
    Acquisition,
    Base,
    ScheduleEntry,
    TaskResult,
    User,
    utc_now,
)
from grscos.storage.results import add_recordings

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def empty_url(db_backend, tmp_path, request) -> str:
    """The URL of a new, empty database (no migration run)."""
    if db_backend == "sqlite":
        return f"sqlite:///{tmp_path / 'empty.sqlite3'}"
    server = request.getfixturevalue("postgres")
    name = f"empty_{uuid.uuid4().hex[:12]}"
    url = server.create_database(name)
    request.addfinalizer(lambda: server.drop_database(name))
    return url


@pytest.fixture
def database(database_url, tmp_path) -> Database:
    """A migrated database and its data directory."""
    database = Database(database_url, tmp_path / "data")
    database.data_dir.mkdir()
    yield database
    database.dispose()


def schema_differences(database: Database) -> list:
    with database.engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "compare_server_default": True}
        )
        return compare_metadata(context, Base.metadata)


def head_revision() -> str:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(config).get_current_head()


def schema_snapshot(database: Database) -> dict:
    """Tables, columns (name, type, nullable), indexes, unique and foreign keys."""
    inspector = inspect(database.engine)
    snapshot = {}
    for table in sorted(inspector.get_table_names()):
        snapshot[table] = {
            "columns": [
                (column["name"], str(column["type"]), column["nullable"])
                for column in inspector.get_columns(table)
            ],
            "indexes": sorted(
                (index["name"], tuple(index["column_names"]), bool(index["unique"]))
                for index in inspector.get_indexes(table)
            ),
            "unique": sorted(
                tuple(constraint["column_names"])
                for constraint in inspector.get_unique_constraints(table)
            ),
            "foreign_keys": sorted(
                (
                    tuple(key["constrained_columns"]),
                    key["referred_table"],
                    (key.get("options") or {}).get("ondelete"),
                )
                for key in inspector.get_foreign_keys(table)
            ),
        }
    return snapshot


def alembic_versions(database: Database) -> list:
    with database.engine.connect() as connection:
        return connection.execute(text("SELECT version_num FROM alembic_version")).all()


# -- models and migrations ---------------------------------------------------------------


def test_models_match_the_migrations(empty_url, tmp_path):
    database = Database(empty_url, tmp_path / "data")
    try:
        database.upgrade()
        assert schema_differences(database) == []
        assert alembic_versions(database) == [(head_revision(),)]
        tables = set(inspect(database.engine).get_table_names())
        assert tables == set(Base.metadata.tables) | {"alembic_version"}
    finally:
        database.dispose()


def test_upgrading_twice_changes_nothing(database):
    before = schema_snapshot(database)
    with database.session() as db:
        db.add(User(username="kept"))
    database.upgrade()
    database.upgrade()
    assert schema_snapshot(database) == before
    assert alembic_versions(database) == [(head_revision(),)]
    assert schema_differences(database) == []
    with database.session() as db:
        assert db.scalars(select(User.username)).all() == ["kept"]


UPGRADE = """
import pathlib, sys, time
from grscos.storage.database import Database
url, data, ready, go = sys.argv[1:]
database = Database(url, data)
pathlib.Path(ready).touch()
deadline = time.monotonic() + 60
while not pathlib.Path(go).exists():
    if time.monotonic() > deadline:
        sys.exit("never told to go")
    time.sleep(0.001)
database.upgrade()
print("upgraded")
"""


def upgrade_concurrently(url: str, tmp_path: Path, processes: int = 2) -> None:
    """Start ``processes`` upgrades of ``url`` at the same instant; all must succeed."""
    go = tmp_path / "go"
    ready = [tmp_path / f"ready-{index}" for index in range(processes)]
    children = [
        subprocess.Popen(
            [sys.executable, "-c", UPGRADE, url, str(tmp_path / "data"), str(flag), str(go)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for flag in ready
    ]
    try:
        deadline = time.monotonic() + 60
        while not all(flag.exists() for flag in ready):
            assert all(child.poll() is None for child in children), [
                child.communicate() for child in children
            ]
            assert time.monotonic() < deadline, "the upgrades never got ready"
            time.sleep(0.01)
        go.touch()
        outputs = [child.communicate(timeout=60) for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    for child, (out, err) in zip(children, outputs, strict=True):
        assert child.returncode == 0, err
        assert out.strip() == "upgraded", (out, err)


def test_processes_upgrading_a_fresh_database_at_once_all_succeed(empty_url, tmp_path):
    upgrade_concurrently(empty_url, tmp_path, processes=3)
    database = Database(empty_url, tmp_path / "data")
    try:
        assert schema_differences(database) == []
        assert alembic_versions(database) == [(head_revision(),)]
    finally:
        database.dispose()


# -- data files go with their acquisitions ---------------------------------------------


def add_entry(db: Session, schedule_id: str) -> ScheduleEntry:
    owner = db.scalar(select(User).where(User.username == "owner"))
    if owner is None:
        owner = User(username="owner")
        db.add(owner)
    entry = ScheduleEntry(
        id=schedule_id, name=schedule_id, action="acquire_iq", start=utc_now(), owner=owner
    )
    db.add(entry)
    return entry


def add_result(database: Database, db: Session, entry: ScheduleEntry, recordings: int) -> list:
    """A finished task of ``entry`` with ``recordings`` small recordings; their data
    and meta paths."""
    task_id = entry.next_task_id or 1
    entry.next_task_id = task_id + 1
    folder = database.data_dir / entry.id / str(task_id)
    folder.mkdir(parents=True)
    metas, files = [], []
    for index in range(recordings):
        data = folder / f"rec-{index:03d}.sigmf-data"
        data.write_bytes(os.urandom(64 + index))
        meta = data.with_suffix(".sigmf-meta")
        meta.write_text(json.dumps({"global": {"core:datatype": "cf32_le"}, "captures": []}))
        metas.append(meta)
        files += [data, meta]
    now = utc_now()
    result = TaskResult(
        task_id=task_id,
        scheduled=now,
        started=now,
        finished=now + datetime.timedelta(seconds=1),
        status="success",
    )
    entry.task_results.append(result)
    add_recordings(result, metas, database.data_dir)
    return files


def get_result(db: Session, schedule_id: str, task_id: int) -> TaskResult:
    return db.scalar(
        select(TaskResult).where(
            TaskResult.schedule_entry_id == schedule_id, TaskResult.task_id == task_id
        )
    )


def existing(paths: list[Path]) -> list[Path]:
    return [path for path in paths if path.exists()]


@pytest.fixture
def stored(database):
    """Entries a (tasks 1, 2) and b (task 1), with their files."""
    files = {}
    with database.session() as db:
        a = add_entry(db, "a")
        b = add_entry(db, "b")
        db.flush()
        files["a1"] = add_result(database, db, a, 3)
        files["a2"] = add_result(database, db, a, 2)
        files["b1"] = add_result(database, db, b, 1)
    assert all(path.is_file() for paths in files.values() for path in paths)
    return files


def test_deleting_a_result_and_committing_removes_its_files(database, stored):
    with database.session() as db:
        db.delete(get_result(db, "a", 1))
        db.flush()
        assert existing(stored["a1"]) == stored["a1"]  # not before the commit
    assert existing(stored["a1"]) == []
    assert not (database.data_dir / "a" / "1").exists()
    assert existing(stored["a2"] + stored["b1"]) == stored["a2"] + stored["b1"]
    with database.session() as db:
        assert get_result(db, "a", 1) is None
        assert len(db.scalars(select(Acquisition)).all()) == 3


def test_a_rolled_back_delete_leaves_the_files(database, stored):
    db = database.sessions()
    try:
        db.delete(get_result(db, "a", 1))
        db.flush()
        db.rollback()
        # a later commit of the same session does not remove them either
        db.delete(get_result(db, "b", 1))
        db.commit()
    finally:
        db.close()
    assert existing(stored["a1"]) == stored["a1"]
    assert existing(stored["b1"]) == []

    with pytest.raises(RuntimeError, match="changed my mind"):
        with database.session() as db:
            db.delete(get_result(db, "a", 2))
            db.flush()
            raise RuntimeError("changed my mind")
    assert existing(stored["a2"]) == stored["a2"]
    with database.session() as db:
        assert get_result(db, "a", 1) is not None
        assert get_result(db, "a", 2) is not None


def test_a_failed_commit_leaves_the_files(database, stored):
    db = database.sessions()
    try:
        db.delete(get_result(db, "a", 1))
        db.flush()
        # a second entry with an existing id: the commit fails
        db.add(ScheduleEntry(id="b", name="b", action="x", start=utc_now(), owner_id=1))
        with pytest.raises(Exception):  # noqa: B017 - IntegrityError or FlushError
            db.commit()
        db.rollback()
    finally:
        db.close()
    assert existing(stored["a1"]) == stored["a1"]


def test_removing_one_acquisition_removes_its_files(database, stored):
    with database.session() as db:
        result = get_result(db, "a", 1)
        result.acquisitions.remove(result.acquisitions[1])
    assert existing(stored["a1"]) == stored["a1"][:2] + stored["a1"][4:]


def test_deleting_an_entry_removes_all_its_files_and_folders(database, stored):
    (database.data_dir / "unrelated.txt").write_text("not ours")
    with database.session() as db:
        db.delete(db.get(ScheduleEntry, "a"))
    assert existing(stored["a1"] + stored["a2"]) == []
    assert not (database.data_dir / "a").exists()
    assert database.data_dir.is_dir()
    assert existing(stored["b1"]) == stored["b1"]
    assert (database.data_dir / "unrelated.txt").is_file()
    with database.session() as db:
        db.delete(db.get(ScheduleEntry, "b"))
    assert sorted(path.name for path in database.data_dir.iterdir()) == ["unrelated.txt"]


def test_a_folder_with_other_files_is_kept(database, stored):
    stray = database.data_dir / "a" / "1" / "notes.txt"
    stray.write_text("someone else's")
    with database.session() as db:
        db.delete(get_result(db, "a", 1))
    assert existing(stored["a1"]) == []
    assert stray.is_file()


def test_files_already_gone_are_no_error(database, stored):
    for path in stored["a1"]:
        path.unlink()
    with database.session() as db:
        db.delete(get_result(db, "a", 1))
    with database.session() as db:
        assert get_result(db, "a", 1) is None
    assert not (database.data_dir / "a" / "1").exists()


def test_a_delete_in_a_released_savepoint_waits_for_the_outer_commit(database, stored):
    db = database.sessions()
    try:
        with db.begin_nested():
            db.delete(get_result(db, "a", 1))
        assert existing(stored["a1"]) == stored["a1"]
        db.rollback()
    finally:
        db.close()
    assert existing(stored["a1"]) == stored["a1"]


def test_a_rolled_back_savepoint_keeps_only_its_own_files(database, stored):
    db = database.sessions()
    try:
        db.delete(get_result(db, "a", 1))
        db.flush()
        savepoint = db.begin_nested()
        db.delete(get_result(db, "b", 1))
        db.flush()
        savepoint.rollback()
        db.commit()
    finally:
        db.close()
    assert existing(stored["a1"]) == []
    assert existing(stored["b1"]) == stored["b1"]


def test_a_delete_in_a_closed_session_is_forgotten(database, stored):
    """Closing a session rolls its transaction back: reusing the session later does
    not remove the files of the delete it dropped."""
    db = database.sessions()
    try:
        db.delete(get_result(db, "a", 1))
        db.flush()
        db.close()
        db.delete(get_result(db, "b", 1))
        db.commit()
    finally:
        db.close()
    assert existing(stored["a1"]) == stored["a1"]
    assert existing(stored["b1"]) == []
    with database.session() as db:
        assert get_result(db, "a", 1) is not None
