"""Faults around a running sensor, end to end: a data directory that becomes
read-only, a PostgreSQL server restarted or down while a task runs, SQLite locked
past its busy timeout. Each fails at most the task at hand, shows where a user
looks, and the sensor goes on by itself once the fault is gone; nothing is lost.

The real scheduler runs in a thread of the test (``in_thread``) or as ``gr-scos run``,
with real runners, against the real PostgreSQL of the test session. Every check
waits for the state it asserts.
"""

import datetime
import json
import os
import signal
import sqlite3
import subprocess
import threading
from pathlib import Path

import pytest
import requests

from grscos.scheduler.journal import Journal
from grscos.scheduler.scheduler import Scheduler
from grscos.storage.database import Database
from grscos.storage.models import format_utc
from grscos.storage.outage import OUTAGE_FILE
from tests.api import test_scheduler
from tests.api.test_scheduler import (
    FINISHED,
    GR_SCOS,
    TEST_ACTIONS,
    health,
    results,
    scheduler_status,
    wait_for_results,
    wait_running,
)
from tests.deploy.conftest import start_sensor
from tests.mounts import remount, tmpfs
from tests.processes import alive
from tests.test_acquire import OWNER_FLOWGRAPH, write_config
from tests.waiting import wait_for

in_thread = test_scheduler.in_thread  # the fixture: a scheduler in a thread of the test

# A task long enough (2 s of samples) for a fault to happen while it runs.
UNATTENDED_ACTIONS = TEST_ACTIONS + (
    "  - {name: two_second_iq, flowgraph: acquire_iq, summary: two seconds, max_run_time: 60,"
    " parameters: {duration_ms: 2000, sample_rate: 1e6}}\n"
)


@pytest.fixture(scope="module")
def api_config(tmp_path_factory) -> Path:
    return write_config(
        tmp_path_factory.mktemp("unattended-config"), UNATTENDED_ACTIONS, OWNER_FLOWGRAPH
    )


def outage_file(home: Path) -> Path:
    return home / OUTAGE_FILE


# --- a read-only data directory ---------------------------------------------------------


def test_a_read_only_data_directory_fails_only_the_tasks_until_it_is_writable(tmp_path):
    """``gr-scos run``: the data directory is remounted read-only while an entry runs
    every second. Its tasks fail, each naming the directory and the error; the API
    stays up and /status shows the problem; once the directory is writable again,
    the tasks succeed and the problem is gone."""
    with tmpfs(tmp_path / "data") as data:
        sensor = start_sensor(
            tmp_path / "home", SCOS_DATA_DIR=str(data), SCOS_MAX_CONSECUTIVE_FAILURES="1000"
        )
        try:
            api = requests.Session()
            api.headers.update(sensor.headers)

            def tasks() -> list[dict]:
                answer = api.get(f"{sensor.url}/schedule/every-second/tasks?limit=1000", timeout=10)
                return [t for t in answer.json()["results"] if t["status"] in FINISHED]

            def status() -> dict:
                answer = api.get(f"{sensor.url}/status", timeout=10)
                assert answer.status_code == 200, answer.text
                return answer.json()

            created = api.post(
                f"{sensor.url}/schedule",
                json={"name": "every second", "action": "acquire_iq", "interval": 1},
                timeout=10,
            )
            assert created.status_code == 201, created.text
            wait_for(lambda: [t for t in tasks() if t["status"] == "success"], 30, "a success")

            remount(data, "ro")
            not_run = f"not run: the data directory {data} cannot be written: Read-only file system"
            wait_for(
                lambda: [t for t in tasks() if t.get("detail", "").startswith(not_run)],
                30,
                lambda: f"a task failed naming the directory; have {tasks()}",
            )
            # A task whose flowgraph was writing when the remount came fails too, naming
            # the file and the error; no other failure may come.
            assert all(
                t["detail"].startswith(not_run)
                or t["detail"].startswith("the flowgraph failed: OSError: [Errno 30] Read-only")
                for t in tasks()
                if t["status"] == "fail"
            ), tasks()

            def showing_the_problem() -> dict | None:
                shown = status()
                named = [p for p in shown["problems"] if "Read-only file system" in p]
                return shown if named else None

            current = wait_for(
                showing_the_problem, 30, lambda: f"/status naming the problem; have {status()}"
            )
            assert current["healthy"] is False
            assert sensor.process.poll() is None, "gr-scos run exited"

            remount(data, "rw")
            before = len(tasks())
            wait_for(
                lambda: [t for t in tasks()[before:] if t["status"] == "success"],
                30,
                "a success after the directory is writable again",
            )
            wait_for(lambda: status()["healthy"], 30, lambda: f"healthy again; have {status()}")
            assert sensor.process.poll() is None
        finally:
            assert sensor.stop() == 0


# --- database outages ------------------------------------------------------------------------


@pytest.mark.parametrize("db_backend", ["postgresql"])
def test_a_postgresql_restart_mid_task_loses_nothing(api, in_thread, postgres):
    """``pg_ctl -m fast restart`` while a task runs: the task's result is recorded,
    and the schedule goes on."""
    in_thread()
    entry = api.schedule(name="restarted", action="two_second_iq", interval=3)
    wait_running(api, entry["id"], timeout=15)
    postgres.restart()
    tasks = wait_for_results(api, entry["id"], 2, timeout=30)
    assert [task["status"] for task in tasks[:2]] == ["success", "success"], tasks
    assert [task["task_id"] for task in tasks[:2]] == [1, 2]
    assert [task["recordings"] for task in tasks[:2]] == [1, 1]
    assert scheduler_status(api) in ("idle", "running")


@pytest.mark.parametrize("db_backend", ["postgresql"])
def test_a_task_that_ends_while_postgresql_is_down_is_recorded_when_it_is_back(
    api, in_thread, postgres
):
    """The database is down when a task ends: its outcome waits in the journal, the
    outage is recorded with its start, and once the server is back the result is
    written and the outage record goes."""
    sensor = in_thread()
    entry = api.schedule(name="outage", action="two_second_iq")
    wait_running(api, entry["id"], timeout=15)
    journal = Journal(api.settings.home)
    postgres.halt()
    try:
        wait_for(journal.pending, 30, "the finished task's outcome in the journal")
        outage = json.loads(wait_for(lambda: _read(outage_file(api.settings.home)), 30))
        since = datetime.datetime.fromisoformat(outage["since"])
        assert since <= datetime.datetime.now(datetime.UTC)
        assert sensor.thread.is_alive()
        # What an operator on the sensor sees.
        shown = subprocess.run(
            [str(GR_SCOS), "status"], env=environment(api), capture_output=True, text=True
        )
        assert shown.returncode == 2, shown
        assert shown.stderr.startswith(
            f"gr-scos status: error: the database is unreachable since {format_utc(since)}: "
        ), shown.stderr
    finally:
        postgres.resume()
    (task,) = wait_for_results(api, entry["id"], 1, timeout=60)
    assert (task["status"], task["recordings"]) == ("success", 1), task
    wait_for(lambda: not journal.pending(), 30, "the journal emptied")
    wait_for(lambda: not outage_file(api.settings.home).exists(), 30, "the outage record gone")
    assert sensor.thread.is_alive()


@pytest.mark.parametrize("db_backend", ["postgresql"])
def test_a_stop_while_postgresql_is_down_keeps_the_result_for_the_next_start(
    api, in_thread, postgres
):
    """The sensor is stopped while the database is down and a finished task's result
    is not recorded: the next start records it, with its recording."""
    sensor = in_thread()
    entry = api.schedule(name="kept", action="two_second_iq")
    wait_running(api, entry["id"], timeout=15)
    journal = Journal(api.settings.home)
    postgres.halt()
    try:
        wait_for(journal.pending, 30, "the finished task's outcome in the journal")
        sensor.stop()
    finally:
        postgres.resume()
    assert journal.pending(), "the journal lost the result"
    in_thread(warm=False)
    (task,) = wait_for_results(api, entry["id"], 1, timeout=30)
    assert (task["status"], task["recordings"], task.get("detail")) == ("success", 1, None), task
    assert not journal.pending()


def environment(api) -> dict[str, str]:
    """The environment of a ``gr-scos`` command on the sensor of ``api``."""
    return os.environ | {
        "SCOS_HOME": str(api.settings.home),
        "SCOS_DATABASE_URL": api.settings.database_url,
        "SCOS_DATA_DIR": str(api.settings.data_dir),
        "SCOS_CONFIG": str(api.settings.config_dir),
    }


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


@pytest.mark.parametrize("db_backend", ["sqlite"])
def test_sqlite_locked_past_the_busy_timeout_delays_the_result_and_loses_nothing(api, tmp_path):
    """Another process holds SQLite's write lock for longer than the scheduler's busy
    timeout while a task ends: the scheduler waits it out (the outage file says since
    when the database was locked) and records the result once the lock is gone."""
    scheduler = Scheduler(
        api.settings,
        device="sim",
        database=Database(api.settings.database_url, api.settings.data_dir, busy_timeout_ms=300),
    )
    thread = threading.Thread(target=scheduler.serve_forever, name="scheduler", daemon=True)
    thread.start()
    try:
        wait_for(lambda: scheduler_status(api) == "idle", 30, "the scheduler idle")
        entry = api.schedule(name="locked", action="two_second_iq")
        wait_running(api, entry["id"], timeout=15)
        holder = sqlite3.connect(api.settings.database_url.removeprefix("sqlite:///"), timeout=30)
        holder.isolation_level = None
        holder.execute("BEGIN IMMEDIATE")
        try:
            outage = json.loads(wait_for(lambda: _read(outage_file(api.settings.home)), 30))
            assert "locked" in outage["error"], outage
            # The API still reads (WAL): /status says the scheduler cannot write.
            healthy, problems = health(api)
            assert not healthy
            assert any(
                p.startswith("the database is unreachable since ") and "locked" in p
                for p in problems
            ), problems
            assert [t["status"] for t in results(api, entry["id"])] == ["in-progress"]
            assert thread.is_alive()
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        (task,) = wait_for_results(api, entry["id"], 1, timeout=60)
        assert (task["status"], task["recordings"]) == ("success", 1), task
        wait_for(lambda: not outage_file(api.settings.home).exists(), 30, "the outage record gone")
        assert thread.is_alive()
    finally:
        scheduler.shutdown()
        thread.join(30)
    assert not thread.is_alive()


# --- spare runners that died or froze while they waited ---------------------------------


@pytest.mark.parametrize("db_backend", ["sqlite"])
@pytest.mark.parametrize("fault", [signal.SIGSTOP, signal.SIGKILL], ids=["frozen", "killed"])
def test_a_spare_runner_that_froze_or_died_is_replaced_and_the_task_succeeds(api, in_thread, fault):
    """Both waiting runners are stopped (or killed): the next task still succeeds, in a
    fresh runner, and the broken ones are gone."""
    sensor = in_thread()  # warm: both spares ready
    spares = [runner.pid for runner in sensor.scheduler.runners.spares]
    assert len(spares) == 2
    for pid in spares:
        os.kill(pid, fault)
    entry = api.schedule(name="after the fault")
    (task,) = wait_for_results(api, entry["id"], 1, timeout=60)
    assert (task["status"], task["recordings"]) == ("success", 1), task
    wait_for(lambda: not [pid for pid in spares if alive(pid)], 30, "the broken spares gone")
