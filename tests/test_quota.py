"""The disk quota: the oldest acquisitions go, across entries, until the data
filesystem is below MAX_DISK_USAGE; the scheduler fails a task it cannot make room for.

The filesystem is the real one of the test's data directory; what it reports is
replaced by a usage that counts the data files against a small "disk", so that
deleting files really lowers it.
"""

import datetime
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from grscos.storage import quota
from grscos.storage.database import Database
from grscos.storage.health import DiskUsage
from grscos.storage.models import Acquisition, ScheduleEntry, TaskResult, User, utc_now
from tests.mounts import tmpfs

MIB = 1 << 20


class SmallDisk:
    """A disk of ``total`` bytes whose use is the data files' sizes plus ``other``."""

    def __init__(self, data_dir: Path, total: int, other: int = 0):
        self.data_dir, self.total, self.other = data_dir, total, other

    def __call__(self, _path):
        used = self.other + sum(p.stat().st_size for p in self.data_dir.rglob("*") if p.is_file())
        return self.total, used, self.total - used


@pytest.fixture
def database(tmp_path) -> Database:
    database = Database(f"sqlite:///{tmp_path / 'scos.sqlite3'}", tmp_path / "data")
    database.data_dir.mkdir()
    database.upgrade()
    yield database
    database.dispose()


def add_recordings(database: Database, schedule_id: str, count: int, start: datetime.datetime):
    """``count`` one-MiB recordings of a new entry, the first made at ``start``, one
    a minute after the other; their data paths."""
    paths = []
    with database.session() as db:
        owner = db.scalar(select(User)) or User(username="owner")
        entry = ScheduleEntry(
            id=schedule_id, name=schedule_id, action="acquire_iq", start=start, owner=owner
        )
        db.add(entry)
        for task_id in range(1, count + 1):
            made = start + datetime.timedelta(minutes=task_id)
            folder = database.data_dir / schedule_id / str(task_id)
            folder.mkdir(parents=True)
            data = folder / "r.sigmf-data"
            data.write_bytes(bytes(MIB))
            folder.joinpath("r.sigmf-meta").write_text("{}")
            result = TaskResult(
                task_id=task_id, scheduled=made, started=made, finished=made, status="success"
            )
            result.acquisitions.append(
                Acquisition(
                    recording_id=0,
                    sigmf_metadata={},
                    data_path=str(data.relative_to(database.data_dir)),
                    data_size=MIB,
                    created=made,
                )
            )
            entry.task_results.append(result)
            paths.append(data)
    return paths


def test_the_oldest_acquisitions_of_any_entry_go_until_below_the_quota(database):
    hour_ago = utc_now() - datetime.timedelta(hours=1)
    older = add_recordings(database, "older", 3, hour_ago - datetime.timedelta(days=1))
    newer = add_recordings(database, "newer", 3, hour_ago)
    disk = SmallDisk(database.data_dir, total=10 * MIB)  # 6 MiB of data: 60 % full
    result = quota.enforce(database, 45.0, disk)
    assert result.within and result.percent <= 45.0
    # 60 % -> 40 %: the two oldest recordings (both of "older") went, files and rows.
    assert [path.exists() for path in older + newer] == [False, False, True, True, True, True]
    with database.session() as db:
        kept = db.scalars(select(Acquisition.data_path).order_by(Acquisition.created)).all()
    assert kept == [str(path.relative_to(database.data_dir)) for path in older[2:] + newer]


def test_below_the_quota_nothing_is_deleted(database):
    paths = add_recordings(database, "kept", 2, utc_now())
    result = quota.enforce(database, 85.0, SmallDisk(database.data_dir, total=10 * MIB))
    assert (result.deleted, result.within) == (0, True)
    assert result.percent == pytest.approx(20.0, abs=0.01)
    assert all(path.exists() for path in paths)


def test_when_deleting_everything_is_not_enough_nothing_is_deleted(database):
    paths = add_recordings(database, "kept", 2, utc_now())
    # Something else fills 7 of 10 MiB: with the 2 MiB of recordings, 90 % is used, and
    # even with no recording left 70 % would be, above the quota of 50 %.
    disk = SmallDisk(database.data_dir, total=10 * MIB, other=7 * MIB)
    result = quota.enforce(database, 50.0, disk)
    assert (result.within, result.deleted, result.percent) == (False, 0, pytest.approx(90.0))
    assert result.problem == (
        "the data filesystem is 90.0% full, above MAX_DISK_USAGE 50%, and 7.0 MiB of its "
        "10.0 MiB is not the sensor's data (its recordings hold 2.0 MiB): deleting them all "
        "could not bring it below the limit, so none were deleted"
    )
    assert all(path.exists() for path in paths)
    with database.session() as db:
        assert len(db.scalars(select(Acquisition)).all()) == 2


def test_when_deleting_frees_less_than_recorded_it_says_so(database):
    """Acquisitions whose files are already gone free nothing: the quota, which their
    recorded sizes promised room, deletes them one after the other and then reports
    that the disk is still full."""
    paths = add_recordings(database, "lost", 3, utc_now())
    for path in paths:
        path.unlink()
    disk = SmallDisk(database.data_dir, total=10 * MIB, other=6 * MIB)
    result = quota.enforce(database, 50.0, disk)
    assert (result.within, result.deleted) == (False, 3)
    assert result.problem.startswith("the data filesystem is 60.0% full, above MAX_DISK_USAGE 50%")
    assert result.problem.endswith(
        "deleting the oldest recordings freed less than their recorded sizes"
    )


@pytest.fixture
def small_filesystem(tmp_path) -> Iterator[Path]:
    """A real 16 MiB filesystem (tmpfs), unmounted afterwards."""
    with tmpfs(tmp_path / "small", "16m") as mount_point:
        yield mount_point


def test_on_a_real_filesystem_filled_by_others_the_recordings_are_kept(tmp_path, small_filesystem):
    database = Database(f"sqlite:///{tmp_path / 'scos.sqlite3'}", small_filesystem)
    database.upgrade()
    try:
        paths = add_recordings(database, "kept", 2, utc_now())
        small_filesystem.joinpath("not-the-sensors").write_bytes(bytes(12 * MIB))
        result = quota.enforce(database, 50.0)
        disk = DiskUsage.measure(small_filesystem, 50.0)
        assert (result.within, result.deleted, result.percent) == (False, 0, disk.percent)
        assert result.problem.startswith(
            f"the data filesystem is {disk.percent:.1f}% full, above MAX_DISK_USAGE 50%, and "
            "12.0 MiB of its 16.0 MiB is not the sensor's data (its recordings hold 2.0 MiB)"
        )
        assert all(path.exists() for path in paths)
        # Once the others' files go, deleting recordings helps again: the oldest goes.
        small_filesystem.joinpath("not-the-sensors").unlink()
        small_filesystem.joinpath("others").write_bytes(bytes(6 * MIB))
        result = quota.enforce(database, 50.0)
        assert (result.within, result.deleted, result.problem) == (True, 1, None)
        assert [path.exists() for path in paths] == [False, True]
    finally:
        database.dispose()


def test_the_scheduler_fails_a_task_it_cannot_make_room_for(tmp_path, monkeypatch):
    """End to end with the real scheduler: the task is recorded failed, not run."""
    from grscos.scheduler.scheduler import Scheduler
    from grscos.settings import Settings
    from grscos.storage import users

    settings = Settings(
        home=tmp_path,
        database_url=f"sqlite:///{tmp_path / 'scos.sqlite3'}",
        data_dir=tmp_path / "data",
        max_disk_usage=50.0,
    )
    scheduler = Scheduler(settings)
    scheduler.disk_usage = SmallDisk(settings.data_dir, total=10 * MIB, other=9 * MIB)
    scheduler.start()
    try:
        with scheduler.database.session() as db:
            user, _ = users.create_user(db, "owner")
            now = utc_now()
            db.add(
                ScheduleEntry(
                    id="full",
                    name="full",
                    action="acquire_iq",
                    start=now,
                    next_task_time=now,
                    owner=user,
                )
            )
        scheduler.step()
        with scheduler.database.session() as db:
            result = db.scalar(select(TaskResult))
            assert (result.task_id, result.status) == (1, "fail")
            assert result.detail == (
                "not run: the data filesystem is 90.0% full, above MAX_DISK_USAGE 50%, and "
                "9.0 MiB of its 10.0 MiB is not the sensor's data (its recordings hold 0 B): "
                "deleting them all could not bring it below the limit, so none were deleted"
            )
            assert not result.acquisitions
    finally:
        scheduler.close()
