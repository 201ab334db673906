"""A whole sensor from one command (``gr-scos run``): the API under gunicorn, the
scheduler in this process and its runner processes, sharing ``SCOS_HOME``.

Start-up: first of all this process binds the API's listening socket itself, so that a
port another sensor or program holds is an error (exit status 2) before anything else
happens, and the API that answers there can only be ours. gunicorn serves on that socket
(``--bind fd://N``); the start-up banner is printed once the API answers HTTP. On the
first start it creates the user ``admin`` and prints its token. The scheduler starts
before the banner too: another sensor on the same ``SCOS_HOME`` is an error then, and
a database that is not up yet is waited for.

No process outlives this one, however it ends (SIGKILL included): the kernel kills
gunicorn's master when this process dies (``PR_SET_PDEATHSIG``); gunicorn's workers end
once they see their master gone (gunicorn checks every second, then lets requests in
flight finish for at most its graceful timeout); runner processes end themselves when
their scheduler is gone (``scheduler/runner.py``).

The scheduler gives up after ``SCOS_MAX_CONSECUTIVE_FAILURES`` failed tasks in a row,
as ``gr-scos scheduler`` does for systemd to restart it: here a new scheduler starts in
this process, after 5 s (doubled while they keep giving up, at most 5 min), and the API
stays up meanwhile.

The API may crash without the schedule stopping: when gunicorn exits while the sensor
runs, it is started again on the same socket (clients' connections wait in its backlog
meanwhile) after a pause of 1 s, doubled for each exit in the last minute (1, 2, 4, 8 s).
The fifth exit within a minute ends the sensor with status 1, for whatever supervises
it (Docker's restart policy, systemd) to start it afresh; the running task is then
stopped and recorded as failed.

SIGINT or SIGTERM stops everything: the running task is stopped and recorded as failed,
then the API.
"""

import collections
import errno
import ipaddress
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable

from sqlalchemy import func, select

from .lifeline import LIFELINE_ENV
from .scheduler.backoff import Backoff
from .scheduler.scheduler import TOO_MANY_FAILURES_STATUS, Scheduler, SchedulerBusyError
from .settings import Settings
from .storage import users
from .storage.database import Database
from .storage.models import User

logger = logging.getLogger(__name__)

API_START_TIMEOUT = 60.0
API_STOP_TIMEOUT = 15.0
API_PATH = "/api/v1/"
# gunicorn's default; gunicorn keeps the backlog of a socket that already listens.
LISTEN_BACKLOG = 2048
PROBE_SECONDS = 5.0  # to connect and send: the backlog takes the connection at once
PROBE_PAUSE_SECONDS = 0.1
# The restart rule of the module docstring.
FIRST_RESTART_DELAY = 1.0
RESTART_WINDOW_SECONDS = 60.0
RESTARTS_PER_WINDOW = 4
# A scheduler that gives up (SCOS_MAX_CONSECUTIVE_FAILURES) is replaced after this long,
# doubled while its successors give up too.
SCHEDULER_RESTART_DELAY = 5.0
SCHEDULER_RESTART_CAP = 300.0


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


def host_port(host: str, port: int) -> str:
    """``host:port``, with an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def listen(host: str, port: int) -> socket.socket:
    """A socket listening on ``host``:``port`` for the API; ServiceError naming the
    address when it cannot, and saying so when another program listens there."""
    where = host_port(host, port)
    try:
        family, kind, proto, _name, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as error:
        raise ServiceError(f"cannot listen on {where}: {error.strerror}") from None
    listener = socket.socket(family, kind, proto)
    try:
        # Connections of a previous run in TIME_WAIT must not keep the port. Never
        # SO_REUSEPORT: with it, another program could listen on the same port.
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
        listener.listen(LISTEN_BACKLOG)
    except OSError as error:
        listener.close()
        if error.errno == errno.EADDRINUSE:
            raise ServiceError(
                f"cannot listen on {where}: the address is in use "
                "(another sensor or program listens there)"
            ) from None
        raise ServiceError(f"cannot listen on {where}: {error.strerror}") from None
    return listener


class ApiServer:
    """gunicorn serving the sensor's API on ``listener`` (which this process keeps
    open): started by :meth:`start`, restarted by the module's rule when it exits
    unasked, stopped by :meth:`stop`. ``on_give_up`` is called (from another thread)
    when the rule gives up; :attr:`gave_up` tells afterwards."""

    def __init__(
        self, listener: socket.socket, environment: dict[str, str], on_give_up: Callable[[], None]
    ):
        self.listener = listener
        self.environment = environment
        self.on_give_up = on_give_up
        self.gave_up = False
        self._stopping = threading.Event()
        self._answered = threading.Event()  # the first gunicorn answered, or died first
        self._start_failure: str | None = None
        self._process: subprocess.Popen | None = None
        self._lock = threading.Lock()  # between starting a gunicorn and stop()
        self._exits: collections.deque[float] = collections.deque()
        host, port = listener.getsockname()[:2]
        # A wildcard address is probed on the loopback address of its family.
        if ipaddress.ip_address(host).is_unspecified:
            host = "::1" if listener.family == socket.AF_INET6 else "127.0.0.1"
        self._probe_address = (host, port)
        self._probe_request = (
            f"GET {API_PATH} HTTP/1.1\r\nHost: {host_port(host, port)}\r\nConnection: close\r\n\r\n"
        ).encode()
        # gunicorn is started and watched from this thread, and only from it: the kernel
        # signals a child when the *thread* that forked it ends.
        self._thread = threading.Thread(target=self._supervise, name="api", daemon=True)

    def start(self) -> None:
        """Start gunicorn (and return)."""
        self._thread.start()

    def wait_answering(self) -> None:
        """Return once the API answers HTTP; ServiceError if gunicorn exits first or the
        API does not answer within ``API_START_TIMEOUT``."""
        if not self._answered.wait(API_START_TIMEOUT):
            where = host_port(*self._probe_address)
            raise ServiceError(f"the API did not answer on {where} within {API_START_TIMEOUT:g} s")
        if self._start_failure is not None:
            raise ServiceError(self._start_failure)

    def stop(self) -> None:
        """Stop gunicorn (SIGTERM, then SIGKILL after ``API_STOP_TIMEOUT``) for good."""
        with self._lock:
            self._stopping.set()
            process = self._process
        if process is None:
            return
        process.terminate()
        self._thread.join(API_STOP_TIMEOUT)
        if self._thread.is_alive():
            process.kill()
            self._thread.join()

    def _supervise(self) -> None:
        try:
            self._keep_serving()
        except Exception as error:
            # gunicorn dies with this thread (its parent-death signal): the sensor ends.
            logger.exception("the API's supervisor failed; stopping the sensor")
            if not self._answered.is_set():
                self._start_failure = f"the API (gunicorn) could not be started: {error}"
                self._answered.set()
            self.gave_up = True
            self.on_give_up()

    def _keep_serving(self) -> None:
        while True:
            with self._lock:
                if self._stopping.is_set():
                    return
                process = self._spawn()
            answered = self._wait_answering(process)
            status = process.wait()
            if self._stopping.is_set():
                return
            if not self._answered.is_set():
                self._start_failure = f"the API (gunicorn) exited with status {status}"
                self._answered.set()
                return
            delay = self._restart_delay()
            if delay is None:
                logger.error(
                    "the API (gunicorn) exited with status %s, %d times within a minute; "
                    "stopping the sensor",
                    status,
                    len(self._exits),
                )
                self.gave_up = True
                self.on_give_up()
                return
            logger.error(
                "the API (gunicorn, pid %d) exited with status %s%s; restarting it in %g s",
                process.pid,
                status,
                "" if answered else " before it answered",
                delay,
            )
            if self._stopping.wait(delay):
                return

    def _spawn(self) -> subprocess.Popen:
        fd = self.listener.fileno()
        self._process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "-c",
                "python:grscos.gunicorn_conf",
                "-b",
                f"fd://{fd}",
                "grscos.webapi.wsgi:app",
            ],
            # gunicorn's master dies with this process (lifeline.py).
            env=self.environment | {LIFELINE_ENV: str(os.getpid())},
            pass_fds=(fd,),
            # Its access log goes with the other logs, so that this process's standard
            # output holds the banner and the admin token alone.
            stdout=sys.stderr,
            # Signals from the terminal (Ctrl-C) reach this process only, which stops
            # gunicorn itself: an API ended by them would look crashed and be restarted.
            process_group=0,
        )
        return self._process

    def _wait_answering(self, process: subprocess.Popen) -> bool:
        """Probe the API until it answers HTTP (True), or gunicorn exits or is being
        stopped (False)."""
        while process.poll() is None and not self._stopping.is_set():
            if self._probe(process):
                if self._answered.is_set():
                    logger.info("the API (gunicorn, pid %d) answers again", process.pid)
                self._answered.set()
                return True
            time.sleep(PROBE_PAUSE_SECONDS)
        return False

    def _probe(self, process: subprocess.Popen) -> bool:
        """One request to the API: True once it is answered (any status: only our
        gunicorn can answer on our socket), False if its connection ends unanswered.
        The connection waits in the socket's backlog until gunicorn accepts it,
        meanwhile gunicorn is watched. The answer is read to its end (gunicorn closes
        the connection), by when gunicorn has logged the request: the banner that
        follows is not cut by that line."""
        answer = b""
        try:
            with socket.create_connection(self._probe_address, timeout=PROBE_SECONDS) as probe:
                probe.sendall(self._probe_request)
                probe.settimeout(PROBE_PAUSE_SECONDS)
                while process.poll() is None and not self._stopping.is_set():
                    try:
                        chunk = probe.recv(4096)
                    except TimeoutError:
                        continue
                    if not chunk:
                        break
                    answer += chunk
        except OSError:
            pass
        return answer.startswith(b"HTTP/")

    def _restart_delay(self) -> float | None:
        """Seconds to wait before the next start after an exit now; None to give up."""
        now = time.monotonic()
        self._exits.append(now)
        while self._exits[0] < now - RESTART_WINDOW_SECONDS:
            self._exits.popleft()
        if len(self._exits) > RESTARTS_PER_WINDOW:
            return None
        return FIRST_RESTART_DELAY * 2 ** (len(self._exits) - 1)


class _Schedulers:
    """The sensor's scheduler, replaced by a new one (in this process, the API staying
    up) each time it gives up with ``TOO_MANY_FAILURES_STATUS``, as systemd restarts
    ``gr-scos scheduler``: after SCHEDULER_RESTART_DELAY seconds, doubled while it keeps
    giving up, at most SCHEDULER_RESTART_CAP."""

    def __init__(self, settings: Settings, device: str | None):
        self.settings, self.device = settings, device
        self.stopping = threading.Event()
        self.current = Scheduler(settings, device)
        self.backoff = Backoff(SCHEDULER_RESTART_DELAY, SCHEDULER_RESTART_CAP)

    def shutdown(self) -> None:
        """Stop for good (a signal, the API given up). Safe in a signal handler."""
        self.stopping.set()
        self.current.shutdown()

    def serve(self) -> int:
        """Serve with the current scheduler (started already), and its successors;
        the last one's exit status."""
        restarts = 0
        while True:
            status = self.current.serve_forever()
            if self.stopping.is_set():
                return 0  # asked to stop, whatever the scheduler was about to do
            if status != TOO_MANY_FAILURES_STATUS:
                return status
            restarts += 1
            delay = self.backoff.delay(restarts)
            logger.error("the scheduler gave up; a new one starts in %g s", delay)
            if self.stopping.wait(delay):
                return 0
            self.current = Scheduler(self.settings, self.device)
            if self.stopping.is_set():  # a signal between the wait and the assignment
                return 0


def run_sensor(settings: Settings, host: str, port: int, device: str | None = None) -> int:
    """Run the sensor until SIGINT or SIGTERM; 0 after a clean stop, 1 if the API kept
    dying. ServiceError if it cannot start (the port is taken, the API does not come
    up, another sensor runs on ``SCOS_HOME``)."""
    listener = listen(host, port)
    try:
        settings.home.mkdir(parents=True, exist_ok=True)
        schedulers = _Schedulers(settings, device)
        scheduler = schedulers.current
        environment = os.environ | {
            "SCOS_HOME": str(settings.home),
            "SCOS_DATABASE_URL": settings.database_url,
            "SCOS_DATA_DIR": str(settings.data_dir),
        }
        api = ApiServer(listener, environment, on_give_up=schedulers.shutdown)
        for number in (signal.SIGINT, signal.SIGTERM):
            signal.signal(number, lambda *_: schedulers.shutdown())
        try:
            api.start()  # gunicorn boots while the scheduler starts
            try:
                # It takes SCOS_HOME's lock (another sensor there is refused before
                # any banner) and waits for a database that is not up yet.
                scheduler.start()
            except SchedulerBusyError as error:
                raise ServiceError(str(error)) from None
            if scheduler.stopping.is_set():
                return scheduler.serve_forever()  # stopped while starting: cleans up
            token = first_admin(settings)
            api.wait_answering()
            url = f"http://{host_port(host, listener.getsockname()[1])}{API_PATH}"
            print(f"gr-scos sensor: API {url} (Swagger UI {url}docs), state in {settings.home}")
            if token is not None:
                print("created the user admin; its API token (shown once):")
                print(token)
            sys.stdout.flush()
            status = schedulers.serve()
        finally:
            api.stop()
    finally:
        listener.close()
    return 1 if api.gave_up else status
