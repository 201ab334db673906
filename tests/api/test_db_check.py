"""``gr-scos db check`` and its ``/status`` problem (``storage/check.py``): a database
that lost its latest writes (a deleted SQLite ``-wal`` file) leaves task folders no
acquisition owns, and schedule entries whose next task id is behind them; the check
finds them, with acquisitions whose data file is missing and integrity problems,
and repairs what it is asked to.

The sensor state is real (the ``api`` fixture's database, the simulator's SigMF
recordings); ``gr-scos`` runs as the operator runs it, in its own process. On SQLite
and on PostgreSQL, except where a test is about SQLite itself.
"""

import dataclasses
import datetime
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import delete, update
from sqlalchemy.engine import make_url

from grscos.settings import Settings
from grscos.storage import check, quota
from grscos.storage.health import format_bytes
from grscos.storage.models import ScheduleEntry, SchedulerState, TaskResult, format_utc, utc_now
from tests.test_quota import SmallDisk

REPO = Path(__file__).resolve().parents[2]
GR_SCOS = str(Path(sys.executable).with_name("gr-scos"))
API = "/api/v1"

# Adds tasks 2 and 3 (one recording each) as the scheduler would, deletes the -wal
# file under the open connection, and dies without closing it (as a killed sensor).
LOSE_WAL = """
import os, sys
from pathlib import Path
from grscos.settings import Settings
from grscos.storage.database import Database
from tests.api.conftest import Api
home, url, schedule_id, meta = sys.argv[1:]
settings = Settings(home=Path(home), database_url=url, data_dir=Path(home) / "data")
api = Api(None, settings, Database(url, settings.data_dir))
for _ in range(2):
    api.add_task(schedule_id, [Path(meta)])
os.unlink(api.database.engine.url.database + "-wal")
os._exit(0)
"""


def gr_scos(settings: Settings, *arguments: str) -> subprocess.CompletedProcess:
    """``gr-scos ARGUMENTS`` on the sensor of ``settings``, as its operator runs it."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("SCOS_")}
    env |= {
        "SCOS_SETTINGS_FILE": "",
        "SCOS_HOME": str(settings.home),
        "SCOS_DATABASE_URL": settings.database_url,
        "SCOS_DATA_DIR": str(settings.data_dir),
    }
    return subprocess.run(
        [GR_SCOS, *arguments], env=env, capture_output=True, text=True, timeout=120
    )


def lose_records(api, schedule_id: str, *task_ids: int) -> None:
    """What a lost SQLite WAL or a restored older backup does, on either backend: the
    tasks' rows and the entry's next task ids since are gone; their files stay."""
    with api.database.engine.begin() as connection:
        connection.execute(
            delete(TaskResult.__table__).where(
                TaskResult.schedule_entry_id == schedule_id, TaskResult.task_id.in_(task_ids)
            )
        )
        connection.execute(
            update(ScheduleEntry.__table__)
            .where(ScheduleEntry.id == schedule_id)
            .values(next_task_id=min(task_ids))
        )


def tasks_of(api, schedule_id: str) -> list[tuple[int, str]]:
    """The entry's tasks as the API lists them: (task id, status)."""
    response = api.get(f"{API}/schedule/{schedule_id}/tasks")
    assert response.status_code == 200, response.json
    return [(task["task_id"], task["status"]) for task in response.json["results"]]


def task_of(api, schedule_id: str, task_id: int) -> dict:
    response = api.get(f"{API}/schedule/{schedule_id}/tasks/{task_id}")
    assert response.status_code == 200, response.json
    return response.json


def folder_size(folder: Path) -> str:
    return format_bytes(sum(path.stat().st_size for path in folder.iterdir()))


def first_capture(meta: Path) -> datetime.datetime:
    """When the recording began, as its metadata says."""
    capture = json.loads(meta.read_text())["captures"][0]
    return datetime.datetime.fromisoformat(capture["core:datetime"])


def set_scheduler_alive(api) -> None:
    """The scheduler's row, as a running scheduler keeps it (fresh heartbeat)."""
    with api.database.session() as db:
        state = db.get(SchedulerState, 1) or SchedulerState(id=1, pid=1, started=utc_now())
        state.state, state.heartbeat = "idle", utc_now()
        db.add(state)


def problems_in_status(api) -> list[str]:
    set_scheduler_alive(api)  # however long the test took so far
    response = api.get(f"{API}/status")
    assert response.status_code == 200, response.json
    return response.json["problems"]


# -- a real lost WAL -------------------------------------------------------------------


@pytest.mark.parametrize("db_backend", ["sqlite"])
def test_a_lost_wal_leaves_orphans_that_are_found_and_re_registered(api, recordings):
    entry = api.schedule(interval=60)["id"]
    meta = recordings["acquire_iq"][0]
    api.add_task(entry, [meta])
    api.database.dispose()  # the last connection closes: task 1 is checkpointed
    home, url = str(api.settings.home), api.settings.database_url
    lost = subprocess.run(
        [sys.executable, "-c", LOSE_WAL, home, url, entry, str(meta)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert lost.returncode == 0, lost.stderr
    data = api.settings.data_dir / entry

    # Reopened: tasks 2 and 3 are gone from the database (the API would give task id 2
    # to the next task), their files are not.
    assert tasks_of(api, entry) == [(1, "success"), (2, "scheduled")]
    assert sorted(path.name for path in data.iterdir()) == ["1", "2", "3"]

    found = gr_scos(api.settings, "db", "check")
    assert found.returncode == 1, found.stderr
    assert found.stdout.splitlines() == [
        f"problem: {data / '2'} holds 2 file(s) ({folder_size(data / '2')}) that no "
        f"acquisition owns: 1 recording(s) of schedule entry {entry} that can be re-registered",
        f"problem: {data / '3'} holds 2 file(s) ({folder_size(data / '3')}) that no "
        f"acquisition owns: 1 recording(s) of schedule entry {entry} that can be re-registered",
        f"problem: the next task id of schedule entry {entry} is 2, but its task folders go "
        f"up to {data / '3'}: the database has lost its latest tasks",
        "database check: 3 problem(s)",
    ]

    repaired = gr_scos(api.settings, "db", "check", "--register-orphans")
    assert repaired.returncode == 0, repaired.stderr
    assert repaired.stdout.splitlines()[3:] == [
        f"repaired: re-registered 1 recording(s) of {data / '2'} as task 2 of schedule "
        f"entry {entry}, whose next task id is now 3",
        f"repaired: re-registered 1 recording(s) of {data / '3'} as task 3 of schedule "
        f"entry {entry}, whose next task id is now 4",
        "database check: 3 problem(s), 0 left after the repairs",
    ]
    # The API serves them again, with the times their metadata gives.
    captured = format_utc(first_capture(meta))
    for task_id in (2, 3):
        task = task_of(api, entry, task_id)
        assert (task["status"], task["recordings"], task["started"]) == ("success", 1, captured)
        assert "re-registered by `gr-scos db check`" in task["detail"]
        archive = api.get(f"{API}/schedule/{entry}/tasks/{task_id}/archive")
        assert archive.status_code == 200
    assert tasks_of(api, entry) == [
        (1, "success"),
        (2, "success"),
        (3, "success"),
        (4, "scheduled"),
    ]
    clean = gr_scos(api.settings, "db", "check")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert clean.stdout.startswith("database check: no problem in ")


# -- orphans, on SQLite and PostgreSQL -----------------------------------------------------


def test_orphans_of_a_deleted_entry_can_only_be_removed(api, recordings):
    entry = api.schedule()["id"]
    api.add_task(entry, recordings["acquire_stepped_iq"])
    lose_records(api, entry, 1)
    assert api.delete(f"{API}/schedule/{entry}").status_code == 204
    folder = api.settings.data_dir / entry / "1"
    size = folder_size(folder)
    found = (
        f"{folder} holds 6 file(s) ({size}) that no acquisition owns; its "
        f"schedule entry {entry} no longer exists"
    )

    registering = gr_scos(api.settings, "db", "check", "--register-orphans")
    assert registering.returncode == 1, registering.stderr
    assert registering.stdout.splitlines() == [
        f"problem: {found}",
        f"left: {found}",
        "database check: 1 problem(s)",
    ]
    assert len(list(folder.iterdir())) == 6

    removing = gr_scos(api.settings, "db", "check", "--remove-orphans")
    assert removing.returncode == 0, removing.stderr
    assert removing.stdout.splitlines()[1:] == [
        f"repaired: removed 6 file(s) ({size}) of {folder} that no acquisition owned",
        "database check: 1 problem(s), 0 left after the repairs",
    ]
    assert not folder.parent.exists()  # the emptied folders go too
    assert api.settings.data_dir.is_dir()


def test_files_that_are_no_readable_recording_can_only_be_removed(api, recordings):
    entry = api.schedule()["id"]
    folder = api.settings.data_dir / entry / "5"
    folder.mkdir(parents=True)
    folder.joinpath("broken.sigmf-meta").write_text('{"global": {')  # cut short
    shutil.copy(
        recordings["acquire_iq"][0].with_suffix(".sigmf-data"), folder / "broken.sigmf-data"
    )
    folder.joinpath("lonely.sigmf-meta").write_text("{}")  # no data beside it
    size = folder_size(folder)
    found = [
        f"{folder} holds 3 file(s) ({size}) that no acquisition owns; none of them is a "
        "readable SigMF recording",
        f"the next task id of schedule entry {entry} is 1, but its task folders go up to "
        f"{folder}: the database has lost its latest tasks",
    ]

    registering = gr_scos(api.settings, "db", "check", "--register-orphans")
    assert registering.returncode == 1, registering.stderr
    assert registering.stdout.splitlines() == [
        *(f"problem: {finding}" for finding in found),
        *(f"left: {finding}" for finding in found),
        "database check: 2 problem(s)",
    ]
    assert tasks_of(api, entry) == [(1, "scheduled")]

    removing = gr_scos(api.settings, "db", "check", "--remove-orphans")
    assert removing.returncode == 0, removing.stderr
    assert removing.stdout.splitlines()[2:] == [
        f"repaired: removed 3 file(s) ({size}) of {folder} that no acquisition owned",
        "database check: 2 problem(s), 0 left after the repairs",
    ]
    assert not folder.exists()


def test_registering_and_removing_at_once_keeps_the_recordings_only(api, recordings):
    entry = api.schedule()["id"]
    meta = recordings["acquire_stepped_iq"][0]
    api.add_task(entry, [meta])
    lose_records(api, entry, 1)
    folder = api.settings.data_dir / entry / "1"
    spill = folder / f"{meta.name}.events.part"  # what an interrupted runner leaves
    spill.write_text("{}")

    found = gr_scos(api.settings, "db", "check")
    assert found.returncode == 1, found.stderr
    assert found.stdout.splitlines()[0] == (
        f"problem: {folder} holds 3 file(s) ({folder_size(folder)}) that no acquisition "
        f"owns: 1 recording(s) of schedule entry {entry} that can be re-registered, and 1 "
        "other file(s)"
    )

    both = gr_scos(api.settings, "db", "check", "--register-orphans", "--remove-orphans")
    assert both.returncode == 0, both.stderr
    assert both.stdout.splitlines()[2:] == [
        f"repaired: re-registered 1 recording(s) of {folder} as task 1 of schedule entry "
        f"{entry}, whose next task id is now 2",
        f"repaired: removed 1 file(s) (2 B) of {folder} that no acquisition owned",
        "database check: 2 problem(s), 0 left after the repairs",
    ]
    assert sorted(path.name for path in folder.iterdir()) == [
        meta.with_suffix(".sigmf-data").name,
        meta.name,
    ]
    task = task_of(api, entry, 1)
    assert (task["status"], task["recordings"]) == ("success", 1)
    assert task["recording_metadata"][0]["metadata"] == json.loads(meta.read_text())


def test_re_registered_recordings_are_deleted_by_the_quota_in_their_turn(api, recordings):
    """They keep the time they were made: older than a task recorded since, they go first."""
    entry = api.schedule()["id"]
    meta = recordings["acquire_iq"][0]
    api.add_task(entry, [meta])
    lose_records(api, entry, 1)
    with api.database.session() as db:
        db.get(ScheduleEntry, entry).next_task_id = 2  # the scheduler skips folder 1
    api.add_task(entry, [meta])
    registering = gr_scos(api.settings, "db", "check", "--register-orphans")
    assert registering.returncode == 0, registering.stdout + registering.stderr

    # Room for one recording only: the older one, re-registered, goes.
    lost, newer = (api.settings.data_dir / entry / str(task_id) for task_id in (1, 2))
    size = sum(path.stat().st_size for path in newer.iterdir())
    result = quota.enforce(api.database, 50.0, SmallDisk(api.settings.data_dir, total=3 * size))
    assert (result.within, result.deleted) == (True, 1)
    assert (lost.exists(), newer.exists()) == (False, True)


def test_the_folder_of_a_task_in_progress_is_not_an_orphan(api, recordings):
    entry = api.schedule()["id"]
    task_id = api.add_task(entry, status="in-progress")
    folder = api.settings.data_dir / entry / str(task_id)
    meta = recordings["acquire_iq"][0]
    for source in (meta, meta.with_suffix(".sigmf-data")):  # what its runner is writing
        shutil.copy(source, folder / source.name)

    running = gr_scos(api.settings, "db", "check")
    assert running.returncode == 0, running.stdout + running.stderr

    # Failed without recording them (a crash), they are no acquisition's.
    with api.database.session() as db:
        db.execute(update(TaskResult).values(status="fail", finished=utc_now()))
    failed = gr_scos(api.settings, "db", "check")
    assert failed.returncode == 1, failed.stderr
    assert failed.stdout.splitlines()[0].startswith(f"problem: {folder} holds 2 file(s) ")


def test_acquisitions_whose_data_file_is_missing_are_reported_and_forgotten(api, recordings):
    entry = api.schedule()["id"]
    api.add_task(entry, recordings["acquire_stepped_iq"])
    folder = api.settings.data_dir / entry / "1"
    lost = folder / recordings["acquire_stepped_iq"][1].with_suffix(".sigmf-data").name
    lost.unlink()

    found = gr_scos(api.settings, "db", "check")
    assert found.returncode == 1, found.stderr
    assert found.stdout.splitlines() == [
        f"problem: recording 1 of task 1 of schedule entry {entry} has lost its data file {lost}",
        "database check: 1 problem(s)",
    ]

    forgetting = gr_scos(api.settings, "db", "check", "--forget-missing")
    assert forgetting.returncode == 0, forgetting.stderr
    assert forgetting.stdout.splitlines()[1:] == [
        f"repaired: forgot recording 1 of task 1 of schedule entry {entry}, whose data file "
        f"{lost} was missing",
        "database check: 1 problem(s), 0 left after the repairs",
    ]
    task = task_of(api, entry, 1)
    assert [recording["recording_id"] for recording in task["recording_metadata"]] == [0, 2]
    assert not lost.with_suffix(".sigmf-meta").exists()  # it goes with its acquisition


# -- /status --------------------------------------------------------------------------------


def test_status_shows_the_last_check_until_the_problems_are_repaired(api, recordings):
    sensor = api.app.extensions["scos"]
    sensor.settings = dataclasses.replace(sensor.settings, max_disk_usage=100.0)
    entry = api.schedule()["id"]
    for _ in range(3):
        api.add_task(entry, recordings["acquire_iq"])
    lose_records(api, entry, 1, 2, 3)
    data = api.settings.data_dir / entry
    set_scheduler_alive(api)

    check.record(api.database)  # as the scheduler does at start-up and while idle
    orphan = (
        "{} holds 2 file(s) ({}) that no acquisition owns: 1 recording(s) of schedule "
        f"entry {entry} that can be re-registered"
    )
    assert problems_in_status(api) == [
        "the database check found 3 task folder(s) with files no acquisition owns, 1 "
        "schedule entry(ies) whose next task id is behind its folders (`gr-scos db check` "
        "lists and repairs "
        "them): "
        + "; ".join(
            orphan.format(data / str(task), folder_size(data / str(task))) for task in (1, 2, 3)
        )
        + "; and 1 more"
    ]

    repaired = gr_scos(api.settings, "db", "check", "--register-orphans")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert problems_in_status(api) == []


# -- the database itself, and errors --------------------------------------------------------


@pytest.mark.parametrize("db_backend", ["sqlite"])
def test_sqlite_integrity_problems_are_reported(api, recordings):
    entry = api.schedule()["id"]
    api.add_task(entry, recordings["acquire_iq"])
    api.database.dispose()
    raw = sqlite3.connect(make_url(api.settings.database_url).database)
    try:
        # A task result of an entry that does not exist (foreign keys are off here),
        # and an index that no longer matches its table, as a damaged file would have.
        raw.execute(
            "INSERT INTO task_results (schedule_entry_id, task_id, scheduled, started, status, "
            "detail) VALUES ('gone', 1, '2026-01-01 00:00:00', '2026-01-01 00:00:00', "
            "'success', '')"
        )
        raw.execute("PRAGMA writable_schema=ON")
        raw.execute(
            "UPDATE sqlite_master SET sql = 'CREATE INDEX ix_acquisitions_created ON "
            "acquisitions (data_size)' WHERE name = 'ix_acquisitions_created'"
        )
        raw.commit()
    finally:
        raw.close()

    found = gr_scos(api.settings, "db", "check")
    assert found.returncode == 1, found.stderr
    assert found.stdout.splitlines() == [
        "problem: SQLite's integrity check of the database reports: row 1 missing from index "
        "ix_acquisitions_created",
        "problem: row 2 of table task_results refers to a row of schedule_entries that is gone",
        "database check: 2 problem(s)",
    ]
    # The scheduler's quicker check sees the broken reference, not the index.
    assert check.inspect(api.database).findings() == [
        "row 2 of table task_results refers to a row of schedule_entries that is gone"
    ]


def test_a_missing_or_unreachable_database_is_an_error(tmp_path):
    missing = Settings(
        home=tmp_path,
        database_url=f"sqlite:///{tmp_path / 'none.sqlite3'}",
        data_dir=tmp_path / "data",
    )
    result = gr_scos(missing, "db", "check")
    assert result.returncode == 2
    assert result.stderr == (
        f"gr-scos db: error: there is no database {tmp_path / 'none.sqlite3'}: run "
        "`gr-scos db upgrade` to create or migrate it\n"
    )
    assert result.stdout == ""
    assert sorted(tmp_path.iterdir()) == []  # nothing created

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # nothing listens there
        unreachable = dataclasses.replace(
            missing, database_url=f"postgresql://scos:secret@127.0.0.1:{port}/scos"
        )
        result = gr_scos(unreachable, "db", "check")
    assert result.returncode == 2
    assert result.stderr.startswith("gr-scos db: error: ") and "Connection refused" in result.stderr
    assert "secret" not in result.stderr
