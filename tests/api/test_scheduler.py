"""The scheduler end to end, through the HTTP API, with the real scheduler and runners.

Entries are made, changed and deleted through the API (Flask test client) and the
tasks they produce are read back through it, while a real :class:`Scheduler` runs
them in real runner processes on the simulated signal analyzer. The scheduler runs
in a thread of the test process (``in_thread``) where nothing needs signals, and as
the ``gr-scos scheduler`` command (``as_process``) where a test sends it SIGTERM or
SIGKILL. Both database backends are covered by the ``api`` fixture.

No test sleeps for a fixed time where it can wait for a condition (``wait_for``
polls the API every 50 ms); only the checks that something does *not* happen
wait out a fixed time.
"""

import dataclasses
import datetime
import io
import logging
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import sigmf
from sqlalchemy import select

from grscos.scheduler import pool
from grscos.scheduler import scheduler as scheduler_module
from grscos.scheduler.backoff import Backoff
from grscos.scheduler.scheduler import Scheduler
from grscos.storage.models import SchedulerState, utc_now
from tests.api.callback_receiver import Receiver
from tests.api.conftest import DEFAULT_ACTIONS, Api
from tests.processes import alive, children, runner_pids
from tests.test_acquire import OWNER_FLOWGRAPH, write_config
from tests.waiting import wait_for

SCHEDULE = "/api/v1/schedule"
STATUS = "/api/v1/status"
# Seconds a task may start after its time (never before): a bound only a broken
# scheduler exceeds, whatever the machine's load. Start-time accuracy is measured by
# make bench, and the scheduling rules exactly against a fake clock
# (tests/test_scheduling_rules.py).
START_TOLERANCE = 10.0
GR_SCOS = Path(sys.executable).with_name("gr-scos")
FINISHED = ("success", "fail")

# The shipped actions plus: one that runs far longer than any test (1e9 samples),
# one that overruns its maximum run time, and an owner flowgraph that raises in work().
ENDLESS = "{duration_ms: 1e6, sample_rate: 1e6}"
TEST_ACTIONS = DEFAULT_ACTIONS.read_text() + (
    "  - {name: endless_iq, flowgraph: acquire_iq, summary: endless, max_run_time: 3600,"
    f" parameters: {ENDLESS}}}\n"
    "  - {name: overrunning_iq, flowgraph: acquire_iq, summary: overruns, max_run_time: 1,"
    f" parameters: {ENDLESS}}}\n"
    "  - {name: broken, flowgraph: acquire_broken, summary: raises in work(),"
    " max_run_time: 30}\n"
)


# --- waiting and reading through the API -------------------------------------------------


def parse(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def iso(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def soon(seconds: float) -> datetime.datetime:
    """``seconds`` from now, to the millisecond (as the API keeps times)."""
    moment = utc_now() + datetime.timedelta(seconds=seconds)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def path_of(url: str) -> str:
    return urlsplit(url).path


def get_entry(api: Api, schedule_id: str) -> dict:
    response = api.get(f"{SCHEDULE}/{schedule_id}")
    assert response.status_code == 200, response.json
    return response.json


def patch_entry(api: Api, schedule_id: str, **changes) -> dict:
    response = api.patch(f"{SCHEDULE}/{schedule_id}", changes)
    assert response.status_code == 200, response.json
    return response.json


def results(api: Api, schedule_id: str) -> list[dict]:
    """The entry's task results (running or finished), by task id."""
    response = api.get(f"{SCHEDULE}/{schedule_id}/tasks?limit=1000")
    assert response.status_code == 200, response.json
    return [task for task in response.json["results"] if task["status"] != "scheduled"]


def wait_for_results(
    api: Api, schedule_id: str, count: int, timeout: float, statuses=FINISHED
) -> list[dict]:
    """The entry's results once at least ``count`` of them have one of ``statuses``."""
    wait_for(
        lambda: len([t for t in results(api, schedule_id) if t["status"] in statuses]) >= count,
        timeout,
        lambda: (
            f"{count} task(s) of {schedule_id} {'/'.join(statuses)}; "
            f"have {results(api, schedule_id)}"
        ),
    )
    return results(api, schedule_id)


def wait_running(api: Api, schedule_id: str, timeout: float = 10) -> dict:
    """The entry's task once it is in progress."""
    (task,) = wait_for_results(api, schedule_id, 1, timeout, statuses=("in-progress",))
    return task


def scheduler_status(api: Api) -> str:
    response = api.get(STATUS)
    assert response.status_code == 200, response.json
    return response.json["scheduler"]


def start_errors(tasks: list[dict], times: list[datetime.datetime]) -> list[float]:
    """Seconds each task started after its time."""
    return [
        round((parse(task["started"]) - moment).total_seconds(), 3)
        for task, moment in zip(tasks, times, strict=True)
    ]


def check_on_time(tasks: list[dict], times: list[datetime.datetime]) -> list[float]:
    errors = start_errors(tasks, times)
    # Times are kept to the millisecond, truncated: a task on time shows 0.000 late.
    assert all(0 <= error < START_TOLERANCE for error in errors), f"start errors (s): {errors}"
    return errors


def files_under(directory: Path) -> list[Path]:
    return sorted(path for path in directory.rglob("*") if path.is_file())


# --- processes ---------------------------------------------------------------------------


def kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class InThread:
    """``Scheduler(settings).serve_forever()`` in a thread of the test process."""

    def __init__(self, api: Api):
        self.api = api
        self.scheduler: Scheduler | None = None
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def start(self, warm: bool = True, device: str = "sim") -> "InThread":
        """Start; with ``warm`` (only while nothing is due) also wait until the
        pre-spawned runner is ready, so that task timings do not include its start."""
        self.scheduler = Scheduler(self.api.settings, device=device)

        def serve() -> None:
            try:
                self.scheduler.serve_forever()
            except BaseException as error:  # reported by stop()
                self.error = error

        self.thread = threading.Thread(target=serve, name="scheduler", daemon=True)
        self.thread.start()
        wait_for(lambda: scheduler_status(self.api) == "idle", 10, "the scheduler idle")
        if warm:
            spares = wait_for(lambda: list(self.scheduler.runners.spares), 10, "the first runners")
            for runner in spares:
                runner.wait_ready()  # the scheduler thread waits for a wake-up meanwhile
        return self

    def stop(self) -> None:
        if self.thread is None:
            return
        self.scheduler.shutdown()
        self.thread.join(15)
        assert not self.thread.is_alive(), "the scheduler thread did not stop"
        self.thread = None
        if self.error is not None:
            raise self.error


class AsProcess:
    """``gr-scos --log-level INFO scheduler`` in its own process group, with the
    sensor's settings in its environment; its log goes to ``log``."""

    def __init__(self, api: Api, log: Path):
        settings = api.settings
        self.api = api
        self.log = log
        self.env = os.environ | {
            "SCOS_HOME": str(settings.home),
            "SCOS_DATABASE_URL": settings.database_url,
            "SCOS_DATA_DIR": str(settings.data_dir),
            "SCOS_CONFIG": str(settings.config_dir),
            "SCOS_SIGAN": "sim",
        }
        self.process: subprocess.Popen | None = None

    def start(self) -> "AsProcess":
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [str(GR_SCOS), "--log-level", "INFO", "scheduler"],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        wait_for(
            lambda: self.heartbeat_pid() == self.process.pid or self.process.poll() is not None,
            30,
            "the scheduler process's heartbeat row",
        )
        assert self.process.poll() is None, self.log.read_text()
        return self

    def heartbeat_pid(self) -> int | None:
        with self.api.database.sessions() as db:
            state = db.scalar(select(SchedulerState))
            return None if state is None else state.pid

    def runners(self) -> list[int]:
        """Its runner processes (its children)."""
        return children(self.pid, b"grscos.scheduler.runner")

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        """SIGTERM, else SIGKILL to its process group; then any runner left."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                kill_group(self.process.pid)
                self.process.wait()
        for pid in runner_pids(self.api.settings.home):
            kill_group(pid)


@pytest.fixture(scope="module")
def api_config(tmp_path_factory) -> Path:
    """The shipped actions plus the test actions, and the owner flowgraph that fails."""
    return write_config(tmp_path_factory.mktemp("scheduler-config"), TEST_ACTIONS, OWNER_FLOWGRAPH)


@pytest.fixture
def in_thread(api) -> Iterator[Callable[..., InThread]]:
    """Start a scheduler in a thread (``warm=False``: without waiting for its
    runner; ``device``: another signal analyzer than sim); stopped at the end of
    the test."""
    started: list[InThread] = []

    def start(warm: bool = True, device: str = "sim") -> InThread:
        scheduler = InThread(api)
        started.append(scheduler)
        return scheduler.start(warm, device)

    yield start
    for scheduler in started:
        scheduler.stop()


@pytest.fixture
def as_process(api, tmp_path) -> Iterator[Callable[[], AsProcess]]:
    """Start ``gr-scos scheduler``; whatever is left of it is ended after the test."""
    started: list[AsProcess] = []

    def start() -> AsProcess:
        scheduler = AsProcess(api, tmp_path / "scheduler.log")
        started.append(scheduler)
        return scheduler.start()

    yield start
    for scheduler in started:
        scheduler.stop()


# --- the schedule ------------------------------------------------------------------------


def test_one_shot_entry_runs_once_at_once(api, in_thread, tmp_path):
    in_thread()
    entry = api.schedule(name="one shot")
    (task,) = wait_for_results(api, entry["id"], 1, timeout=30)
    created = parse(entry["created"])
    late = (parse(task["started"]) - created).total_seconds()
    done = (parse(task["finished"]) - created).total_seconds()
    assert task["status"] == "success", task
    assert task["recordings"] == 1
    assert task["task_id"] == 1
    assert 0 <= late < START_TOLERANCE, f"started {late:.3f} s after the entry was created"
    assert done >= late
    print(f"one-shot: started {late:.3f} s, finished {done:.3f} s after its creation")

    entry = get_entry(api, entry["id"])
    assert entry["is_active"] is False
    assert "next_task_time" not in entry
    assert entry["next_task_id"] == 2
    assert len(results(api, entry["id"])) == 1

    response = api.get(path_of(entry["archive"]))
    assert response.status_code == 200, response.data[:300]
    with tarfile.open(fileobj=io.BytesIO(response.data), mode="r:") as tar:
        (member,) = tar.getmembers()
        archive = tmp_path / member.name
        archive.write_bytes(tar.extractfile(member).read())
    assert member.name == f"{entry['id']}_1_0.sigmf"
    recording = sigmf.fromarchive(str(archive))
    assert recording.get_global_field("scos-acquisition:action") == "acquire_iq"
    assert recording.get_global_field("scos-acquisition:task") == 1
    assert recording.get_global_field("scos-acquisition:schedule_entry")["id"] == entry["id"]
    assert recording.read_samples().size == 140000


def test_interval_with_relative_stop_runs_then_deactivates(api, in_thread):
    """Three task times (start, +1 s, +2 s) before the stop. On a loaded machine a late
    task makes the next time collapse into it, so there may be fewer than three tasks;
    tests/test_scheduling_rules.py checks the times exactly against a fake clock."""
    in_thread()
    start = soon(1.0)
    entry = api.schedule(name="three times", start=iso(start), interval=1, relative_stop=3)
    done = wait_for(
        lambda: (
            not (shown := get_entry(api, entry["id"]))["is_active"]
            and all(task["status"] in FINISHED for task in results(api, entry["id"]))
            and shown
        ),
        60,
        lambda: f"the entry done; have {results(api, entry['id'])}",
    )
    tasks = results(api, entry["id"])
    assert 1 <= len(tasks) <= 3, tasks
    assert [task["task_id"] for task in tasks] == list(range(1, len(tasks) + 1))
    assert all(task["status"] == "success" for task in tasks), tasks
    assert all(task["recordings"] == 1 for task in tasks), tasks
    assert all(parse(task["started"]) >= start for task in tasks), tasks
    print(f"interval start errors: {start_errors(tasks, [start] * len(tasks))}")
    assert "next_task_time" not in done
    assert done["next_task_id"] == len(tasks) + 1


def test_future_start_waits_and_an_earlier_start_wakes_the_scheduler(api, in_thread, monkeypatch):
    # The scheduler would otherwise look at the schedule again at least every
    # heartbeat (2 s): with a minute, only the API's wake-up can make it run a task
    # earlier than the time it went to sleep for.
    monkeypatch.setattr(scheduler_module, "SCHEDULER_HEARTBEAT_SECONDS", 60.0)
    in_thread()
    start = soon(1.5)
    waits = api.schedule(name="waits", start=iso(start))
    wait_for(lambda: utc_now() >= start - datetime.timedelta(seconds=0.1), 5, "the start")
    # Its runner may have it already, waiting to start it on time (the lead).
    early = results(api, waits["id"])
    assert all(task["status"] == "in-progress" for task in early), f"ran early: {early}"
    (task,) = wait_for_results(api, waits["id"], 1, timeout=30)
    waited = check_on_time([task], [start])

    later = api.schedule(name="later", start=iso(soon(60)))
    wait_for(lambda: scheduler_status(api) == "idle", 30, "the scheduler idle again")
    earlier = soon(1.0)
    patch_entry(api, later["id"], start=iso(earlier))
    (task,) = wait_for_results(api, later["id"], 1, timeout=30)
    assert task["status"] == "success", task
    woken = check_on_time([task], [earlier])
    print(f"start errors: waited {waited}, woken {woken}")


def test_lower_priority_number_runs_first(api, in_thread):
    in_thread()
    # Both exist well before the lead (0.5 s) makes the scheduler take one of them.
    start = iso(soon(3.0))
    last = api.schedule(name="five", start=start, priority=5)  # created first
    first = api.schedule(name="minus five", start=start, priority=-5)
    (five,) = wait_for_results(api, last["id"], 1, timeout=30)
    (minus_five,) = wait_for_results(api, first["id"], 1, timeout=30)
    assert parse(minus_five["started"]) < parse(five["started"]), (minus_five, five)
    assert parse(minus_five["finished"]) <= parse(five["started"])
    errors = check_on_time([minus_five], [parse(start)])
    print(f"priority: start error {errors}, the other {start_errors([five], [parse(start)])}")


def test_deactivation_stops_tasks_and_reactivation_resumes(api, in_thread):
    in_thread()
    entry = api.schedule(name="every second", interval=1)
    wait_for_results(api, entry["id"], 2, timeout=30)
    assert patch_entry(api, entry["id"], is_active=False)["is_active"] is False
    # A task that had started when the entry was deactivated finishes.
    tasks = wait_for(
        lambda: (
            (ts := results(api, entry["id"])) and all(t["status"] in FINISHED for t in ts) and ts
        ),
        5,
        "no task in progress",
    )
    assert "next_task_time" not in get_entry(api, entry["id"])
    time.sleep(2.5)  # 2.5 task times: none may come
    assert results(api, entry["id"]) == tasks
    assert get_entry(api, entry["id"])["is_active"] is False

    reactivated = utc_now()
    assert patch_entry(api, entry["id"], is_active=True)["is_active"] is True
    # (A third task may have started meanwhile.)
    resumed = wait_for_results(api, entry["id"], len(tasks) + 2, timeout=30)[: len(tasks) + 2]
    assert [task["task_id"] for task in resumed] == list(range(1, len(tasks) + 3))
    assert all(task["status"] == "success" for task in resumed), resumed
    late = (parse(resumed[len(tasks)]["started"]) - reactivated).total_seconds()
    assert late < START_TOLERANCE, f"resumed {late:.3f} s after the reactivation"


def test_deleting_an_entry_stops_its_running_task(api, in_thread):
    sensor = in_thread()
    endless = api.schedule(name="endless", action="endless_iq")
    wait_running(api, endless["id"])
    folder = api.settings.data_dir / endless["id"]
    wait_for(lambda: files_under(folder), 30, "the running task's files")
    # Not the next tasks' runners, which started when this task did.
    spares = wait_for(
        lambda: (
            len(sensor.scheduler.runners.spares) == pool.SPARE_RUNNERS
            and {spare.pid for spare in sensor.scheduler.runners.spares}
        ),
        5,
        "the next tasks' runners",
    )
    (runner,) = [pid for pid in runner_pids(api.settings.home) if pid not in spares]
    following = api.schedule(name="following")  # due now, behind the running task

    began = time.monotonic()
    response = api.delete(f"{SCHEDULE}/{endless['id']}")
    answered = time.monotonic() - began
    assert response.status_code == 204, response.json
    assert answered < START_TOLERANCE, f"DELETE took {answered:.3f} s"
    wait_for(lambda: not alive(runner), 30, "the runner of the deleted entry's task stopped")
    stopped = time.monotonic() - began
    (task,) = wait_for_results(api, following["id"], 1, timeout=30)
    assert task["status"] == "success", task
    assert files_under(folder) == []
    assert api.get(f"{SCHEDULE}/{endless['id']}/tasks").status_code == 404
    print(f"task stopped {stopped:.3f} s after the DELETE")


def test_flowgraph_raising_in_work_fails_and_the_next_task_runs(api, in_thread):
    in_thread()
    broken = api.schedule(name="broken", action="broken", priority=0)
    following = api.schedule(name="following", priority=1)
    (failed,) = wait_for_results(api, broken["id"], 1, timeout=30)
    (task,) = wait_for_results(api, following["id"], 1, timeout=30)
    assert failed["status"] == "fail"
    assert failed["detail"] == "the flowgraph failed: ValueError: the detector broke", failed
    assert task["status"] == "success", task
    assert parse(task["started"]) >= parse(failed["finished"])


def test_task_past_its_maximum_run_time_is_stopped_and_the_next_task_runs(api, in_thread):
    in_thread()
    overrunning = api.schedule(name="overrunning", action="overrunning_iq", priority=0)
    following = api.schedule(name="following", priority=1)
    (failed,) = wait_for_results(api, overrunning["id"], 1, timeout=30)
    (task,) = wait_for_results(api, following["id"], 1, timeout=30)
    assert failed["status"] == "fail"
    assert failed["detail"].startswith("stopped after the maximum run time of 1 s"), failed
    ran = (parse(failed["finished"]) - parse(failed["started"])).total_seconds()
    assert 1 <= ran < 4, f"the overrunning task ran {ran:.3f} s"
    assert task["status"] == "success", task


@pytest.mark.parametrize("db_backend", ["sqlite"])
def test_files_of_a_stopped_task_do_not_outlive_its_entry(api, in_thread):
    in_thread()
    overrunning = api.schedule(name="overrunning", action="overrunning_iq")
    (failed,) = wait_for_results(api, overrunning["id"], 1, timeout=30)
    assert failed["status"] == "fail"
    assert api.delete(f"{SCHEDULE}/{overrunning['id']}").status_code == 204
    assert files_under(api.settings.data_dir / overrunning["id"]) == []


def health(api: Api) -> tuple[bool, list[str]]:
    response = api.get(STATUS)
    assert response.status_code == 200, response.json
    return response.json["healthy"], response.json["problems"]


def test_failures_in_a_row_make_the_sensor_unhealthy_then_stop_the_scheduler(api, in_thread):
    sensor = in_thread()
    sensor.scheduler.settings = dataclasses.replace(api.settings, max_consecutive_failures=0)
    entry = api.schedule(name="failing", action="broken", interval=1)
    failing = re.compile(
        r"\d+ task\(s\) in a row failed; the last: the flowgraph failed: "
        r"ValueError: the detector broke"
    )
    wait_for(
        lambda: (shown := health(api)) and any(failing.fullmatch(p) for p in shown[1]) and shown,
        30,
        lambda: f"the failures in /status; have {health(api)}",
    )
    assert health(api)[0] is False
    # A success clears it: no failure can follow it, the action has changed.
    patch_entry(api, entry["id"], action="acquire_iq")
    wait_for(
        lambda: [t for t in results(api, entry["id"]) if t["status"] == "success"],
        30,
        "a successful task",
    )
    wait_for(lambda: health(api) == (True, []), 10, lambda: f"healthy; have {health(api)}")
    # Three failures in a row: the scheduler exits with status 3 for systemd to restart it.
    sensor.scheduler.settings = dataclasses.replace(api.settings, max_consecutive_failures=3)
    patch_entry(api, entry["id"], action="broken")
    wait_for(lambda: not sensor.thread.is_alive(), 60, "the scheduler to give up")
    assert sensor.scheduler.exit_status == 3
    tasks = results(api, entry["id"])
    assert [t["status"] for t in tasks[-3:]] == ["fail"] * 3, tasks
    assert scheduler_status(api) == "dead"


def test_a_signal_analyzer_that_cannot_be_opened_is_a_problem_until_a_task_succeeds(
    api, in_thread, recordings, tmp_path
):
    """The scheduler probes its device at start-up; one it cannot open makes the
    sensor unhealthy, but the scheduler runs on (a device may come back), and the
    first task that succeeds on it clears the problem."""
    meta = tmp_path / "device" / "recording.sigmf-meta"
    device = f"replay:{meta}"
    sensor = in_thread(device=device)
    healthy, problems = health(api)
    assert not healthy
    (problem,) = problems
    assert problem.startswith(f"signal analyzer {device}: "), problem
    assert "no such SigMF recording" in problem

    def heartbeat() -> datetime.datetime:
        with api.database.sessions() as db:
            return db.scalar(select(SchedulerState.heartbeat))

    beaten = heartbeat()
    wait_for(
        lambda: heartbeat() > beaten,
        2 * scheduler_module.SCHEDULER_HEARTBEAT_SECONDS + 1,
        "a later heartbeat",
    )
    assert scheduler_status(api) == "idle" and sensor.thread.is_alive()

    # The device comes back: a recording the replay can serve acquire_iq from.
    meta.parent.mkdir()
    (made,) = recordings["acquire_iq"]
    for suffix in (".sigmf-meta", ".sigmf-data"):
        shutil.copy(made.with_suffix(suffix), meta.with_suffix(suffix))
    entry = api.schedule(name="device back")
    (task,) = wait_for_results(api, entry["id"], 1, timeout=30)
    assert task["status"] == "success", task
    assert health(api) == (True, [])


def test_status_follows_the_scheduler(api, in_thread):
    assert scheduler_status(api) == "dead"
    scheduler = in_thread()
    assert scheduler_status(api) == "idle"
    endless = api.schedule(name="endless", action="endless_iq")
    wait_running(api, endless["id"])
    # The result is in progress from the moment the task is taken; the heartbeat says
    # running a moment later.
    wait_for(lambda: scheduler_status(api) == "running", 10, "running")
    assert api.delete(f"{SCHEDULE}/{endless['id']}").status_code == 204
    wait_for(lambda: scheduler_status(api) == "idle", 30, "idle after the task")
    scheduler.stop()
    assert scheduler_status(api) == "dead"
    with api.database.sessions() as db:
        assert db.scalar(select(SchedulerState)) is None, "heartbeat row left by a clean stop"


def test_a_callback_server_down_then_back_gets_the_notification_without_delaying_tasks(
    api, in_thread
):
    receiver = Receiver()
    receiver.start()
    receiver.stop()  # down: its port refuses connections
    sensor = in_thread()
    sensor.scheduler.notifier.backoff = Backoff(0.3, 0.3)
    notified = api.schedule(name="notified", callback_url=receiver.url(), priority=0)
    following = api.schedule(name="following", priority=1)

    (task,) = wait_for_results(api, notified["id"], 1, timeout=30)
    assert task["status"] == "success", task
    # The next task ran while the notification could not be delivered.
    (next_task,) = wait_for_results(api, following["id"], 1, timeout=30)
    assert next_task["status"] == "success", next_task
    retrying = wait_for(
        lambda: (
            (shown := results(api, notified["id"])[0]["notification"])["attempts"] >= 2 and shown
        ),
        10,
        "two failed attempts",
    )
    assert retrying["state"] == "pending", retrying
    assert "refused" in retrying["last_error"].lower(), retrying

    receiver.start()  # back, on the same port
    delivered = wait_for(
        lambda: (
            (shown := results(api, notified["id"])[0]["notification"])["state"] == "delivered"
            and shown
        ),
        10,
        lambda: f"delivery; have {results(api, notified['id'])[0]['notification']}",
    )
    assert delivered["attempts"] >= 3, delivered
    (request,) = receiver.requests
    assert request.headers["Authorization"] == f"Token {api.tokens['admin']}"
    body = request.json
    assert (body["schedule_id"], body["task_id"], body["status"]) == (notified["id"], 1, "success")
    receiver.stop()


def test_missed_times_collapse_into_one_task(api, in_thread, caplog):
    caplog.set_level(logging.WARNING, logger="grscos.scheduler.scheduler")
    # Half a second off the grid: the count cannot straddle a whole second.
    start = soon(-5.5)
    entry = api.schedule(name="missed", start=iso(start), interval=1)
    began = utc_now()
    in_thread(warm=False)
    first, second = wait_for_results(api, entry["id"], 2, timeout=30)[:2]
    assert [first["task_id"], second["task_id"]] == [1, 2]
    assert [first["status"], second["status"]] == ["success", "success"], (first, second)
    late = (parse(first["started"]) - began).total_seconds()
    assert late < START_TOLERANCE, f"the collapsed task started {late:.3f} s after the scheduler"
    # No burst of catch-up tasks: the second is a later time of the grid, after the first.
    assert parse(second["started"]) >= parse(first["finished"])
    messages = [record.getMessage() for record in caplog.records if "missed" in record.getMessage()]
    counted = re.fullmatch(
        rf"schedule {entry['id']}: (\d+) task time\(s\) missed while busy or down, "
        "collapsed into one",
        messages[0],
    )
    assert counted, messages
    # The five and a half seconds before the scheduler started, at least; not more
    # than had passed when the first task started. (The exact count is checked
    # against a fake clock in tests/test_scheduling_rules.py.)
    skipped = math.floor((parse(first["started"]) - start).total_seconds())
    assert 5 <= int(counted[1]) <= skipped, (messages, skipped)


# --- the scheduler as a process: stopped, killed, restarted ------------------------------


def test_a_second_scheduler_on_the_same_home_exits_2_naming_the_first(api, as_process):
    first = as_process()
    second = subprocess.run(
        [str(GR_SCOS), "scheduler"], env=first.env, capture_output=True, text=True, timeout=60
    )
    assert second.returncode == 2, second
    assert second.stderr.strip() == (
        f"gr-scos scheduler: error: another scheduler (pid {first.pid}) runs the sensor in "
        f"{api.settings.home}"
    )
    assert first.process.poll() is None
    assert first.heartbeat_pid() == first.pid


def test_sigterm_stops_the_running_task_and_the_scheduler(api, as_process):
    scheduler = as_process()
    endless = api.schedule(name="endless", action="endless_iq")
    wait_running(api, endless["id"], timeout=15)
    runners = scheduler.runners()
    assert runners

    began = time.monotonic()
    scheduler.process.send_signal(signal.SIGTERM)
    code = scheduler.process.wait(30)
    took = time.monotonic() - began
    log = scheduler.log.read_text()
    assert code == 0, log
    assert took < 30, f"exited {took:.3f} s after SIGTERM"
    print(f"exited {took:.3f} s after SIGTERM")
    (task,) = results(api, endless["id"])
    assert task["status"] == "fail"
    assert task["detail"] == "interrupted: sensor stopped", task
    assert task["finished"]
    assert not [pid for pid in runners if alive(pid)], "a runner outlived the scheduler"
    assert scheduler_status(api) == "dead"
    assert "scheduler stopped" in log


def kill_mid_task(api: Api, scheduler: AsProcess, with_runners: bool) -> tuple[dict, list[int]]:
    """An interval entry whose first task runs endlessly; the scheduler is killed
    with SIGKILL mid-task (and its runners with it if ``with_runners``). Before the
    restart the entry's action becomes a short one, so the schedule can go on.
    Returns the entry and the runners the scheduler had."""
    entry = api.schedule(name="killed", action="endless_iq", interval=2)
    wait_running(api, entry["id"], timeout=15)
    wait_for(lambda: scheduler_status(api) == "running", 10, "running")
    runners = scheduler.runners()
    assert runners
    kill_group(scheduler.pid)  # the scheduler's process group
    if with_runners:
        for pid in runners:  # each runner has its own process group
            kill_group(pid)
    scheduler.process.wait(5)
    assert scheduler_status(api) != "idle"
    (task,) = results(api, entry["id"])
    assert task["status"] == "in-progress"
    patch_entry(api, entry["id"], action="acquire_iq")
    return entry, runners


def check_resumed_after_crash(api: Api, entry: dict) -> None:
    # The fourth task may be in progress already: the first three are the ones checked.
    tasks = wait_for_results(api, entry["id"], 3, timeout=30)[:3]
    assert [task["task_id"] for task in tasks] == [1, 2, 3], tasks
    assert tasks[0]["status"] == "fail"
    assert tasks[0]["detail"] == "interrupted: sensor restarted", tasks[0]
    assert [task["status"] for task in tasks[1:]] == ["success", "success"], tasks
    assert parse(tasks[2]["started"]) >= parse(tasks[1]["finished"]), tasks
    assert get_entry(api, entry["id"])["next_task_id"] >= 4


def test_crash_of_the_service_fails_the_interrupted_task_and_the_schedule_resumes(api, as_process):
    """SIGKILL to the scheduler and its runners at once, as when the service's
    processes all die (systemd kills the whole control group)."""
    entry, runners = kill_mid_task(api, as_process(), with_runners=True)
    assert not [pid for pid in runners if alive(pid)]
    restarted = as_process()
    check_resumed_after_crash(api, entry)
    assert "1 task(s) left in progress by a crash marked failed" in restarted.log.read_text()


def test_orphaned_runners_do_not_outlive_the_restart(api, as_process):
    """SIGKILL to the scheduler alone orphans its runner (each runner has a process
    group of its own). Unsupervised, a runner would go on acquiring, holding the
    signal analyzer: none may be left, whether it waited for a task or ran one,
    once the sensor has restarted."""

    def left(pids: list[int]) -> list[int]:
        return [pid for pid in pids if alive(pid)]

    idle = as_process()
    waiting = wait_for(idle.runners, 10, "the scheduler's waiting runner")
    kill_group(idle.pid)
    idle.process.wait(5)
    busy = as_process()
    wait_for(
        lambda: not left(waiting), 5, lambda: f"the orphaned waiting runner {left(waiting)} gone"
    )

    entry, running = kill_mid_task(api, busy, with_runners=False)
    as_process()
    wait_for(lambda: not left(running), 5, lambda: f"the orphaned task runner {left(running)} gone")
    check_resumed_after_crash(api, entry)
