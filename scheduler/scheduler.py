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
"""

import collections
import datetime
import logging
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from gnuradio.scos.sigan_source import SiganError, probe
from sqlalchemy import select, update

from ..acquire import Catalog, check_recorded, flowgraph_request
from ..logs import task_context
from ..settings import Settings
from ..storage import metrics, quota
from ..storage.database import Database
from ..storage.models import (
    SCHEDULER_HEARTBEAT_SECONDS,
    ScheduleEntry,
    SchedulerState,
    TaskResult,
    format_utc,
    utc_now,
)
from ..storage.results import add_recordings
from . import protocol, series
from .association import Associator
from .callbacks import Notifier
from .supervisor import RunError, RunnerProcess, RunResult
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
# Runners kept importing or ready: two, so that a task shorter than one runner's
# import (~0.25 s) still finds the next one ready.
SPARE_RUNNERS = 2


@dataclass(frozen=True)
class Due:
    schedule_id: str
    time: datetime.datetime


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


class Scheduler:
    """The scheduler of the sensor that ``settings`` describe."""

    def __init__(self, settings: Settings, device: str | None = None):
        self.settings = settings
        self.config = settings.config()
        self.catalog = Catalog.load(self.config)
        self.database = Database(settings.database_url, settings.data_dir)
        self.device = device or settings.sigan
        self.socket_dir = settings.home / "run"
        self.stopping = threading.Event()
        self.spares: collections.deque[RunnerProcess] = collections.deque()
        self.wake: WakeListener | None = None
        # Acquisition notifications, delivered from a thread of their own (callbacks.py).
        self.notifier = Notifier(self.database, settings, self.config.sensor_id)
        # Manager association (Table 1), from a thread too, when a manager is set.
        self.associator = (
            Associator(settings, self.config.sensor_id) if settings.manager_url else None
        )
        self._state = ""
        self._beaten = 0.0
        self._builds: collections.deque[float] = collections.deque(maxlen=BUILDS_REMEMBERED)
        self.consecutive_failures = 0
        self.exit_status = 0
        # The data filesystem's (total, used, free); a test may measure another way.
        self.disk_usage = shutil.disk_usage

    # --- life cycle --------------------------------------------------------------------

    def start(self) -> None:
        self.database.upgrade()
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        self.wake = WakeListener(self.settings.home)
        self._recover()
        with self.database.session() as db:
            state = db.get(SchedulerState, 1)
            now = utc_now()
            if state is None:
                state = SchedulerState(id=1)
                db.add(state)
            state.pid, state.state, state.started, state.heartbeat = os.getpid(), "idle", now, now
            state.consecutive_failures, state.last_failure = 0, None
            state.sigan_error = self._probe_sigan()
        self._state = "idle"
        self._spare_runners()
        self.notifier.start()
        if self.associator is not None:
            self.associator.start()
        logger.info("scheduler started (pid %d, device %s)", os.getpid(), self.device)

    def serve_forever(self) -> int:
        """Run the schedule until :meth:`shutdown`, or until
        ``SCOS_MAX_CONSECUTIVE_FAILURES`` tasks in a row have failed; the exit status
        (0, or ``TOO_MANY_FAILURES_STATUS``)."""
        self.start()
        try:
            while not self.stopping.is_set():
                self.step()
        finally:
            self.close()
        return self.exit_status

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
        self.notifier.stop()
        if self.associator is not None:
            self.associator.stop()
        while self.spares:
            self.spares.popleft().close()
        if self.wake is not None:
            self.wake.close()
            self.wake = None
        with self.database.session() as db:
            state = db.get(SchedulerState, 1)
            if state is not None and state.pid == os.getpid():
                db.delete(state)
        self.database.dispose()
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
                .values(status="fail", finished=utc_now(), detail=RESTART_DETAIL)
            )
        for schedule_id, task_id in interrupted:
            self._keep_only(self.settings.data_dir / schedule_id / str(task_id), [])
        if interrupted:
            logger.warning("%d task(s) left in progress by a crash marked failed", len(interrupted))

    def _keep_only(self, folder: Path, recordings: list[Path]) -> None:
        """Remove the files of ``folder`` that are not of ``recordings`` (a recording
        a stopped task was writing, its spill files), and the folder if empty."""
        keep = {path.with_suffix("") for path in recordings}
        if folder.is_dir():
            for path in folder.iterdir():
                if path.is_file() and Path(str(path).split(".sigmf-")[0]) not in keep:
                    path.unlink()
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
        if due is not None and due.time - self.lead <= utc_now():
            self.run_task(due.schedule_id)
            return
        self._beat("idle")
        wait = SCHEDULER_HEARTBEAT_SECONDS
        if due is not None:
            # Measured after the heartbeat's write, so that it does not make us late.
            wait = min(wait, (due.time - self.lead - utc_now()).total_seconds())
        self.wake.wait(max(wait, 0.0))

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
                active.where(ScheduleEntry.next_task_time <= utc_now()).order_by(
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
        now = utc_now()
        with self.database.session() as db:
            entry = db.get(ScheduleEntry, schedule_id)
            if entry is None or not entry.is_active or entry.next_task_time is None:
                return
            if entry.next_task_time - self.lead > now:
                return
            scheduled = entry.next_task_time
            latest, skipped = collapse(scheduled, entry.interval, entry.stop, now)
            if skipped:
                logger.warning(
                    "schedule %s: %d task time(s) missed while busy or down, collapsed into one",
                    schedule_id,
                    skipped,
                )
            task_id = entry.next_task_id
            entry.next_task_id += 1
            entry.last_task_time = latest
            entry.next_task_time = series.next_task_time(
                entry.start, entry.interval, entry.stop, latest
            )
            if entry.next_task_time is None:
                entry.is_active = False
            result = TaskResult(
                task_id=task_id,
                scheduled=latest,
                started=max(utc_now(), latest),  # until the runner says when it did
                status="in-progress",
                detail="",
            )
            entry.task_results.append(result)
            db.flush()
            result_id = result.id
            action = entry.action
            metadata = schedule_entry_metadata(entry)
        with task_context(schedule_id, task_id):
            logger.info("%s starts", action)
            folder = self.settings.data_dir / schedule_id / str(task_id)
            outcome, started = self._execute(action, metadata, task_id, folder, schedule_id, latest)
            self._spare_runners()  # when the task failed before its flowgraph started
            self._record(result_id, action, outcome, started, folder)
            self.enforce_quota()

    def _spare_runners(self) -> None:
        """Start runners for the next tasks, up to ``SPARE_RUNNERS``, unless we stop."""
        while len(self.spares) < SPARE_RUNNERS and not self.stopping.is_set():
            self.spares.append(RunnerProcess(self.socket_dir))

    def _take_runner(self) -> RunnerProcess:
        """The oldest spare runner (the likeliest to be ready), or a new one."""
        runner = self.spares.popleft() if self.spares else RunnerProcess(self.socket_dir)
        if runner.process.poll() is not None:
            logger.warning("the waiting runner (pid %d) had died; starting another", runner.pid)
            runner.close()
            runner = RunnerProcess(self.socket_dir)
        return runner

    def _execute(
        self,
        action: str,
        metadata: dict,
        task_id: int,
        folder: Path,
        schedule_id: str,
        start_at: datetime.datetime,
    ) -> tuple[RunResult | RunError, datetime.datetime | None]:
        """The task's outcome, and when its flowgraph started (None if it did not)."""
        self._beat("running", force=True)
        quota = self.enforce_quota()
        if not quota.within:
            return RunError(
                f"not run: the data filesystem is {quota.percent:.1f}% full, above "
                f"MAX_DISK_USAGE {self.settings.max_disk_usage:g}%, and no acquisition is left "
                "to delete"
            ), None
        try:
            prepared, request = flowgraph_request(
                self.config,
                self.catalog,
                action,
                {},
                self.device,
                folder / action,
                metadata,
                task_id,
            )
        except ValueError as error:
            return RunError(str(error)), None
        runner = self._take_runner()
        checked = [time.monotonic()]

        def stop_reason() -> str | None:
            if self.stopping.is_set():
                return STOPPED_DETAIL
            if time.monotonic() - checked[0] < STOP_CHECK_SECONDS:
                return None
            checked[0] = time.monotonic()
            with self.database.sessions() as db:
                if db.get(ScheduleEntry, schedule_id) is None:
                    return DELETED_DETAIL
            return None

        def on_event(message: dict) -> None:
            self._beat("running")
            if message["type"] == "started":
                # The next tasks' runners import now, at low priority (runner.py),
                # so that one is ready when this task ends.
                self._spare_runners()

        try:
            outcome = check_recorded(
                action,
                runner.run(
                    request,
                    prepared.action.max_run_time,
                    on_event=on_event,
                    stop_requested=stop_reason,
                    start_at=start_at.timestamp(),
                ),
            )
        except RunError as error:
            outcome = error
        finally:
            # It exits by itself after ``finished``: reap it without holding up the result.
            threading.Thread(target=runner.close, name="reap-runner", daemon=True).start()
        if runner.build_seconds is not None:
            self._builds.append(runner.build_seconds)
        if runner.started_at is None:
            return outcome, None
        return outcome, datetime.datetime.fromtimestamp(runner.started_at, datetime.UTC)

    def _record(
        self,
        result_id: int,
        action: str,
        outcome: RunResult | RunError,
        started: datetime.datetime | None,
        folder: Path,
    ) -> None:
        failed = isinstance(outcome, RunError)
        recordings = [Path(path) for path in outcome.recordings]
        with self.database.session() as db:
            result = db.get(TaskResult, result_id)
            if result is None:
                # The entry was deleted while the task ran: its files go too.
                self._keep_only(folder, [])
                return
            if started is not None:
                result.started = started
            result.finished = utc_now()
            result.status = "fail" if failed else "success"
            metrics.count(db, metrics.TASKS, action=action, status=result.status)
            metrics.observe(
                db,
                metrics.TASK_DURATION,
                (result.finished - result.started).total_seconds(),
                action=action,
            )
            metrics.count(db, metrics.RECORDINGS, len(recordings), action=action)
            if not failed:
                metrics.count(db, metrics.OVERFLOWS, outcome.overflows, action=action)
            result.detail = str(outcome) if failed else ""
            self._keep_only(folder, recordings)
            add_recordings(result, recordings, self.settings.data_dir)
            self.notifier.queue(db, result)  # delivered after commit, by its own thread
            self._count(db, result.detail if failed else None)
        if failed:
            logger.error("failed: %s", outcome)
        else:
            logger.info("succeeded: %d recording(s)", len(recordings))

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

    def _beat(self, state: str, force: bool = False) -> None:
        """Refresh the heartbeat row, at most every half heartbeat unless the state
        changes."""
        now = time.monotonic()
        if (
            not force
            and state == self._state
            and now - self._beaten < SCHEDULER_HEARTBEAT_SECONDS / 2
        ):
            return
        with self.database.session() as db:
            db.execute(
                update(SchedulerState)
                .where(SchedulerState.id == 1)
                .values(state=state, heartbeat=utc_now(), pid=os.getpid())
            )
        self._state, self._beaten = state, now
