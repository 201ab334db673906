"""A scheduler whose time and runners the test controls: a :class:`FakeClock` that
moves only when the scheduler sleeps or a runner runs, and a :class:`ScriptedPool`
whose runners "run" a task by moving that clock and writing a small recording.

With them the scheduling rules (order, priority, missed times, stops, lead time) are
checked exactly, against a real database, whatever the machine's load.
"""

import datetime
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select

from grscos.scheduler import series
from grscos.scheduler.scheduler import Clock, Scheduler
from grscos.scheduler.supervisor import RunError, RunResult
from grscos.settings import Settings
from grscos.storage.database import Database
from grscos.storage.models import ScheduleEntry, TaskResult, User

EPOCH = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
PROGRESS_SECONDS = 0.25  # how often a scripted runner asks whether to stop


class FakeClock(Clock):
    """Time that moves only when told to (and when the scheduler sleeps)."""

    def __init__(self, start: datetime.datetime = EPOCH):
        self.current = start
        self.slept: list[float] = []
        self.deadline: tuple[datetime.datetime, Callable[[], None]] | None = None

    def now(self) -> datetime.datetime:
        return self.current

    def monotonic(self) -> float:
        return (self.current - EPOCH).total_seconds()

    def advance(self, seconds: float) -> None:
        self.current += datetime.timedelta(seconds=max(seconds, 0.0))

    def advance_to(self, moment: datetime.datetime) -> None:
        self.current = max(self.current, moment)

    def sleep(self, wake, seconds: float) -> bool:
        """Move the clock instead of sleeping; the real wake listener is still asked,
        without waiting, for the wake-ups queued meanwhile."""
        self.slept.append(seconds)
        woken = wake.wait(0.0)
        self.advance(seconds)
        if self.deadline is not None and self.current >= self.deadline[0]:
            self.deadline[1]()
        return woken

    def call_at(self, moment: datetime.datetime, action: Callable[[], None]) -> None:
        """Call ``action`` once the scheduler has slept past ``moment`` (e.g. shutdown,
        to end ``serve_forever``)."""
        self.deadline = (moment, action)

    def at(self, seconds: float) -> datetime.datetime:
        """The moment ``seconds`` after EPOCH."""
        return EPOCH + datetime.timedelta(seconds=seconds)


class WallClock(Clock):
    """Real time, for the few tests that need it; scripted runners sleep through it."""

    def advance(self, seconds: float) -> None:
        time.sleep(max(seconds, 0.0))

    def advance_to(self, moment: datetime.datetime) -> None:
        self.advance((moment - self.now()).total_seconds())


@dataclass
class Script:
    """What a scripted runner does with a task: run ``seconds`` (from its start), take
    ``build_seconds`` to build, and fail with ``fails`` when set."""

    seconds: float = 0.1
    build_seconds: float = 0.05
    fails: str | None = None


@dataclass
class Run:
    """A task as a scripted runner saw it."""

    output: Path
    start_at: datetime.datetime
    handed: datetime.datetime  # when the scheduler gave it to the runner
    started: datetime.datetime | None = None


class ScriptedRunner:
    """Runs a task as ``pool.scripts`` says for its action (the name of its output)."""

    def __init__(self, pool: "ScriptedPool"):
        self.pool = pool
        self.pid = 0
        self.started_at: float | None = None
        self.build_seconds: float | None = None

    def run(
        self,
        request: dict,
        timeout: float,
        on_event: Callable[[dict], None] | None = None,
        stop_requested: Callable[[], str | None] = lambda: None,
        start_at: float | None = None,
    ) -> RunResult:
        clock = self.pool.clock
        start = datetime.datetime.fromtimestamp(start_at, datetime.UTC)
        run = Run(Path(request["arguments"]["output"]), start, clock.now())
        script = self.pool.scripts.get(run.output.name, self.pool.default)
        self.pool.runs.append(run)
        clock.advance(script.build_seconds)
        self.build_seconds = script.build_seconds
        clock.advance_to(start)
        run.started = clock.now()
        self.started_at = run.started.timestamp()
        if on_event is not None:
            on_event({"type": "started", "at": self.started_at, "build_seconds": 0.0})
        end = run.started + datetime.timedelta(seconds=script.seconds)
        while clock.now() < end:
            clock.advance(min(PROGRESS_SECONDS, (end - clock.now()).total_seconds()))
            reason = stop_requested()
            if reason:
                raise RunError(reason)
        if script.fails:
            raise RunError(script.fails)
        meta = run.output.with_name(run.output.name + "-000.sigmf-meta")
        meta.write_text(json.dumps({"global": {"core:datatype": "cf32_le"}, "captures": []}))
        meta.with_suffix(".sigmf-data").write_bytes(bytes(64))
        return RunResult(recordings=[str(meta)], samples=8)


@dataclass
class ScriptedPool:
    """Runners that follow ``scripts[action]`` (or ``default``)."""

    clock: FakeClock | WallClock
    scripts: dict[str, Script] = field(default_factory=dict)
    default: Script = field(default_factory=Script)
    runs: list[Run] = field(default_factory=list)
    spares: list = field(default_factory=list)

    def fill(self) -> None:
        pass

    def take(self) -> ScriptedRunner:
        return ScriptedRunner(self)

    def release(self, runner: ScriptedRunner) -> None:
        pass

    def close(self) -> None:
        pass


def make_scheduler(
    tmp_path: Path, clock: FakeClock | WallClock | None = None, start: bool = True, **settings
) -> Scheduler:
    """A scheduler (started unless told otherwise) on SQLite in ``tmp_path`` with a
    fake clock and scripted runners (``scheduler.runners``); the test closes it."""
    clock = clock or FakeClock()
    config = Settings(
        home=tmp_path,
        database_url=f"sqlite:///{tmp_path / 'scos.sqlite3'}",
        data_dir=tmp_path / "data",
        **settings,
    )
    scheduler = Scheduler(
        config,
        device="sim",
        clock=clock,
        runners=ScriptedPool(clock),
        database=Database(config.database_url, config.data_dir),
    )
    scheduler.database.upgrade()
    if start:
        scheduler.start()
    return scheduler


def add_entry(
    scheduler: Scheduler,
    name: str,
    start: datetime.datetime,
    interval: int | None = None,
    stop: datetime.datetime | None = None,
    priority: int = 10,
    action: str = "acquire_iq",
) -> None:
    """An active entry, as the API stores one."""
    with scheduler.database.session() as db:
        owner = db.scalar(select(User).where(User.username == "owner"))
        if owner is None:
            owner = User(username="owner", is_admin=True)
        db.add(
            ScheduleEntry(
                id=name,
                name=name,
                action=action,
                start=start,
                stop=stop,
                interval=interval,
                priority=priority,
                is_active=True,
                owner=owner,
                next_task_time=series.next_task_time(start, interval, stop, None),
            )
        )


def set_entry(scheduler: Scheduler, name: str, **values) -> None:
    with scheduler.database.session() as db:
        entry = db.get(ScheduleEntry, name)
        for key, value in values.items():
            setattr(entry, key, value)


def same_time(first: datetime.datetime | None, second: datetime.datetime) -> bool:
    """Equal to the microsecond the database keeps (a runner's start goes through a
    float of Unix seconds)."""
    return first is not None and abs(first - second) <= datetime.timedelta(microseconds=2)


def run_until(scheduler: Scheduler, moment: datetime.datetime, limit: int = 10_000) -> None:
    """Step the scheduler until its clock reaches ``moment``."""
    for _ in range(limit):
        if scheduler.clock.now() >= moment:
            return
        scheduler.step()
    raise AssertionError(f"the scheduler did not reach {moment} in {limit} steps")


@dataclass(frozen=True)
class Result:
    schedule_id: str
    task_id: int
    status: str
    scheduled: datetime.datetime
    started: datetime.datetime
    finished: datetime.datetime | None
    detail: str
    recordings: int


def task_results(scheduler: Scheduler, schedule_id: str | None = None) -> list[Result]:
    """The results as the API lists them, in the order they started."""
    query = select(TaskResult).order_by(TaskResult.started, TaskResult.id)
    if schedule_id is not None:
        query = query.where(TaskResult.schedule_entry_id == schedule_id)
    with scheduler.database.sessions() as db:
        return [
            Result(
                row.schedule_entry_id,
                row.task_id,
                row.status,
                row.scheduled,
                row.started,
                row.finished,
                row.detail,
                row.recording_count,
            )
            for row in db.scalars(query)
        ]


def entry(scheduler: Scheduler, name: str) -> ScheduleEntry:
    with scheduler.database.sessions() as db:
        return db.get(ScheduleEntry, name)
