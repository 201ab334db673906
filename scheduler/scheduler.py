"""The scheduler: runs the schedule's tasks one at a time, each in a runner process.

It sleeps until the next task time, and the API wakes it at once when the schedule
changes (``wake.py``): it never polls. Of the tasks that are due, the lowest
priority number runs first, then the earliest; a running task is never pre-empted.
Task times that passed while the sensor was busy or down are collapsed into one
task, and the log says how many were skipped. Before and after each task the disk
quota deletes the oldest acquisitions while the data filesystem is above
MAX_DISK_USAGE; if that cannot make room, the task fails without running.

A task's result exists as ``in-progress`` from the moment it starts; task ids are
taken from the entry (and committed) before the task runs, so they increase and
are never reused, also across restarts. Results left ``in-progress`` by a crash
become ``fail`` ("interrupted: sensor restarted") at start-up.

While it runs, the scheduler keeps its heartbeat row current (``/status`` shows
``idle``, ``running`` or, without heartbeats, ``dead``) and stops the task when its
entry is deleted or the sensor shuts down.

Left alone for months, it never ends on one bad event:

* a task's own failure (its flowgraph, its runner, a data directory that cannot be
  written, a full disk) fails that task, with a detail naming the cause, and counts
  toward ``SCOS_MAX_CONSECUTIVE_FAILURES``;
* a database that cannot be reached (a restart, a failover, SQLite locked past its
  busy timeout) is retried with a backoff for as long as it lasts; a finished task's
  outcome waits in the journal (``journal.py``) and is recorded once the database is
  back, or at the next start; ``/status`` says since when the database is unreachable
  (``storage/outage.py``);
* any other exception in the loop is logged with its traceback and the loop goes on
  after a backoff; only ``MAX_UNEXPECTED_ERRORS`` of them in a row end the scheduler,
  with status 3, for systemd to restart it.

One scheduler runs per ``SCOS_HOME``: it holds a lock there, and a second one
refuses to start (:class:`SchedulerBusyError`).

Time comes from a :class:`Clock` and runners from a :class:`RunnerPool`, so that
tests can drive the scheduling rules with a clock they move by hand.
"""

import collections
import dataclasses
import datetime
import fcntl
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from gnuradio.scos.sigan_source import SiganError, probe
from sqlalchemy import select, update

from ..acquire import Catalog, check_recorded, flowgraph_request
from ..logs import task_context
from ..settings import Settings
from ..storage import check, metrics, quota
from ..storage.database import Database
from ..storage.models import (
    SCHEDULER_HEARTBEAT_SECONDS,
    ScheduleEntry,
    SchedulerState,
    TaskResult,
    format_utc,
    utc_now,
)
from ..storage.outage import OutageRecord, describe, unreachable
from ..storage.results import add_recordings
from . import protocol, series
from .association import Associator
from .backoff import DATABASE_RETRY, Backoff
from .callbacks import Notifier
from .journal import Finished, Journal
from .pool import RunnerPool
from .supervisor import RunError, RunResult
from .wake import WakeListener, wake

logger = logging.getLogger(__name__)

RESTART_DETAIL = "interrupted: sensor restarted"
STOPPED_DETAIL = "interrupted: sensor stopped"
DELETED_DETAIL = "interrupted: schedule entry deleted"
# Failures that say nothing about the sensor's health.
NOT_FAULTS = (STOPPED_DETAIL, DELETED_DETAIL)
TOO_MANY_FAILURES_STATUS = 3  # the scheduler's exit status, for systemd to restart it
STOP_CHECK_SECONDS = 0.5  # how often a running task's entry is checked for deletion
# A task goes to its runner this long before its time, plus twice the longest recent
# flowgraph build (opening a USRP takes seconds), so that it starts on the instant.
MIN_LEAD_SECONDS = 0.5
MAX_LEAD_SECONDS = 30.0
BUILDS_REMEMBERED = 20
# After an unexpected error in the loop: 1 s, 2 s, 4 s ... at most a minute.
ERROR_RETRY = Backoff(1.0, 60.0)
# Unexpected errors in a row (no step of the loop succeeding between them) after which
# the scheduler exits with TOO_MANY_FAILURES_STATUS: a fresh process may not have
# whatever state keeps failing. About five minutes of retrying with ERROR_RETRY.
MAX_UNEXPECTED_ERRORS = 10
# The data folder of a task id the database does not know (a lost database write) is
# never written over: its id is skipped, at most this many in a row.
MAX_SKIPPED_TASK_IDS = 1000
LOCK_FILE = "scheduler.lock"
# How often the database and the data directory are checked against each other
# (storage/check.py, as `gr-scos db check` does), at start-up and then while idle, when
# the next task is at least CHECK_ROOM away (a check takes a fraction of a second for
# 10,000 recordings).
CHECK_INTERVAL_SECONDS = 6 * 3600.0
CHECK_ROOM = datetime.timedelta(seconds=2)


class SchedulerBusyError(RuntimeError):
    """Another scheduler runs on this ``SCOS_HOME``; the message names its pid."""


class Clock:
    """The scheduler's time: UTC now, a monotonic clock, and sleeping until a time
    passes or the scheduler is woken."""

    def now(self) -> datetime.datetime:
        return utc_now()

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, wake_listener: WakeListener, seconds: float) -> bool:
        """Sleep ``seconds`` (0: only look); True if woken (the schedule changed)."""
        return wake_listener.wait(max(seconds, 0.0))


@dataclasses.dataclass(frozen=True)
class Due:
    schedule_id: str
    time: datetime.datetime


@dataclasses.dataclass(frozen=True)
class Task:
    """A task taken from its entry: its result committed in progress, about to run."""

    result_id: int
    schedule_id: str
    task_id: int
    action: str
    time: datetime.datetime  # its task time (the latest, when missed ones collapsed)
    entry_metadata: dict
    folder: Path


def schedule_entry_metadata(entry: ScheduleEntry) -> dict:
    """The entry as ``scos-acquisition:schedule_entry`` records it (Table 23)."""

    metadata = {
        "id": entry.id,
        "name": entry.name,
        "action": entry.action,
        "start": format_utc(entry.start),
        "priority": entry.priority,
        "is_active": entry.is_active,
        "created": format_utc(entry.created),
        "modified": format_utc(entry.modified),
        "owner": entry.owner.username,
    }
    if entry.stop is not None:
        metadata["stop"] = format_utc(entry.stop)
    if entry.interval is not None:
        metadata["interval"] = entry.interval
    return metadata


def collapse(
    due: datetime.datetime,
    interval: int | None,
    stop: datetime.datetime | None,
    now: datetime.datetime,
) -> tuple[datetime.datetime, int]:
    """(the latest task time from ``due`` on that has come by ``now`` and is before
    ``stop``, how many earlier ones it replaces)."""
    if interval is None or now <= due:
        return due, 0
    step = datetime.timedelta(seconds=interval)
    skipped = int((now - due) // step)
    if stop is not None:
        skipped = min(
            skipped, max(0, int((stop - due - datetime.timedelta(microseconds=1)) // step))
        )
    return due + skipped * step, skipped


def not_writable(data_dir: Path, error: OSError) -> str:
    """A task's failure detail for a data directory it cannot write."""
    where = f" ({error.filename})" if error.filename else ""
    return f"the data directory {data_dir} cannot be written: {error.strerror or error}{where}"


class Scheduler:
    """The scheduler of the sensor that ``settings`` describe. ``clock``, ``runners``
    and ``database`` replace the real ones (tests)."""

    def __init__(
        self,
        settings: Settings,
        device: str | None = None,
        *,
        clock: Clock | None = None,
        runners: RunnerPool | None = None,
        database: Database | None = None,
    ):
        self.settings = settings
        self.config = settings.config()
        self.catalog = Catalog.load(self.config)
        self.database = database or Database(settings.database_url, settings.data_dir)
        self.device = device or settings.sigan
        self.clock = clock or Clock()
        self.socket_dir = settings.home / "run"
        self.runners = runners or RunnerPool(self.socket_dir)
        self.journal = Journal(settings.home)
        self.outage = OutageRecord(settings.home)
        self.stopping = threading.Event()
        self.wake: WakeListener | None = None
        # Acquisition notifications, delivered from a thread of their own (callbacks.py).
        self.notifier = Notifier(self.database, settings, self.config.sensor_id)
        # Manager association (Table 1), from a thread too, when a manager is set.
        self.associator = (
            Associator(settings, self.config.sensor_id) if settings.manager_url else None
        )
        self._lock: IO | None = None
        self._serving = False  # the runners and threads are started
        self._state = ""
        self._beaten = float("-inf")
        self._next_check = float("-inf")
        self._builds: collections.deque[float] = collections.deque(maxlen=BUILDS_REMEMBERED)
        self.consecutive_failures = 0
        self.exit_status = 0
        # The data filesystem's (total, used, free); a test may measure another way.
        self.disk_usage = shutil.disk_usage

    # --- life cycle --------------------------------------------------------------------

    def start(self) -> None:
        """Take the lock of ``SCOS_HOME``, then open the database (waiting for it while
        it is unreachable), record what the journal holds, fail what a crash left in
        progress, and start the runners and the outgoing HTTP threads."""
        self.settings.home.mkdir(parents=True, exist_ok=True)
        self._take_lock()
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        self.wake = WakeListener(self.settings.home)
        try:
            self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:  # its tasks fail, naming it, until it can be written
            logger.error("%s", not_writable(self.settings.data_dir, error))
        sigan_error = self._probe_sigan()
        if not self._retry_database(lambda: self._open(sigan_error)):
            return  # stopped while waiting for the database
        self._check_storage()
        self.runners.fill()
        self.notifier.start()
        if self.associator is not None:
            self.associator.start()
        self._serving = True
        logger.info("scheduler started (pid %d, device %s)", os.getpid(), self.device)

    def _take_lock(self) -> None:
        """One scheduler per ``SCOS_HOME``: two would run every task twice. The lock
        goes with the process, however it ends."""
        path = self.settings.home / LOCK_FILE
        lock = path.open("a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "unknown"
            lock.close()
            raise SchedulerBusyError(
                f"another scheduler (pid {holder}) runs the sensor in {self.settings.home}"
            ) from None
        lock.truncate(0)
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        self._lock = lock

    def _open(self, sigan_error: str | None) -> None:
        self.database.upgrade()
        self._record_journal(at_start=True)
        self._recover()
        with self.database.session() as db:
            state = db.get(SchedulerState, 1)
            now = self.clock.now()
            if state is None:
                state = SchedulerState(id=1)
                db.add(state)
            state.pid, state.state, state.started, state.heartbeat = os.getpid(), "idle", now, now
            state.consecutive_failures, state.last_failure = 0, None
            state.sigan_error = sigan_error
        self._state, self._beaten = "idle", self.clock.monotonic()
        self.outage.recovered()

    def serve_forever(self) -> int:
        """Run the schedule until :meth:`shutdown`; the exit status: 0, or
        ``TOO_MANY_FAILURES_STATUS`` after ``SCOS_MAX_CONSECUTIVE_FAILURES`` tasks in a
        row failed, after ``MAX_UNEXPECTED_ERRORS`` unexpected errors in a row, or
        after an error the scheduler cannot go on from (logged with its traceback).
        :class:`SchedulerBusyError` when another scheduler runs on ``SCOS_HOME``."""
        try:
            if self._lock is None:  # not started by the caller already
                self.start()
            errors = 0
            while not self.stopping.is_set():
                try:
                    self.step()
                except Exception as error:
                    errors += 1
                    if not self._survive(error, errors):
                        break
                else:
                    errors = 0
        except SchedulerBusyError:
            raise
        except Exception:
            logger.critical(
                "the scheduler cannot go on; it exits with status %d",
                TOO_MANY_FAILURES_STATUS,
                exc_info=True,
            )
            self.exit_status = TOO_MANY_FAILURES_STATUS
        finally:
            self.close()
        return self.exit_status

    def _survive(self, error: Exception, errors: int) -> bool:
        """After a step of the loop raised: wait, and say whether to go on."""
        if unreachable(error):
            self._wait_for_database(error, errors)
            return True
        if errors >= MAX_UNEXPECTED_ERRORS:
            logger.critical(
                "%d unexpected errors in a row (the last below); the scheduler exits with "
                "status %d",
                errors,
                TOO_MANY_FAILURES_STATUS,
                exc_info=error,
            )
            self.exit_status = TOO_MANY_FAILURES_STATUS
            return False
        delay = ERROR_RETRY.delay(errors)
        logger.error(
            "unexpected error in the scheduler's loop; it goes on in %g s", delay, exc_info=error
        )
        self.clock.sleep(self.wake, delay)
        return True

    def _wait_for_database(self, error: Exception, attempt: int) -> None:
        """Record the outage and wait before attempt number ``attempt`` + 1."""
        self.outage.failed(error)
        delay = DATABASE_RETRY.delay(attempt)
        logger.warning("the database is unreachable (%s); retrying in %g s", describe(error), delay)
        self.clock.sleep(self.wake, delay)

    def _retry_database(self, work: Callable[[], None]) -> bool:
        """``work()``, retried with a backoff while the database is unreachable; False
        if the scheduler is stopping and it still is. Other errors propagate."""
        attempt = 0
        while True:
            try:
                work()
                return True
            except Exception as error:
                if not unreachable(error):
                    raise
                attempt += 1
                if self.stopping.is_set():
                    self.outage.failed(error)
                    return False
                self._wait_for_database(error, attempt)

    def _probe_sigan(self) -> str | None:
        """The signal analyzer's problem at start-up, or None; the scheduler runs on
        either way (a device may come back), and /status shows it."""
        try:
            probe(self.device)
        except SiganError as error:
            problem = f"signal analyzer {self.device}: {error}"
            logger.error("%s", problem)
            return problem
        return None

    def shutdown(self) -> None:
        """Stop soon: a running task is stopped and recorded as failed. Safe to call
        from a signal handler."""
        self.stopping.set()
        wake(self.settings.home)

    def close(self) -> None:
        if self._lock is None:
            return  # never started (or refused: another scheduler runs)
        if self._serving:
            self.notifier.stop()
            if self.associator is not None:
                self.associator.stop()
            self._serving = False
        self.runners.close()
        if self.wake is not None:
            self.wake.close()
            self.wake = None
        try:
            with self.database.session() as db:
                state = db.get(SchedulerState, 1)
                if state is not None and state.pid == os.getpid():
                    db.delete(state)
        except Exception as error:  # its heartbeat stops anyway: /status says dead
            logger.warning("cannot remove the scheduler's row: %s", describe(error))
        self.database.dispose()
        self._lock.close()
        self._lock = None
        logger.info("scheduler stopped")

    def _recover(self) -> None:
        """Results a crash left in progress fail; whatever their runners wrote goes
        (none of it was recorded as an acquisition)."""
        with self.database.session() as db:
            interrupted = db.execute(
                select(TaskResult.schedule_entry_id, TaskResult.task_id).where(
                    TaskResult.status == "in-progress"
                )
            ).all()
            db.execute(
                update(TaskResult)
                .where(TaskResult.status == "in-progress")
                .values(status="fail", finished=self.clock.now(), detail=RESTART_DETAIL)
            )
        for schedule_id, task_id in interrupted:
            self._keep_only(self.settings.data_dir / schedule_id / str(task_id), [])
        if interrupted:
            logger.warning("%d task(s) left in progress by a crash marked failed", len(interrupted))

    def _keep_only(self, folder: Path, recordings: list[Path]) -> None:
        """Remove the files of ``folder`` that are not of ``recordings`` (a recording
        a stopped task was writing, its spill files), and the folder if empty. A file
        that cannot be removed (a read-only data directory) stays, and is logged."""
        keep = {path.with_suffix("") for path in recordings}
        try:
            if folder.is_dir():
                for path in folder.iterdir():
                    if path.is_file() and Path(str(path).split(".sigmf-")[0]) not in keep:
                        path.unlink()
        except OSError as error:
            logger.error("cannot remove the unrecorded files of %s: %s", folder, error)
        for directory in (folder, folder.parent):
            try:
                directory.rmdir()
            except OSError:
                break

    # --- the loop ----------------------------------------------------------------------

    @property
    def lead(self) -> datetime.timedelta:
        """How long before its time a task is handed to its runner."""
        longest_build = max(self._builds, default=0.0)
        return datetime.timedelta(
            seconds=min(MAX_LEAD_SECONDS, MIN_LEAD_SECONDS + 2 * longest_build)
        )

    def step(self) -> None:
        """Run the task that is due (or about to be), or sleep until one is (or the
        schedule changes)."""
        due = self.next_due()
        if due is not None and due.time - self.lead <= self.clock.now():
            self.run_task(due.schedule_id)
            return
        self._beat("idle")
        if self.clock.monotonic() >= self._next_check and (
            due is None or due.time - self.lead - self.clock.now() >= CHECK_ROOM
        ):
            self._check_storage()
        wait = SCHEDULER_HEARTBEAT_SECONDS
        if due is not None:
            # Measured after the heartbeat's write, so that it does not make us late.
            wait = min(wait, (due.time - self.lead - self.clock.now()).total_seconds())
        self.clock.sleep(self.wake, wait)

    def _check_storage(self) -> None:
        """Check the database against the data directory; /status shows what it
        finds. A check that fails is logged and tried again next time: it must never
        hold up the schedule."""
        self._next_check = self.clock.monotonic() + CHECK_INTERVAL_SECONDS
        try:
            check.record(self.database)
        except Exception as error:
            if unreachable(error):
                raise
            logger.exception("the check of the database and the data directory failed")

    def next_due(self) -> Due | None:
        """The task to run next: of those due now the lowest priority number (then
        the earliest), else the earliest to come."""
        active = (
            select(ScheduleEntry.id, ScheduleEntry.next_task_time)
            .where(ScheduleEntry.is_active.is_(True), ScheduleEntry.next_task_time.is_not(None))
            .limit(1)
        )
        with self.database.sessions() as db:
            row = db.execute(
                active.where(ScheduleEntry.next_task_time <= self.clock.now()).order_by(
                    ScheduleEntry.priority, ScheduleEntry.next_task_time, ScheduleEntry.id
                )
            ).first()
            if row is None:
                row = db.execute(
                    active.order_by(
                        ScheduleEntry.next_task_time, ScheduleEntry.priority, ScheduleEntry.id
                    )
                ).first()
        return None if row is None else Due(*row)

    def run_task(self, schedule_id: str) -> None:
        """Take the entry's next task (committed before it runs, up to ``lead`` ahead
        of its time), run it, record it. Changes to the entry after that apply from
        its next task on; deleting it still stops this one."""
        task = self.take(schedule_id)
        if task is None:
            return
        with task_context(schedule_id, task.task_id):
            logger.info("%s starts", task.action)
            finished = self._execute(task)
            if not self.stopping.is_set():
                self.runners.fill()  # when the task failed before its flowgraph started
            self._record_durably(finished)
            self.enforce_quota()

    def take(self, schedule_id: str) -> Task | None:
        """The entry's next task, taken: its result in progress and the entry moved on,
        committed. None when the entry has nothing due within ``lead``."""
        now = self.clock.now()
        with self.database.session() as db:
            entry = db.get(ScheduleEntry, schedule_id)
            if entry is None or not entry.is_active or entry.next_task_time is None:
                return None
            if entry.next_task_time - self.lead > now:
                return None
            latest, skipped = collapse(entry.next_task_time, entry.interval, entry.stop, now)
            if skipped:
                logger.warning(
                    "schedule %s: %d task time(s) missed while busy or down, collapsed into one",
                    schedule_id,
                    skipped,
                )
            task_id = self._unused_task_id(schedule_id, entry.next_task_id)
            entry.next_task_id = task_id + 1
            entry.last_task_time = latest
            entry.next_task_time = series.next_task_time(
                entry.start, entry.interval, entry.stop, latest
            )
            if entry.next_task_time is None:
                entry.is_active = False
            # Added by the entry's id, not to entry.task_results: that would load every
            # earlier result of the entry (and their notifications, by a statement with
            # one placeholder per result, each new text cached by the driver), so the
            # scheduler's memory and work grew with every task.
            result = TaskResult(
                schedule_entry_id=entry.id,
                task_id=task_id,
                scheduled=latest,
                started=max(now, latest),  # until the runner says when it did
                status="in-progress",
                detail="",
            )
            db.add(result)
            db.flush()
            return Task(
                result.id,
                schedule_id,
                task_id,
                entry.action,
                latest,
                schedule_entry_metadata(entry),
                self.settings.data_dir / schedule_id / str(task_id),
            )

    def _unused_task_id(self, schedule_id: str, task_id: int) -> int:
        """``task_id``, or the first after it whose data folder does not exist: a
        database that lost its latest writes (a deleted SQLite -wal file, a restored
        backup) would otherwise hand out ids whose recordings are still on disk.
        ``gr-scos db check`` re-registers or removes those."""
        first = task_id
        while task_id - first < MAX_SKIPPED_TASK_IDS:
            try:
                if not (self.settings.data_dir / schedule_id / str(task_id)).exists():
                    break
            except OSError:
                break  # the task's own check of the data directory will say why
            task_id += 1
        if task_id != first:
            logger.warning(
                "schedule %s: the data folders of task(s) %d to %d exist, but the database "
                "does not know those tasks (lost database writes?): task %d is next; "
                "`gr-scos db check` re-registers or removes them",
                schedule_id,
                first,
                task_id - 1,
                task_id,
            )
        return task_id

    def _execute(self, task: Task) -> Finished:
        """Run ``task``: how it ended. Never raises: whatever goes wrong is the task's
        failure, with a detail that says what."""
        started_at = None
        try:
            outcome, started_at = self._run(task)
        except Exception as error:  # a bug of ours must not end the loop
            logger.exception("the task could not be run")
            outcome = RunError(f"the scheduler could not run the task: {describe(error)}")
        failed = isinstance(outcome, RunError)
        return Finished(
            result_id=task.result_id,
            schedule_id=task.schedule_id,
            task_id=task.task_id,
            action=task.action,
            folder=str(task.folder),
            finished=self.clock.now(),
            started=(
                None
                if started_at is None
                else datetime.datetime.fromtimestamp(started_at, datetime.UTC)
            ),
            detail=str(outcome) if failed else None,
            recordings=list(outcome.recordings),
            overflows=0 if failed else outcome.overflows,
        )

    def _run(self, task: Task) -> tuple[RunResult | RunError, float | None]:
        """(the outcome, when its flowgraph started in Unix seconds, or None)."""
        self._beat("running", force=True, tolerant=True)
        try:
            room = self.enforce_quota()
        except Exception as error:
            if not unreachable(error):
                raise
            return RunError(f"not run: the disk quota cannot be checked: {describe(error)}"), None
        if not room.within:
            return RunError(f"not run: {room.problem}"), None
        try:
            task.folder.mkdir(parents=True, exist_ok=True)
            prepared, request = flowgraph_request(
                self.config,
                self.catalog,
                task.action,
                {},
                self.device,
                task.folder / task.action,
                task.entry_metadata,
                task.task_id,
            )
        except OSError as error:
            return RunError(f"not run: {not_writable(self.settings.data_dir, error)}"), None
        except ValueError as error:
            return RunError(str(error)), None
        runner = self.runners.take()
        checked = [self.clock.monotonic()]

        def stop_reason() -> str | None:
            if self.stopping.is_set():
                return STOPPED_DETAIL
            if self.clock.monotonic() - checked[0] < STOP_CHECK_SECONDS:
                return None
            checked[0] = self.clock.monotonic()
            try:
                with self.database.sessions() as db:
                    if db.get(ScheduleEntry, task.schedule_id) is None:
                        return DELETED_DETAIL
            except Exception as error:  # the task goes on; it is recorded once we can
                if not unreachable(error):
                    raise
                self.outage.failed(error)
            return None

        def on_event(message: dict) -> None:
            self._beat("running", tolerant=True)
            if message["type"] == "started" and not self.stopping.is_set():
                # The next tasks' runners import now, at low priority (runner.py),
                # so that one is ready when this task ends.
                self.runners.fill()

        try:
            outcome = check_recorded(
                task.action,
                runner.run(
                    request,
                    prepared.action.max_run_time,
                    on_event=on_event,
                    stop_requested=stop_reason,
                    start_at=task.time.timestamp(),
                ),
            )
        except RunError as error:
            outcome = error
        finally:
            self.runners.release(runner)
            if runner.build_seconds is not None:
                self._builds.append(runner.build_seconds)
        return outcome, runner.started_at

    def _record_durably(self, finished: Finished) -> None:
        """Record ``finished``, journaled first, and retried while the database is
        unreachable. If the scheduler stops meanwhile, the journal keeps it for the
        next start."""
        self.journal.write(finished)
        try:
            if not self._retry_database(lambda: self._record(finished)):
                logger.warning(
                    "stopping with the database unreachable: the task's result stays in the "
                    "journal %s, to be recorded at the next start",
                    self.journal.directory,
                )
                return
        except Exception as error:
            logger.exception("cannot record the task's result")
            self._record_failure(finished, error)
        self.journal.remove(finished)

    def _record_failure(self, finished: Finished, error: Exception) -> None:
        """Last resort for a result that cannot be recorded as it is (a recording whose
        metadata cannot be read, say): the task fails, naming why; its files stay for
        ``gr-scos db check``."""
        try:
            detail = f"the result could not be recorded: {describe(error)}"
            self._record(
                dataclasses.replace(finished, detail=detail, recordings=[], overflows=0),
                keep_files=True,
            )
        except Exception:
            logger.exception("cannot record the task as failed either; it stays in progress")

    def _record(self, finished: Finished, keep_files: bool = False, at_start: bool = False) -> None:
        """The task's result, its recordings, metrics and notification, in one
        transaction. Recording the same outcome twice changes nothing (the journal may
        hold one whose transaction committed just before a crash)."""
        folder = Path(finished.folder)
        recordings = [Path(path) for path in finished.recordings]
        with self.database.session() as db:
            result = db.get(TaskResult, finished.result_id)
            if result is None:
                if at_start:
                    # A journal entry whose result the database does not have: not a
                    # deleted entry but lost database writes; its files are the data.
                    logger.error(
                        "the result of task %d of %s is not in the database; its files stay "
                        "in %s for `gr-scos db check`",
                        finished.task_id,
                        finished.schedule_id,
                        folder,
                    )
                else:  # the entry was deleted while the task ran: its files go too
                    self._keep_only(folder, [])
                return
            if result.status != "in-progress":
                return
            if finished.started is not None:
                result.started = finished.started
            result.finished = finished.finished
            result.status = "fail" if finished.failed else "success"
            result.detail = finished.detail or ""
            metrics.count(db, metrics.TASKS, action=finished.action, status=result.status)
            metrics.observe(
                db,
                metrics.TASK_DURATION,
                (result.finished - result.started).total_seconds(),
                action=finished.action,
            )
            metrics.count(db, metrics.RECORDINGS, len(recordings), action=finished.action)
            if not finished.failed:
                metrics.count(db, metrics.OVERFLOWS, finished.overflows, action=finished.action)
            if not keep_files:
                self._keep_only(folder, recordings)
            add_recordings(result, recordings, self.settings.data_dir)
            self.notifier.queue(db, result)  # delivered after commit, by its own thread
            self._count(db, finished.detail)
        if finished.failed:
            logger.error("failed: %s", finished.detail)
        else:
            logger.info("succeeded: %d recording(s)", len(recordings))

    def _record_journal(self, at_start: bool = False) -> None:
        """Record what the journal holds (outcomes a database outage or a crash kept
        from the database)."""
        for finished in self.journal.pending():
            with task_context(finished.schedule_id, finished.task_id):
                logger.warning("recording the journaled result of the task")
                try:
                    self._record(finished, at_start=at_start)
                except Exception as error:
                    if unreachable(error):
                        raise
                    logger.exception("cannot record the journaled result")
                    self._record_failure(finished, error)
            self.journal.remove(finished)

    def _count(self, db, failure: str | None) -> None:
        """Keep the tasks failed in a row (and the signal analyzer's state) in the
        heartbeat row; past ``SCOS_MAX_CONSECUTIVE_FAILURES``, stop with an error
        status, so that systemd restarts the sensor."""
        if failure in NOT_FAULTS:
            return
        state = db.get(SchedulerState, 1) or SchedulerState()  # a detached one: not started
        if failure is None:
            self.consecutive_failures = 0
            state.consecutive_failures, state.last_failure, state.sigan_error = 0, None, None
            return
        self.consecutive_failures += 1
        state.consecutive_failures, state.last_failure = self.consecutive_failures, failure
        if protocol.SIGAN_PROBLEM in failure:
            state.sigan_error = failure
        limit = self.settings.max_consecutive_failures
        if limit and self.consecutive_failures >= limit:
            logger.error(
                "%d tasks in a row failed (the last: %s); the scheduler exits with status %d",
                self.consecutive_failures,
                failure,
                TOO_MANY_FAILURES_STATUS,
            )
            self.exit_status = TOO_MANY_FAILURES_STATUS
            self.shutdown()

    def enforce_quota(self) -> quota.QuotaResult:
        """Before and after each task: the oldest acquisitions go while the data
        filesystem is above MAX_DISK_USAGE."""
        return quota.enforce(self.database, self.settings.max_disk_usage, self.disk_usage)

    def _beat(self, state: str, force: bool = False, tolerant: bool = False) -> None:
        """Refresh the heartbeat row, at most every half heartbeat unless the state
        changes. ``tolerant``: while a task runs, a database outage is noted and the
        task goes on (its result is recorded once the database is back)."""
        now = self.clock.monotonic()
        if (
            not force
            and state == self._state
            and now - self._beaten < SCHEDULER_HEARTBEAT_SECONDS / 2
        ):
            return
        try:
            with self.database.session() as db:
                db.execute(
                    update(SchedulerState)
                    .where(SchedulerState.id == 1)
                    .values(state=state, heartbeat=self.clock.now(), pid=os.getpid())
                )
        except Exception as error:
            if not (tolerant and unreachable(error)):
                raise
            self.outage.failed(error)
            return
        self._state, self._beaten = state, now
        self.outage.recovered()
