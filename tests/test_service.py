"""``gr-scos run``: the whole sensor from one command, as ``make run`` starts it."""

import json
import os
import signal
import socket
import sqlite3
import subprocess
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GR_SCOS = REPO / ".venv" / "bin" / "gr-scos"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def call(url: str, token: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(
        url,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_run_serves_the_api_runs_the_schedule_and_stops_cleanly(tmp_path):
    port = free_port()
    sensor = subprocess.Popen(
        [GR_SCOS, "run", "--port", str(port)],
        env=os.environ | {"SCOS_HOME": str(tmp_path)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        banner = sensor.stdout.readline()
        assert f"API http://127.0.0.1:{port}/api/v1/" in banner, sensor.stderr.read()
        assert "created the user admin" in sensor.stdout.readline()
        token = sensor.stdout.readline().strip()
        api = f"http://127.0.0.1:{port}/api/v1"
        assert call(f"{api}/status", token)["scheduler"] in ("idle", "running")
        call(f"{api}/schedule", token, {"name": "first", "action": "acquire_iq"})
        deadline = time.monotonic() + 30
        while True:
            tasks = call(f"{api}/schedule/first/tasks", token)["results"]
            if tasks and tasks[0]["status"] == "success":
                break
            assert time.monotonic() < deadline, tasks
            time.sleep(0.1)
        assert tasks[0]["recordings"] == 1
        # A long task is running when the sensor is told to stop.
        call(
            f"{api}/schedule",
            token,
            {"name": "second", "action": "acquire_stepped_iq", "interval": 1},
        )
        time.sleep(0.3)
        sensor.send_signal(signal.SIGTERM)
        assert sensor.wait(30) == 0, sensor.stderr.read()
    finally:
        if sensor.poll() is None:
            os.killpg(sensor.pid, signal.SIGKILL)
            sensor.wait()
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0, "the API still answers"
    # Started again, it keeps its users and prints no new token; nothing is in progress.
    restarted = subprocess.run(
        [GR_SCOS, "users", "list"],
        env=os.environ | {"SCOS_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert restarted.stdout.split() == ["1", "admin", "admin"]
    with sqlite3.connect(tmp_path / "scos.sqlite3") as db:
        statuses = {row[0] for row in db.execute("SELECT status FROM task_results")}
    assert "in-progress" not in statuses
