"""Benchmark: the real scheduler, its runner processes and the simulated signal analyzer.

A :class:`Scheduler` runs in a thread of this process, on SQLite in a temporary
``SCOS_HOME``, with the shipped actions plus ``bench_iq`` (``acquire_iq`` with
``duration_ms: 1``: 14,000 samples, so that the flowgraph itself costs little and
what is measured is the scheduler). Entries are inserted straight into the
database, then the scheduler is woken as the API wakes it. Two runs:

* **back to back**: ``--back-to-back`` (50) one-shot entries all due at once. Per
  task overhead, as the issue defines it from the stored results, is
  ``next.started - this.finished`` (``TaskResult.started`` is when the flowgraph
  started, ``finished`` when the result was recorded); and, from the runner's own
  events, each task's wall time (start of one flowgraph to the start of the next)
  minus its flowgraph's run time (``started`` to ``finished`` event). Throughput:
  tasks / (last ``finished`` - first ``started``).
* **on time**: ``--on-time`` (200) one-shot entries whose start times are
  ``--spacing`` (1.0 s) apart, the first 2 s after they are inserted (~3.5 min).
  Every task time is still in the future when the scheduler comes to it: it hands
  the task to its runner ahead of time (``Scheduler.lead``), the runner builds the
  flowgraph and starts it at the task time. Start error: ``TaskResult.started -
  TaskResult.scheduled``, where ``started`` is the instant the runner's
  ``top.start()`` returned (its ``started`` event's ``at``). The report counts any
  task due while the previous one was still running. One-shot entries rather than
  interval entries, since intervals are whole seconds and one-shot times can be
  spaced freely.

The runner's events are observed by wrapping :meth:`RunnerProcess.run` in this
process (the application code is not changed): the time it is called, when its
runner is ready, when the flowgraph started (the ``started`` event's ``at``) and
when the ``finished`` event arrives.

Never collected as a test. Run with ``make bench`` or
``.venv/bin/python tests/bench/bench_scheduler.py``.
"""

import argparse
import datetime
import itertools
import json
import math
import os
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, insert, select

from grscos.scheduler import supervisor
from grscos.scheduler.pool import SPARE_RUNNERS
from grscos.scheduler.scheduler import Scheduler
from grscos.scheduler.wake import wake
from grscos.settings import Settings
from grscos.storage import users
from grscos.storage.database import Database
from grscos.storage.models import ScheduleEntry, TaskResult, utc_now

REPO = Path(__file__).resolve().parents[2]
DEFAULT_ACTIONS = REPO / "actions" / "actions.yaml"
ACTION = "bench_iq"
BENCH_ACTIONS = DEFAULT_ACTIONS.read_text() + (
    f"  - {{name: {ACTION}, flowgraph: acquire_iq, summary: 1 ms of IQ for the scheduler"
    " benchmark, max_run_time: 30, parameters: {duration_ms: 1}}\n"
)
FIRST_DELAY_S = 2.0  # from inserting the on-time entries to the first task time
POLL_S = 0.5
START_ERROR_TARGET_MS = 20.0
OVERHEAD_TARGET_MS = 150.0
NTIA_NOTE = (
    "NTIA scos-sensor reads its schedule at most once a second, so its start error is "
    "up to ~1000 ms (~500 ms on average) before any of its own overhead."
)


# -- observing the runners ---------------------------------------------------------


@dataclass
class Probe:
    """Wall-clock times (s since the epoch) of one task's runner."""

    called: float  # RunnerProcess.run entered: the scheduler hands over the task
    ready: float = math.nan  # the runner (spawned when the previous task started) is ready
    started: float = math.nan  # its "started" event's at: the flowgraph is running
    build: float = math.nan  # its "started" event's build_seconds
    finished: float = math.nan  # its "finished" event: the flowgraph has ended
    returned: float = math.nan  # run() returns: the runner process has exited


class Probes:
    """Wraps RunnerProcess.run (for this process only) to time every task's runner,
    keyed by (schedule entry id, task id), read from the task's output path."""

    def __init__(self) -> None:
        self.tasks: dict[tuple[str, int], Probe] = {}
        self._original = supervisor.RunnerProcess.run

    def install(self) -> None:
        original, tasks = self._original, self.tasks

        def run(runner, request, timeout, on_event=None, **options):
            probe = Probe(called=time.time())
            output = Path(request["arguments"]["output"])  # data/<entry>/<task>/<action>
            tasks[(output.parent.parent.name, int(output.parent.name))] = probe
            runner.wait_ready()  # run() waits for it first anyway; this times it
            probe.ready = time.time()

            def event(message: dict) -> None:
                if message["type"] == "started":
                    probe.started, probe.build = message["at"], message["build_seconds"]
                elif message["type"] == "finished":
                    probe.finished = time.time()
                if on_event is not None:
                    on_event(message)

            try:
                return original(runner, request, timeout, event, **options)
            finally:
                probe.returned = time.time()

        supervisor.RunnerProcess.run = run

    def uninstall(self) -> None:
        supervisor.RunnerProcess.run = self._original


# -- the sensor ----------------------------------------------------------------------


def stamp(moment: datetime.datetime) -> float:
    return moment.timestamp()


def ms_floor(moment: datetime.datetime) -> datetime.datetime:
    """To the millisecond, as the API keeps times."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


class Sensor:
    """A temporary sensor home with a scheduler serving it in a thread."""

    def __init__(self, base: Path):
        home = base / "home"
        config = base / "config"
        config.mkdir()
        (config / "actions.yaml").write_text(BENCH_ACTIONS)
        self.settings = Settings(
            home=home,
            database_url=f"sqlite:///{home / 'scos.sqlite3'}",
            data_dir=home / "data",
            config_dir=config,
        )
        self.database = Database(self.settings.database_url, self.settings.data_dir)
        self.database.upgrade()
        with self.database.session() as db:
            owner, _ = users.create_user(db, "bench", is_admin=True)
            db.flush()
            self.owner_id = owner.id
        self.scheduler = Scheduler(self.settings, device="sim")
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._serve, name="scheduler", daemon=True)

    def _serve(self) -> None:
        try:
            self.scheduler.serve_forever()
        except BaseException as error:
            self.error = error

    def start(self) -> None:
        self.thread.start()
        self.wait_runners_ready()

    def wait_runners_ready(self, timeout: float = 30) -> None:
        """Until the scheduler's spare runners are all ready, so that a run does not
        begin with runners still importing."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            spares = list(self.scheduler.runners.spares)
            if len(spares) == SPARE_RUNNERS:
                for runner in spares:
                    runner.wait_ready(timeout)
                return
            self.check()
            time.sleep(0.05)
        raise RuntimeError(f"the scheduler had no spare runners after {timeout:g} s")

    def check(self) -> None:
        if self.error is not None:
            raise RuntimeError(f"the scheduler thread failed: {self.error!r}") from self.error
        if not self.thread.is_alive():
            raise RuntimeError("the scheduler thread ended")

    def stop(self) -> None:
        self.scheduler.shutdown()
        self.thread.join(30)
        self.database.dispose()

    def add_entries(self, prefix: str, starts: list[datetime.datetime]) -> None:
        """One-shot bench_iq entries ``prefix-00000``... at ``starts``, then a wake-up,
        as the API does after a change."""
        now = utc_now()
        rows = [
            {
                "id": f"{prefix}-{index:05d}",
                "name": f"{prefix} {index}",
                "action": ACTION,
                "start": start,
                "stop": None,
                "interval": None,
                "priority": 10,
                "is_active": True,
                "is_private": False,
                "callback_url": None,
                "next_task_time": start,
                "next_task_id": 1,
                "last_task_time": None,
                "created": now,
                "modified": now,
                "owner_id": self.owner_id,
            }
            for index, start in enumerate(starts)
        ]
        with self.database.engine.begin() as connection:
            connection.execute(insert(ScheduleEntry.__table__), rows)
        wake(self.settings.home)

    def wait_finished(self, prefix: str, count: int, timeout: float) -> list[TaskResult]:
        """The results of the ``prefix`` entries once ``count`` have finished, by
        start time."""
        of_prefix = TaskResult.schedule_entry_id.like(f"{prefix}-%")
        deadline = time.monotonic() + timeout
        while True:
            self.check()
            with self.database.sessions() as db:
                done = db.scalar(
                    select(func.count(TaskResult.id)).where(
                        of_prefix, TaskResult.finished.is_not(None)
                    )
                )
            if done >= count:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{prefix}: {done} of {count} tasks finished in {timeout:g} s")
            time.sleep(POLL_S)
        with self.database.sessions() as db:
            return list(
                db.scalars(select(TaskResult).where(of_prefix).order_by(TaskResult.started))
            )


# -- statistics ----------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def summary(values_ms: list[float]) -> dict:
    return {
        "n": len(values_ms),
        "p50": percentile(values_ms, 50),
        "p99": percentile(values_ms, 99),
        "max": max(values_ms),
        "mean": statistics.fmean(values_ms),
    }


def probe_of(probes: Probes, result: TaskResult) -> Probe:
    return probes.tasks[(result.schedule_entry_id, result.task_id)]


def failures(results: list[TaskResult]) -> list[str]:
    return [
        f"{result.schedule_entry_id}: {result.status} {result.detail}"
        for result in results
        if result.status != "success"
    ]


# -- the runs ------------------------------------------------------------------------


def run_back_to_back(sensor: Sensor, probes: Probes, count: int) -> dict:
    sensor.wait_runners_ready()
    due = ms_floor(utc_now() - datetime.timedelta(seconds=1))
    began = time.time()
    sensor.add_entries("b2b", [due] * count)
    results = sensor.wait_finished("b2b", count, timeout=10 + 5 * count)
    if len(results) != count:
        raise RuntimeError(f"back to back: {len(results)} results for {count} entries")
    tasks = [(result, probe_of(probes, result)) for result in results]
    started = [stamp(result.started) for result, _ in tasks]
    finished = [stamp(result.finished) for result, _ in tasks]
    pairs = list(itertools.pairwise(tasks))
    # The approximation, from the stored results only.
    gaps = [(stamp(nxt.started) - stamp(this.finished)) * 1e3 for (this, _), (nxt, _) in pairs]
    # From the runner's events: wall time per task minus the flowgraph's own run time.
    walls = [(b.started - a.started) * 1e3 for (_, a), (_, b) in pairs]
    runs = [(a.finished - a.started) * 1e3 for (_, a), _ in pairs]
    overheads = [wall - run for wall, run in zip(walls, runs, strict=True)]
    # Where a task's time goes, stage by stage (medians over all tasks).
    stages = {
        "previous result finished -> run() called (quota, next due, take the task)": [
            (b.called - stamp(this.finished)) * 1e3 for (this, _), (_, b) in pairs
        ],
        "run() called -> runner ready (runner still importing)": [
            (probe.ready - probe.called) * 1e3 for _, probe in tasks
        ],
        "runner ready -> flowgraph started (built and started)": [
            (probe.started - probe.ready) * 1e3 for _, probe in tasks
        ],
        "of which the build": [probe.build * 1e3 for _, probe in tasks],
        "flowgraph started -> 'finished' event (the flowgraph runs)": [
            (probe.finished - probe.started) * 1e3 for _, probe in tasks
        ],
        "'finished' event -> run() returns": [
            (probe.returned - probe.finished) * 1e3 for _, probe in tasks
        ],
        "run() returns -> result finished (record)": [
            (stamp(result.finished) - probe.returned) * 1e3 for result, probe in tasks
        ],
    }
    return {
        "count": count,
        "failures": failures(results),
        "wake_to_first_start_ms": (started[0] - began) * 1e3,
        "seconds": finished[-1] - started[0],
        "tasks_per_s": count / (finished[-1] - started[0]),
        "gap_ms": summary(gaps),
        "overhead_ms": summary(overheads),
        "wall_ms": summary(walls),
        "flowgraph_run_ms": summary(runs),
        "stages_p50_ms": {name: percentile(values, 50) for name, values in stages.items()},
    }


def run_on_time(sensor: Sensor, probes: Probes, count: int, spacing: float) -> dict:
    sensor.wait_runners_ready()
    first = ms_floor(utc_now() + datetime.timedelta(seconds=FIRST_DELAY_S))
    starts = [first + datetime.timedelta(seconds=spacing * index) for index in range(count)]
    sensor.add_entries("ontime", starts)
    results = sensor.wait_finished("ontime", count, timeout=FIRST_DELAY_S + spacing * count + 60)
    if len(results) != count:
        raise RuntimeError(f"on time: {len(results)} results for {count} entries")
    started = [(stamp(r.started) - stamp(r.scheduled)) * 1e3 for r in results]
    ahead = [(stamp(r.scheduled) - probe_of(probes, r).called) * 1e3 for r in results]
    # Tasks whose time came while the previous one was still being recorded: not a
    # fair start-error sample (none are expected at this spacing).
    busy = sum(
        1
        for previous, result in itertools.pairwise(results)
        if previous.finished > result.scheduled
    )
    cycle = [(stamp(r.finished) - stamp(r.started)) * 1e3 for r in results]
    # Where the flowgraph's start error comes from.
    stages = {
        "task handed to the runner, before its time": ahead,
        "flowgraph build": [probe_of(probes, r).build * 1e3 for r in results],
        "runner ready -> flowgraph started, less the wait for the task time": [
            (probe_of(probes, r).started - probe_of(probes, r).ready) * 1e3
            - max(0.0, stamp(r.scheduled) - probe_of(probes, r).ready) * 1e3
            for r in results
        ],
    }
    return {
        "count": count,
        "spacing_s": spacing,
        "failures": failures(results),
        "early": sum(1 for value in started if value < 0),
        "busy_at_task_time": busy,
        "started_ms": summary(started),
        "task_ms": summary(cycle),
        "stages_ms": {name: summary(values) for name, values in stages.items()},
    }


# -- report --------------------------------------------------------------------------


def verdict(value: float, target: float) -> str:
    return "yes" if value < target else "**no**"


def print_report(back: dict, on_time: dict, seconds: float) -> None:
    print()
    print(
        f"Scheduler in a thread, SQLite, simulated signal analyzer, action {ACTION} "
        f"(acquire_iq, duration_ms 1); {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f}"
    )
    print()
    print("| metric | n | p50 ms | p99 ms | max ms | target | met |")
    print("|---|--:|--:|--:|--:|---|---|")

    def row(name: str, stats: dict, target: float | None = None) -> None:
        goal = f"p99 < {target:g} ms" if target is not None else ""
        met = verdict(stats["p99"], target) if target is not None else ""
        print(
            f"| {name} | {stats['n']} | {stats['p50']:.1f} | {stats['p99']:.1f} | "
            f"{stats['max']:.1f} | {goal} | {met} |"
        )

    row(
        f"start error: flowgraph started - scheduled (TaskResult.started - scheduled), "
        f"{on_time['spacing_s']:g} s apart",
        on_time["started_ms"],
        START_ERROR_TARGET_MS,
    )
    row(
        "per-task overhead, issue's approximation (next.started - this.finished)",
        back["gap_ms"],
        OVERHEAD_TARGET_MS,
    )
    row(
        "per-task overhead, from runner events (wall per task - flowgraph run)",
        back["overhead_ms"],
        OVERHEAD_TARGET_MS,
    )
    row("back to back: wall time per task ('started' to next 'started')", back["wall_ms"])
    row("back to back: flowgraph run ('started' to 'finished' event)", back["flowgraph_run_ms"])
    row("on time: task as recorded (TaskResult.finished - started)", on_time["task_ms"])
    print()
    print("| back to back | value |")
    print("|---|--:|")
    print(f"| entries due at once | {back['count']} |")
    print(
        f"| throughput (tasks / (last finished - first started)) | "
        f"{back['tasks_per_s']:.2f} tasks/s ({back['seconds']:.1f} s) |"
    )
    print(f"| wake-up to first task started | {back['wake_to_first_start_ms']:.1f} ms |")
    print()
    print("Where a back-to-back task's time goes (median per task):")
    print()
    print("| stage | p50 ms |")
    print("|---|--:|")
    for name, value in back["stages_p50_ms"].items():
        print(f"| {name} | {value:.1f} |")
    print()
    print("An on-time task before its start:")
    print()
    print("| stage | p50 ms | p99 ms |")
    print("|---|--:|--:|")
    for name, stats in on_time["stages_ms"].items():
        print(f"| {name} | {stats['p50']:.1f} | {stats['p99']:.1f} |")
    print()
    problems = back["failures"] + on_time["failures"]
    print(
        f"Failed tasks: {len(problems)}; on-time tasks started early: {on_time['early']}; "
        f"on-time tasks due while the previous one was still running: "
        f"{on_time['busy_at_task_time']}."
    )
    for problem in problems[:10]:
        print(f"  {problem}")
    print()
    print(NTIA_NOTE)
    print(f"\nbench time {seconds:.0f} s")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--back-to-back", type=int, default=50, help="entries due at once")
    parser.add_argument("--on-time", type=int, default=200, help="entries with future times")
    parser.add_argument("--spacing", type=float, default=1.0, help="seconds between those")
    parser.add_argument("--json", help="also write the results to this file")
    arguments = parser.parse_args()
    if arguments.back_to_back < 2 or arguments.on_time < 1:
        parser.error("need at least 2 back-to-back and 1 on-time entries")
    began = time.perf_counter()
    probes = Probes()
    probes.install()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-scheduler-") as directory:
            sensor = Sensor(Path(directory))
            sensor.start()
            try:
                print(f"back to back: {arguments.back_to_back} entries due at once")
                back = run_back_to_back(sensor, probes, arguments.back_to_back)
                print(f"  {back['tasks_per_s']:.2f} tasks/s")
                print(
                    f"on time: {arguments.on_time} entries {arguments.spacing:g} s apart "
                    f"(~{arguments.on_time * arguments.spacing:.0f} s)"
                )
                on_time = run_on_time(sensor, probes, arguments.on_time, arguments.spacing)
                print(f"  start error p99 {on_time['started_ms']['p99']:.1f} ms")
            finally:
                sensor.stop()
    finally:
        probes.uninstall()
    seconds = time.perf_counter() - began
    print_report(back, on_time, seconds)
    if arguments.json:
        Path(arguments.json).write_text(
            json.dumps({"back_to_back": back, "on_time": on_time}, indent=2)
        )
    return 1 if back["failures"] or on_time["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
