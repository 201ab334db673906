"""Whether the database agrees with itself and with the data directory: what
``gr-scos db check`` shows and repairs, and what ``/status`` shows from the
scheduler's periodic check.

A database that lost its latest writes (a deleted SQLite ``-wal`` file, a restored
backup) no longer knows some files on disk. Those orphans are invisible to the quota,
which never deletes them, and their schedule entries' next task ids fall behind
their folders. The check finds:

- integrity problems of the database itself: on SQLite its integrity check and its
  foreign keys; PostgreSQL enforces both itself, so there it is only asked to answer;
- files in task folders (``<schedule_id>/<task_id>/`` under the data directory) that no
  acquisition owns, skipping the folders of tasks in progress (a runner is writing them);
- acquisitions whose data file is missing;
- schedule entries whose next task id is that of a task folder on disk, or below
  (the scheduler skips those ids, but the API lists the next task under one of them).

Only task folders are the sensor's: other files in the data directory (a filesystem's
``lost+found``, an operator's notes) are never reported nor touched.

Repairs: orphaned recordings whose schedule entry still exists can be re-registered
(a task result and acquisitions, the entry's next task id moved past them); orphaned
files can be removed; acquisitions whose data file is missing can be forgotten. Each
repair checks its folder or row again in its own transaction, so that it is safe while
the sensor runs.
"""

import datetime
import json
import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from .database import Database, remove_empty_parents
from .health import format_bytes
from .models import Acquisition, ScheduleEntry, SchedulerState, TaskResult
from .results import add_recordings

logger = logging.getLogger(__name__)

REREGISTERED_DETAIL = (
    "re-registered by `gr-scos db check` from its files on disk: the database had lost its record"
)
SUMMARY_FINDINGS = 3  # sentences of the findings that /status shows
_TASK_FOLDER = re.compile(r"[1-9][0-9]*")
_META, _DATA = ".sigmf-meta", ".sigmf-data"


@dataclass(frozen=True)
class RecordingOnDisk:
    """A SigMF recording found on disk that can be registered as an acquisition."""

    meta: Path
    started: datetime.datetime
    finished: datetime.datetime


@dataclass(frozen=True)
class OrphanFolder:
    """The files of one task folder that no acquisition owns."""

    schedule_id: str
    task_id: int
    folder: Path
    files: tuple[Path, ...]
    size: int
    entry_exists: bool
    recordings: tuple[RecordingOnDisk, ...]  # those that can be re-registered

    @property
    def unregistrable(self) -> int:
        """Files that are not part of a recording that can be re-registered."""
        return len(self.files) - 2 * len(self.recordings)

    def sentence(self) -> str:
        found = (
            f"{self.folder} holds {len(self.files)} file(s) ({format_bytes(self.size)}) that "
            "no acquisition owns"
        )
        if not self.entry_exists:
            return f"{found}; its schedule entry {self.schedule_id} no longer exists"
        if not self.recordings:
            return f"{found}; none of them is a readable SigMF recording"
        registrable = (
            f"{len(self.recordings)} recording(s) of schedule entry {self.schedule_id} that "
            "can be re-registered"
        )
        if self.unregistrable:
            return f"{found}: {registrable}, and {self.unregistrable} other file(s)"
        return f"{found}: {registrable}"


@dataclass(frozen=True)
class MissingData:
    """An acquisition whose data file is gone."""

    acquisition_id: int
    schedule_id: str
    task_id: int
    recording_id: int
    path: Path

    def sentence(self) -> str:
        return (
            f"recording {self.recording_id} of task {self.task_id} of schedule entry "
            f"{self.schedule_id} has lost its data file {self.path}"
        )


@dataclass(frozen=True)
class LaggingEntry:
    """A schedule entry whose next task id is that of a task folder on disk, or below:
    the database lost its latest tasks (the scheduler skips those ids, the API lists
    the next task under one of them)."""

    schedule_id: str
    next_task_id: int
    highest: Path  # the task folder with the highest id

    def sentence(self) -> str:
        return (
            f"the next task id of schedule entry {self.schedule_id} is {self.next_task_id}, "
            f"but its task folders go up to {self.highest}: the database has lost its "
            "latest tasks"
        )


@dataclass(frozen=True)
class Inspection:
    """What :func:`inspect` found; empty lists when all is well."""

    database: list[str] = field(default_factory=list)  # integrity problems, as sentences
    unreadable: list[str] = field(default_factory=list)  # parts of the data directory
    orphans: list[OrphanFolder] = field(default_factory=list)
    missing: list[MissingData] = field(default_factory=list)
    lagging: list[LaggingEntry] = field(default_factory=list)

    def findings(self) -> list[str]:
        """Every problem, one sentence each."""
        return [
            *self.database,
            *self.unreadable,
            *(orphan.sentence() for orphan in self.orphans),
            *(missing.sentence() for missing in self.missing),
            *(entry.sentence() for entry in self.lagging),
        ]

    def summary(self) -> str | None:
        """The counts and the first findings in one line (what ``/status`` shows);
        None when there is no problem."""
        findings = self.findings()
        if not findings:
            return None
        counts = [
            (len(self.database), "database integrity problem(s)"),
            (len(self.unreadable), "unreadable folder(s) of the data directory"),
            (len(self.orphans), "task folder(s) with files no acquisition owns"),
            (len(self.missing), "acquisition(s) whose data file is missing"),
            (len(self.lagging), "schedule entry(ies) whose next task id is behind its folders"),
        ]
        found = ", ".join(f"{count} {what}" for count, what in counts if count)
        first = "; ".join(findings[:SUMMARY_FINDINGS])
        more = len(findings) - SUMMARY_FINDINGS
        more = f"; and {more} more" if more > 0 else ""
        return (
            f"the database check found {found} (`gr-scos db check` lists and repairs "
            f"them): {first}{more}"
        )


def inspect(database: Database, thorough: bool = False) -> Inspection:
    """Check the database and its data directory, changing nothing. ``thorough``:
    SQLite's full integrity check (indexes too) instead of its quick check."""
    unreadable: list[str] = []
    # The disk first, then the database: a task that finishes meanwhile has its files
    # owned by then; one that starts meanwhile is not seen at all.
    folders = _task_folders(database.data_dir, unreadable)
    with database.sessions() as db:
        problems = _database_problems(db, thorough)
        acquisitions = db.execute(
            select(
                Acquisition.id,
                Acquisition.data_path,
                Acquisition.recording_id,
                TaskResult.schedule_entry_id,
                TaskResult.task_id,
            ).join(TaskResult)
        ).all()
        in_progress = set(
            db.execute(
                select(TaskResult.schedule_entry_id, TaskResult.task_id).where(
                    TaskResult.status == "in-progress"
                )
            ).all()
        )
        next_task_ids = dict(db.execute(select(ScheduleEntry.id, ScheduleEntry.next_task_id)).all())
    owned = _owned(row.data_path for row in acquisitions)
    orphans = [
        orphan
        for (schedule_id, task_id), files in sorted(folders.items())
        if (schedule_id, task_id) not in in_progress
        and (
            orphan := _orphan_folder(
                database.data_dir,
                schedule_id,
                task_id,
                [name for name in files if name not in owned],
                schedule_id in next_task_ids,
            )
        )
    ]
    return Inspection(
        problems,
        unreadable,
        orphans,
        _missing(database, acquisitions, folders),
        _lagging(database.data_dir, folders, next_task_ids),
    )


def record(database: Database) -> Inspection:
    """Inspect (SQLite's quick check), log the summary of any finding, and keep it in
    the scheduler's row, where ``/status`` shows it as a problem. For the scheduler, at
    start-up and now and then while idle."""
    inspection = inspect(database)
    store(database, inspection)
    summary = inspection.summary()
    if summary:
        logger.warning("%s", summary)
    return inspection


def store(database: Database, inspection: Inspection) -> None:
    """Keep ``inspection``'s summary in the scheduler's row (nothing while no
    scheduler runs)."""
    with database.session() as db:
        db.execute(
            update(SchedulerState)
            .where(SchedulerState.id == 1)
            .values(check_summary=inspection.summary())
        )


def repair(
    database: Database,
    inspection: Inspection,
    register_orphans: bool = False,
    remove_orphans: bool = False,
    forget_missing: bool = False,
) -> list[str]:
    """Repair what ``inspection`` found, as asked; what was done, one sentence each.
    Orphans are re-registered first; removing then takes the files left."""
    done = []
    for orphan in inspection.orphans:
        if register_orphans and orphan.recordings:
            done.extend(_register(database, orphan))
        if remove_orphans:
            done.extend(_remove(database, orphan))
    if forget_missing and inspection.missing:
        done.extend(_forget(database, inspection.missing))
    return done


# --- inspecting -------------------------------------------------------------------------


def _task_folders(data_dir: Path, unreadable: list[str]) -> dict[tuple[str, int], list[str]]:
    """The files (paths relative to ``data_dir``, as acquisitions store them) of each
    task folder that has any, by (schedule id, task id)."""
    folders: dict[tuple[str, int], list[str]] = {}
    for entry_dir in _scan(str(data_dir), unreadable)[1]:
        for task_dir in _scan(entry_dir.path, unreadable)[1]:
            if _TASK_FOLDER.fullmatch(task_dir.name):
                files = _files(task_dir.path, f"{entry_dir.name}/{task_dir.name}", unreadable)
                if files:
                    folders[entry_dir.name, int(task_dir.name)] = files
    return folders


def _files(path: str, relative: str, unreadable: list[str]) -> list[str]:
    """The files under ``path`` (named ``relative``), at any depth, by relative name."""
    files, folders = _scan(path, unreadable)
    found = [f"{relative}/{entry.name}" for entry in files]
    for folder in folders:
        found.extend(_files(folder.path, f"{relative}/{folder.name}", unreadable))
    return found


def _scan(path: str, unreadable: list[str]) -> tuple[list[os.DirEntry], list[os.DirEntry]]:
    """The files and the folders (symbolic links are neither followed nor counted as
    folders) in ``path``; none when it does not exist (no data yet, removed meanwhile)."""
    files, folders = [], []
    try:
        with os.scandir(path) as entries:
            for entry in entries:
                (folders if entry.is_dir(follow_symlinks=False) else files).append(entry)
    except FileNotFoundError:
        pass
    except OSError as error:
        unreadable.append(f"cannot read {path}: {error.strerror}")
    return files, folders


def _owned(data_paths: Iterable[str]) -> set[str]:
    """The files acquisitions own: each data file and its metadata beside it."""
    owned = set()
    for data_path in data_paths:
        owned.add(data_path)
        owned.add(data_path.removesuffix(_DATA) + _META)
    return owned


def _database_problems(db: Session, thorough: bool) -> list[str]:
    if db.get_bind().dialect.name != "sqlite":
        return []  # PostgreSQL keeps its pages and foreign keys consistent itself
    check = "integrity_check" if thorough else "quick_check"
    problems = [
        f"SQLite's {check.replace('_', ' ')} of the database reports: {message}"
        for message in db.execute(text(f"PRAGMA {check}")).scalars()
        if message != "ok"
    ]
    for table, row, parent, _ in db.execute(text("PRAGMA foreign_key_check")):
        problems.append(f"row {row} of table {table} refers to a row of {parent} that is gone")
    return problems


def _orphan_folder(
    data_dir: Path, schedule_id: str, task_id: int, names: list[str], entry_exists: bool
) -> OrphanFolder | None:
    files, size = [], 0
    for name in names:
        try:
            size += os.stat(data_dir / name).st_size
        except FileNotFoundError:
            continue  # removed since the scan: a finished task's spill files
        files.append(data_dir / name)
    if not files:
        return None
    recordings = []
    if entry_exists:
        present = set(files)
        for meta in files:
            if meta.suffix == _META and meta.with_suffix(_DATA) in present:
                recording = _readable(meta)
                if recording is not None:
                    recordings.append(recording)
    return OrphanFolder(
        schedule_id,
        task_id,
        data_dir / schedule_id / str(task_id),
        tuple(files),
        size,
        entry_exists,
        tuple(recordings),
    )


def _readable(meta: Path) -> RecordingOnDisk | None:
    """The recording of ``meta`` with its times (from its captures' ``core:datetime``
    and the ``scos-acquisition:end_time``), or None when its metadata cannot say."""
    try:
        metadata = json.loads(meta.read_text())
        times = [
            datetime.datetime.fromisoformat(capture["core:datetime"])
            for capture in metadata["captures"]
        ]
        end = metadata["global"].get("scos-acquisition:end_time")
        if end is not None:
            times.append(datetime.datetime.fromisoformat(end))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if not times or any(moment.tzinfo is None for moment in times):
        return None
    return RecordingOnDisk(meta, min(times), max(times))


def _missing(database: Database, acquisitions: list, folders: dict) -> list[MissingData]:
    """The acquisitions whose data file is neither among the files found nor there now,
    if they are still recorded (the quota may have deleted some meanwhile, with their
    files)."""
    on_disk = {name for files in folders.values() for name in files}
    candidates = {
        row.id: row
        for row in acquisitions
        if row.data_path not in on_disk and not database.data_file(row.data_path).exists()
    }
    if not candidates:
        return []
    with database.sessions() as db:
        still = db.scalars(select(Acquisition.id).where(Acquisition.id.in_(candidates)))
        rows = [candidates[acquisition_id] for acquisition_id in still]
    rows.sort(key=lambda row: (row.schedule_entry_id, row.task_id, row.recording_id))
    return [
        MissingData(
            row.id,
            row.schedule_entry_id,
            row.task_id,
            row.recording_id,
            database.data_file(row.data_path),
        )
        for row in rows
    ]


def _lagging(data_dir: Path, folders: dict, next_task_ids: dict) -> list[LaggingEntry]:
    """The schedule entries whose next task id is not above their task folders'."""
    highest: dict[str, int] = {}
    for schedule_id, task_id in folders:
        highest[schedule_id] = max(task_id, highest.get(schedule_id, 0))
    return [
        LaggingEntry(schedule_id, next_task_ids[schedule_id], data_dir / schedule_id / str(top))
        for schedule_id, top in sorted(highest.items())
        if schedule_id in next_task_ids and next_task_ids[schedule_id] <= top
    ]


# --- repairing --------------------------------------------------------------------------


def _task_result(db: Session, orphan: OrphanFolder) -> TaskResult | None:
    """The folder's task result as it is now (a task may have started or ended since)."""
    return db.scalar(
        select(TaskResult).where(
            TaskResult.schedule_entry_id == orphan.schedule_id,
            TaskResult.task_id == orphan.task_id,
        )
    )


def _owned_by(result: TaskResult | None) -> set[str]:
    return _owned(acquisition.data_path for acquisition in result.acquisitions) if result else set()


def _in_progress(result: TaskResult | None) -> bool:
    return result is not None and result.status == "in-progress"


def _relative(database: Database, path: Path) -> str:
    return os.path.relpath(path, database.data_dir)


def _register(database: Database, orphan: OrphanFolder) -> list[str]:
    """Re-register the folder's readable recordings as its task's acquisitions."""
    with database.session() as db:
        # Locked (on PostgreSQL; SQLite's write transaction locks everything), so that
        # the next task id moved past the folder is not computed from a stale value.
        next_task_id = db.scalar(
            select(ScheduleEntry.next_task_id)
            .where(ScheduleEntry.id == orphan.schedule_id)
            .with_for_update()
        )
        result = _task_result(db, orphan)
        owned = _owned_by(result)
        recordings = [
            recording
            for recording in orphan.recordings
            if _relative(database, recording.meta) not in owned
            and recording.meta.with_suffix(_DATA).exists()
        ]
        if next_task_id is None or _in_progress(result) or not recordings:
            return []
        if result is None:
            result = TaskResult(
                schedule_entry_id=orphan.schedule_id,
                task_id=orphan.task_id,
                scheduled=min(recording.started for recording in recordings),
                started=min(recording.started for recording in recordings),
                finished=max(recording.finished for recording in recordings),
                status="success",
                detail=REREGISTERED_DETAIL,
            )
            db.add(result)
        known = len(result.acquisitions)
        add_recordings(result, [recording.meta for recording in recordings], database.data_dir)
        # Their own times, so that the quota deletes them in their turn, not last.
        for acquisition, recording in zip(result.acquisitions[known:], recordings, strict=True):
            acquisition.created = recording.started
        moved = max(next_task_id, orphan.task_id + 1)
        db.execute(
            update(ScheduleEntry)
            .where(ScheduleEntry.id == orphan.schedule_id)
            .values(next_task_id=moved)
        )
    return [
        f"re-registered {len(recordings)} recording(s) of {orphan.folder} as task "
        f"{orphan.task_id} of schedule entry {orphan.schedule_id}, whose next task id is "
        f"now {moved}"
    ]


def _remove(database: Database, orphan: OrphanFolder) -> list[str]:
    """Remove the folder's files that no acquisition owns, unless its task runs."""
    with database.sessions() as db:
        result = _task_result(db, orphan)
        if _in_progress(result):
            return []
        owned = _owned_by(result)
    removed = size = 0
    for path in orphan.files:
        if _relative(database, path) in owned:
            continue  # re-registered, or written by a task since
        try:
            size += path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            continue
        removed += 1
        remove_empty_parents(path.parent, database.data_dir)
    if not removed:
        return []
    return [
        f"removed {removed} file(s) ({format_bytes(size)}) of {orphan.folder} that no "
        "acquisition owned"
    ]


def _forget(database: Database, missing: list[MissingData]) -> list[str]:
    """Delete the acquisitions whose data file is still missing (their metadata file
    goes with them)."""
    gone = {found.acquisition_id: found for found in missing if not found.path.exists()}
    with database.session() as db:
        forgotten = list(db.scalars(select(Acquisition).where(Acquisition.id.in_(gone))))
        for acquisition in forgotten:
            db.delete(acquisition)
    return [
        f"forgot recording {found.recording_id} of task {found.task_id} of schedule entry "
        f"{found.schedule_id}, whose data file {found.path} was missing"
        for found in (gone[acquisition.id] for acquisition in forgotten)
    ]
