"""A whole running sensor (``gr-scos run``) for the deployment tests: nginx in front
of it, a browser on its Swagger UI, the README's tour against it."""

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"
GR_SCOS = VENV_BIN / "gr-scos"
STOP_TIMEOUT = 30
ANSWER_TIMEOUT = 60


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class RunningSensor:
    """``gr-scos run`` on 127.0.0.1:``port`` with its state in ``home``; ``token`` is
    the admin token it printed on its first start."""

    process: subprocess.Popen
    home: Path
    port: int
    token: str
    environment: dict[str, str]

    @property
    def url(self) -> str:
        """The API root, ``http://127.0.0.1:PORT/api/v1``."""
        return f"http://127.0.0.1:{self.port}/api/v1"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Token {self.token}"}

    def stop(self) -> int:
        """SIGTERM, as systemd and Ctrl-C stop it; its exit status."""
        return terminate(self.process)


def terminate(process: subprocess.Popen, timeout: float = STOP_TIMEOUT) -> int:
    """SIGTERM to ``process``, SIGKILL to its whole process group if it has not
    exited after ``timeout`` seconds; its exit status."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return process.returncode


def start_sensor(home: Path, **environment: str) -> RunningSensor:
    """Start ``gr-scos run`` on a free port with ``SCOS_HOME=home`` (plus
    ``environment``) and wait until it has printed its banner and admin token."""
    port = free_port()
    env = os.environ | {"SCOS_HOME": str(home)} | environment
    process = subprocess.Popen(
        [GR_SCOS, "run", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    banner = process.stdout.readline()
    if f"127.0.0.1:{port}" not in banner:
        process.kill()
        raise RuntimeError(f"gr-scos run did not start: {banner!r}")
    assert "created the user admin" in process.stdout.readline()
    token = process.stdout.readline().strip()
    running = RunningSensor(process, home, port, token, env)
    try:
        wait_until_answering(running.url, running.headers, process)
    except RuntimeError:
        running.stop()
        raise
    return running


def wait_until_answering(url: str, headers: dict[str, str], process: subprocess.Popen) -> None:
    """The banner comes once the port is open; the workers answer ``GET url/status``
    a few seconds later. RuntimeError if not within ANSWER_TIMEOUT or ``process`` ends."""
    deadline = time.monotonic() + ANSWER_TIMEOUT
    while True:
        try:
            if requests.get(f"{url}/status", headers=headers, timeout=5).ok:
                return
        except requests.RequestException:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            raise RuntimeError(f"{url} did not answer GET /status within {ANSWER_TIMEOUT:g} s")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def sensor(tmp_path_factory) -> Iterator[RunningSensor]:
    """A running sensor (simulated signal analyzer, SQLite) shared by a module's tests."""
    running = start_sensor(tmp_path_factory.mktemp("sensor-home"))
    try:
        yield running
    finally:
        running.stop()
