"""``gr-scos run``: the whole sensor from one command, as ``make run`` starts it.

Each sensor runs as a real process in a session of its own, with its output in files;
its processes (gunicorn's master and workers, the runners) are found through /proc.
"""

import datetime
import json
import os
import signal
import socket
import sqlite3
import subprocess
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from grscos import service
from tests import processes
from tests.test_acquire import write_config
from tests.waiting import wait_for

REPO = Path(__file__).resolve().parents[1]
GR_SCOS = REPO / ".venv" / "bin" / "gr-scos"
# The shipped actions plus one that runs far longer than any test (1e9 samples).
ACTIONS = (REPO / "actions" / "actions.yaml").read_text() + (
    "  - {name: endless_iq, flowgraph: acquire_iq, summary: endless, max_run_time: 3600,"
    " parameters: {duration_ms: 1e6, sample_rate: 1e6}}\n"
)
WORKERS = 2  # gunicorn workers per sensor (its default is more than a test needs)
START_TIMEOUT = 90.0  # a sensor starting on a loaded 2-CPU machine
GUNICORN = b"gunicorn"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_free(port: int) -> bool:
    """Whether a server could listen on ``port`` now."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def call(url: str, token: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(
        url,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


class Sensor:
    """``gr-scos run --port port`` with its state in ``home``, in a session of its own;
    what it prints goes to ``<name>.out`` and ``<name>.err`` beside ``home``."""

    def __init__(self, home: Path, port: int, name: str, **environment: str):
        self.home = home
        self.out = home.parent / f"{name}.out"
        self.err = home.parent / f"{name}.err"
        self.api = f"http://127.0.0.1:{port}/api/v1"
        config = write_config(home.parent / "config", ACTIONS)
        with self.out.open("w") as out, self.err.open("w") as err:
            self.process = subprocess.Popen(
                [GR_SCOS, "run", "--port", str(port)],
                env=os.environ
                | {
                    "SCOS_HOME": str(home),
                    "SCOS_CONFIG": str(config),
                    "SCOS_API_WORKERS": str(WORKERS),
                }
                | environment,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return self.out.read_text()

    def errors(self) -> str:
        return self.err.read_text()

    def _wait_line(self, start: str, after: int = 0) -> str:
        """The ``after``-th line of stdout after the first that begins with ``start``
        (gunicorn's access log shares it), once printed; fails if the sensor exits first."""

        def printed() -> str | None:
            assert self.process.poll() is None, f"exited {self.process.returncode}: {self.errors()}"
            lines = self.output().split("\n")[:-1]  # complete lines only
            found = [number for number, line in enumerate(lines) if line.startswith(start)]
            if found and found[0] + after < len(lines):
                return lines[found[0] + after]
            return None

        return wait_for(printed, START_TIMEOUT, lambda: f"{start!r} printed: {self.errors()}")

    def wait_banner(self) -> str:
        """The start-up banner, once printed."""
        banner = self._wait_line("gr-scos sensor: API ")
        assert f"API {self.api}/ " in banner, banner
        return banner

    def admin_token(self) -> str:
        """The admin's token, printed after the banner on the first start in its home."""
        self.wait_banner()
        return self._wait_line("created the user admin; its API token", after=1).strip()

    def scheduler(self, token: str) -> str:
        """The scheduler's state in /status."""
        return call(f"{self.api}/status", token)["scheduler"]

    def tasks(self, token: str, schedule_id: str) -> list[dict]:
        return call(f"{self.api}/schedule/{schedule_id}/tasks", token)["results"]

    def wait_tasks(self, token: str, schedule_id: str, status: str, timeout: float) -> list[dict]:
        """The entry's tasks with ``status``, once there is one."""
        return wait_for(
            lambda: [t for t in self.tasks(token, schedule_id) if t["status"] == status],
            timeout,
            lambda: f"a task of {schedule_id} {status}: {self.tasks(token, schedule_id)}",
        )

    def api_master(self) -> int | None:
        """gunicorn's master (the sensor's gunicorn child), if there is one."""
        masters = processes.children(self.pid, GUNICORN)
        assert len(masters) <= 1, masters
        return masters[0] if masters else None

    def left(self) -> list[int]:
        """Its live processes: itself, gunicorn's master and workers, its runners."""
        return sorted(set(processes.session(self.pid)) | set(processes.runner_pids(self.home)))

    def end(self) -> None:
        """SIGTERM, else SIGKILL; then SIGKILL to whatever of it is left."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        processes.kill(self.left())


@pytest.fixture
def sensors(tmp_path) -> Iterator[Callable[[int], Sensor]]:
    """Start ``gr-scos run`` on a port (with more settings in the environment), all with
    the same home; ended after the test."""
    started: list[Sensor] = []

    def start(port: int, **environment: str) -> Sensor:
        sensor = Sensor(tmp_path / "home", port, f"sensor-{len(started)}", **environment)
        started.append(sensor)
        return sensor

    yield start
    for sensor in started:
        sensor.end()


def test_run_serves_the_api_runs_the_schedule_and_stops_cleanly(sensors, tmp_path):
    port = free_port()
    sensor = sensors(port)
    token = sensor.admin_token()
    wait_for(lambda: sensor.scheduler(token) == "idle", 30, "the scheduler idle")
    call(f"{sensor.api}/schedule", token, {"name": "first", "action": "acquire_iq"})
    tasks = sensor.wait_tasks(token, "first", "success", 30)
    assert tasks[0]["recordings"] == 1
    # A task is running when the sensor is told to stop.
    call(f"{sensor.api}/schedule", token, {"name": "endless", "action": "endless_iq"})
    sensor.wait_tasks(token, "endless", "in-progress", 60)
    sensor.process.send_signal(signal.SIGTERM)
    assert sensor.process.wait(30) == 0, sensor.errors()
    wait_for(lambda: not sensor.left(), 30, lambda: f"the sensor's processes {sensor.left()} gone")
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0, "the API still answers"
    # Started again, it keeps its users and prints no new token; nothing is in progress.
    restarted = subprocess.run(
        [GR_SCOS, "users", "list"],
        env=os.environ | {"SCOS_HOME": str(tmp_path / "home")},
        capture_output=True,
        text=True,
        check=True,
    )
    assert restarted.stdout.split() == ["1", "admin", "admin"]
    with sqlite3.connect(tmp_path / "home" / "scos.sqlite3") as db:
        statuses = {row[0] for row in db.execute("SELECT status FROM task_results")}
    assert "in-progress" not in statuses


def test_sigkill_leaves_no_process_and_the_next_start_takes_over(sensors):
    """kill -9 of ``gr-scos run`` mid-task: its gunicorn master, the master's workers
    and its runners all end by themselves, the port is free, and a new sensor on the
    same port and home serves the API and fails the interrupted task."""
    port = free_port()
    first = sensors(port)
    token = first.admin_token()
    call(f"{first.api}/schedule", token, {"name": "endless", "action": "endless_iq"})
    first.wait_tasks(token, "endless", "in-progress", 60)
    master = first.api_master()
    assert master is not None
    workers = wait_for(
        lambda: len(processes.children(master)) == WORKERS and processes.children(master),
        START_TIMEOUT,
        lambda: f"{WORKERS} workers of the master {master}: {processes.children(master)}",
    )
    runners = processes.runner_pids(first.home)
    assert runners
    assert {master, *workers, *runners} <= set(first.left())

    os.kill(first.pid, signal.SIGKILL)
    first.process.wait()
    wait_for(lambda: not first.left(), 30, lambda: f"the killed sensor's {first.left()} gone")
    wait_for(lambda: port_free(port), 10, f"port {port} free")

    second = sensors(port)
    second.wait_banner()
    assert call(f"{second.api}/status", token)  # the banner says the API answers
    assert "created the user admin" not in second.output()
    (task,) = second.wait_tasks(token, "endless", "fail", 30)
    assert task["detail"] == "interrupted: sensor restarted", task
    assert second.process.poll() is None, second.errors()


def test_a_port_in_use_is_an_error_before_anything_starts(sensors):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        sensor = sensors(port)
        status = sensor.process.wait(START_TIMEOUT)
        errors = sensor.errors()
        assert status == 2, errors
        assert (
            f"gr-scos run: error: cannot listen on 127.0.0.1:{port}: the address is in use "
            "(another sensor or program listens there)"
        ) in errors
        assert sensor.output() == ""
        assert not sensor.left()
    # Nothing was used up: once the port is free, the first start creates the admin.
    sensors(port).admin_token()


def next_master(sensor: Sensor, before: list[int]) -> int:
    """The sensor's gunicorn master once it is another than those ``before``."""

    def found() -> int | None:
        assert sensor.process.poll() is None, f"exited: {sensor.errors()}"
        master = sensor.api_master()
        return master if master not in before else None

    return wait_for(found, START_TIMEOUT, f"a gunicorn master other than {before}")


def test_the_api_comes_back_after_its_master_is_killed_and_the_schedule_goes_on(sensors):
    port = free_port()
    sensor = sensors(port)
    token = sensor.admin_token()
    call(f"{sensor.api}/schedule", token, {"name": "steady", "action": "acquire_iq", "interval": 1})
    sensor.wait_tasks(token, "steady", "success", 60)
    master = sensor.api_master()
    workers = processes.children(master)
    assert workers

    killed = datetime.datetime.now(datetime.UTC)
    os.kill(master, signal.SIGKILL)
    # Its workers see their master gone and end; a new master serves the API.
    wait_for(
        lambda: not [pid for pid in workers if processes.alive(pid)],
        30,
        lambda: f"the old workers {[pid for pid in workers if processes.alive(pid)]} gone",
    )
    next_master(sensor, [master])

    def succeeded_since_the_kill() -> list[dict]:
        return [
            task
            for task in sensor.tasks(token, "steady")
            if task["status"] == "success"
            and datetime.datetime.fromisoformat(task["started"]) > killed
        ]

    wait_for(succeeded_since_the_kill, 60, lambda: sensor.tasks(token, "steady"))
    assert f"the API (gunicorn, pid {master}) exited with status -9" in sensor.errors()
    sensor.process.send_signal(signal.SIGTERM)
    assert sensor.process.wait(30) == 0, sensor.errors()


def test_an_api_that_keeps_dying_stops_the_sensor(sensors):
    """Each unasked exit of gunicorn is followed by a restart, up to the limit within a
    minute; the next one ends the sensor with status 1, and nothing of it is left."""
    sensor = sensors(free_port())
    sensor.wait_banner()
    killed: list[int] = []
    for _ in range(service.RESTARTS_PER_WINDOW + 1):
        master = next_master(sensor, killed)
        os.kill(master, signal.SIGKILL)
        killed.append(master)
    assert sensor.process.wait(START_TIMEOUT) == 1, sensor.errors()
    assert (
        f"exited with status -9, {service.RESTARTS_PER_WINDOW + 1} times within a minute; "
        "stopping the sensor"
    ) in sensor.errors()
    wait_for(lambda: not sensor.left(), 30, lambda: f"the sensor's processes {sensor.left()} gone")


def test_a_scheduler_that_gives_up_is_replaced_while_the_api_stays_up(sensors, tmp_path):
    """Tasks fail in a row (the signal analyzer's recording is gone) until the scheduler
    gives up (SCOS_MAX_CONSECUTIVE_FAILURES): under ``gr-scos run`` a new scheduler
    starts in the same process, as systemd would restart ``gr-scos scheduler``, and the
    API answers throughout."""
    absent = tmp_path / "absent.sigmf-meta"
    sensor = sensors(free_port(), SCOS_MAX_CONSECUTIVE_FAILURES="2", SCOS_SIGAN=f"replay:{absent}")
    token = sensor.admin_token()
    call(
        f"{sensor.api}/schedule", token, {"name": "failing", "action": "acquire_iq", "interval": 1}
    )
    wait_for(
        lambda: "the scheduler gave up; a new one starts in 5 s" in sensor.errors(),
        START_TIMEOUT,
        lambda: f"the scheduler replaced: {sensor.errors()}",
    )
    first_failures = len(sensor.wait_tasks(token, "failing", "fail", 30))
    # The new scheduler runs the schedule on: more tasks fail, with higher ids.
    failed = wait_for(
        lambda: (
            (done := sensor.wait_tasks(token, "failing", "fail", 30))
            and len(done) > first_failures
            and done
        ),
        START_TIMEOUT,
        "a task of the new scheduler",
    )
    assert [task["task_id"] for task in failed] == list(range(1, len(failed) + 1))
    assert all("no such SigMF recording" in task["detail"] for task in failed), failed
    assert call(f"{sensor.api}/status", token)["healthy"] is False
    assert sensor.process.poll() is None, sensor.errors()
    sensor.process.send_signal(signal.SIGTERM)
    assert sensor.process.wait(30) == 0, sensor.errors()
