"""A whole sensor from one command (``gr-scos run``): the API under gunicorn, the
scheduler in this process and its runner processes, sharing ``SCOS_HOME``.

On the first start it creates the user ``admin`` and prints its token. SIGINT or
SIGTERM stops everything: the running task is stopped and recorded as failed,
then the API.
"""

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time

from sqlalchemy import func, select

from .scheduler.scheduler import Scheduler
from .settings import Settings
from .storage import users
from .storage.database import Database
from .storage.models import User

logger = logging.getLogger(__name__)

API_START_TIMEOUT = 60.0
API_STOP_TIMEOUT = 15.0


class ServiceError(RuntimeError):
    """The sensor could not start; the message says why."""


def first_admin(settings: Settings) -> str | None:
    """Create the user ``admin`` when there is no user yet; its token, else None."""
    database = Database(settings.database_url, settings.data_dir)
    try:
        database.upgrade()
        with database.session() as db:
            if db.scalar(select(func.count()).select_from(User)):
                return None
            _user, token = users.create_user(db, "admin", is_admin=True)
            return token
    finally:
        database.dispose()


def _wait_for_port(host: str, port: int, api: subprocess.Popen) -> None:
    deadline = time.monotonic() + API_START_TIMEOUT
    while time.monotonic() < deadline:
        if api.poll() is not None:
            raise ServiceError(f"the API (gunicorn) exited with status {api.returncode}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise ServiceError(f"the API did not answer on {host}:{port} within {API_START_TIMEOUT:g} s")


def run_sensor(settings: Settings, host: str, port: int, device: str | None = None) -> int:
    """Run the sensor until SIGINT or SIGTERM; 0 after a clean stop, 1 if the API died,
    the scheduler's status if it gave up after too many failures in a row."""
    settings.home.mkdir(parents=True, exist_ok=True)
    token = first_admin(settings)
    scheduler = Scheduler(settings, device)
    environment = os.environ | {
        "SCOS_HOME": str(settings.home),
        "SCOS_DATABASE_URL": settings.database_url,
        "SCOS_DATA_DIR": str(settings.data_dir),
    }
    api = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            "python:grscos.gunicorn_conf",
            "-b",
            f"{host}:{port}",
            "grscos.webapi.wsgi:app",
        ],
        env=environment,
    )
    api_died = threading.Event()

    def watch_api() -> None:
        api.wait()
        if not scheduler.stopping.is_set():
            logger.error("the API (gunicorn) exited with status %s; stopping", api.returncode)
            api_died.set()
            scheduler.shutdown()

    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, lambda *_: scheduler.shutdown())
    try:
        _wait_for_port(host, port, api)
        threading.Thread(target=watch_api, daemon=True).start()
        url = f"http://{host}:{port}/api/v1/"
        print(f"gr-scos sensor: API {url} (Swagger UI {url}docs), state in {settings.home}")
        if token is not None:
            print("created the user admin; its API token (shown once):")
            print(token)
        sys.stdout.flush()
        status = scheduler.serve_forever()
    finally:
        if api.poll() is None:
            api.terminate()
            try:
                api.wait(API_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                api.kill()
                api.wait()
    return 1 if api_died.is_set() else status
