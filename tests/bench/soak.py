"""Soak and fault benchmark: a real sensor at one task per second for hours, faults
injected at random times, and an account of everything it should not have lost.

``make soak`` (``make soak N=200`` or ``SOAK_TASKS=200`` for a short run;
``SOAK_ARGS="--seed 7 --fault-every 20"`` passes options) runs, as root:

* a throwaway PostgreSQL server (``tests/pg_server.py``), which faults restart and stop;
* the data directory on a tmpfs of its own (``--data-size``, 512 MiB; past about 380
  recordings the disk quota keeps it at 85 %, as on a sensor that has run for months),
  which faults remount read-only and fill from outside;
* ``gr-scos run`` from the venv, with ``SCOS_HOME`` in a temporary directory, on a free
  port, supervised as systemd would: any exit the soak did not cause is unplanned (its
  status and log tail are kept), and an exited sensor is restarted ``--restart-delay``
  seconds later;
* one schedule entry made through the API: ``acquire_iq`` every second, ``N`` task
  times (``relative_stop``), by a user made with ``gr-scos users add`` beforehand.

Faults come one at a time, ``--fault-every`` seconds apart on average, each kind once
per round in shuffled order (``--faults`` picks kinds), one function each below:
runner SIGKILL and SIGSTOP (of the busy runner or a spare), database restart and a
longer outage, read-only data filesystem, data filesystem filled from outside,
``gr-scos run`` SIGKILL. The plan comes from a seeded generator: the seed is printed,
and ``--seed`` repeats the same kinds, gaps and durations. Between faults the soak
never helps the sensor: it only restarts a ``gr-scos run`` that exited and undoes the
faults it injected.

Every ``--sample-every`` seconds it reads RSS, open fds and threads of every process of
the sensor from ``/proc`` and polls ``GET /status`` as a monitoring client would.
After the last task time it waits for the last task, stops the sensor with SIGTERM and
reports in Markdown (``soak_report.py``; ``soak_analysis.py`` says how each figure is
counted): faults, process exits, tasks expected, collapsed, lost, duplicated and left
in progress, failures by detail with the faults that explain them, what ``/status``
showed, trends per process with slopes per task after a warm-up, start lateness, the
peak RSS of the process tree, and the issue's targets; it exits 1 when one is missed.
Task times (``scheduled``) and recording paths come from the database: the API's task
list does not show them. The timeline, samples and results go to ``soak.json`` in
``--out`` (default ``var/soak/<UTC time>/``) beside each ``gr-scos run``'s log;
``--reanalyse soak.json`` reports a saved run again, to compare runs.

A benchmark, never collected as a test. Ctrl-C (or SIGTERM) stops the faults and still
reports; whatever happens, the fault under way is undone, the sensor's processes are
killed, the tmpfs unmounted and PostgreSQL stopped.
"""

import argparse
import contextlib
import datetime
import errno
import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import requests
import soak_analysis as analysis
from soak_report import analyse, last_error, print_report
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session, selectinload

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # for tests.pg_server, when run as a script

from grscos.storage.models import (  # noqa: E402
    Acquisition,
    MetricCounter,
    ScheduleEntry,
    TaskResult,
    format_utc,
)
from tests.pg_server import PostgresServer, free_port  # noqa: E402

GR_SCOS = REPO / ".venv" / "bin" / "gr-scos"
ACTION = "acquire_iq"
ENTRY_NAME = "soak"  # its schedule_id too
INTERVAL_S = 1
FIRST_TASK_DELAY_S = 10  # from making the entry to its first task time
BANNER = "gr-scos sensor: API"  # gr-scos run prints it once its API answers
READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 60.0
END_GRACE_S = 60.0  # after the last task time, for the last task to be recorded
SUPERVISE_EVERY_S = 0.5
HTTP_TIMEOUT_S = 5.0  # a monitoring client's patience
SETUP_TIMEOUT_S = 60.0  # making the entry: a worker's first request may be slow
ORPHAN_GRACE_S = 3.0  # after killing gr-scos run, its children should be gone by then
ORPHAN_WATCH_S = 60.0  # how long the soak watches orphans that outlive the grace
RUNNER_HEARTBEAT_TIMEOUT_S = 10.0  # scheduler/supervisor.py HEARTBEAT_TIMEOUT
STOPPED_RUNNER_WAIT_S = RUNNER_HEARTBEAT_TIMEOUT_S + 20.0
RUNNER_WAIT_S = 60.0  # for a runner to hit, while gr-scos run restarts
BUSY_OFFSET_S = 0.05  # after a task time: its flowgraph runs
SPARE_OFFSET_S = 0.5  # after a task time: between two tasks
REMOUNT_TRIES_S = 10.0  # a file open for writing makes remount,ro fail with EBUSY
LOG_TAIL_LINES = 15
WARMUP_TASKS = 100  # a process's first tasks fill its caches: not counted in slopes
ACCESS_LOG = re.compile(r'"(GET|POST|PUT|PATCH|DELETE) /')  # gunicorn's access log lines
MiB = 1 << 20
# Seconds a fault lasts, drawn uniformly; the others are instantaneous.
DURATIONS_S = {"db-outage": (5.0, 20.0), "data-readonly": (5.0, 15.0), "disk-full": (5.0, 15.0)}
# How long each fault lasts when the sensor copes, to start none near the end that
# would not end (and be recovered from) before the last task time.
EXPECTED_S = {kind: longest for kind, (_, longest) in DURATIONS_S.items()} | {
    "runner-kill": 1.0,
    "runner-stop": RUNNER_HEARTBEAT_TIMEOUT_S,
    "db-restart": 1.0,
    "sensor-kill": ORPHAN_GRACE_S,
}
# A runner fault hits the runner of the task under way, or a spare waiting for a later one.
RUNNER_TARGETS = ("busy", "spare")

# The sensor's processes, by what they do.
SCHEDULER, API_MASTER, API_WORKER, RUNNER = analysis.ROLES
ROLES = set(analysis.ROLES)

_print_lock = threading.Lock()
_began = time.time()


def say(message: str) -> None:
    """A progress line, prefixed with the seconds since the soak began."""
    with _print_lock:
        print(f"[{time.time() - _began:7.1f} s] {message}", flush=True)


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> list[str]:
    """The last ``lines`` lines of a log, without the API's access log lines."""
    try:
        text = path.read_text(errors="replace")
    except OSError as error:
        return [f"(no log: {error})"]
    return [line for line in text.splitlines() if not ACCESS_LOG.search(line)][-lines:]


# -- the sensor's processes ------------------------------------------------------------


@dataclass(frozen=True)
class Process:
    pid: int
    ppid: int
    start: int  # clock ticks after boot: with the pid, identifies the process
    state: str
    cmdline: str


def read_process(pid: int) -> Process | None:
    """``/proc/PID/stat`` and ``cmdline``; None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # the command name may hold spaces
    return Process(
        pid, int(fields[1]), int(fields[19]), fields[0], cmdline.replace(b"\0", b" ").decode()
    )


def measure(pid: int) -> dict | None:
    """RSS and peak RSS (kB), threads and open fds of a process; None when it is gone."""
    try:
        status = dict(
            line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        )
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except (OSError, ValueError):
        return None
    if "VmRSS" not in status:  # exiting: its memory is already gone
        return None
    return {
        "rss_kb": int(status["VmRSS"].split()[0]),
        "hwm_kb": int(status["VmHWM"].split()[0]),
        "threads": int(status["Threads"]),
        "fds": fds,
    }


class ProcessTree:
    """The sensor's processes: the descendants of every ``gr-scos run`` the soak
    started, and those of a killed one that outlived it (orphans, re-parented out of
    reach of a plain tree walk, so they are remembered from earlier scans)."""

    def __init__(self) -> None:
        self._known: dict[int, tuple[int, int]] = {}  # pid -> (start, instance)
        # (pid, start) -> role, as first seen: an orphaned worker's parent is no longer
        # its gunicorn master.
        self._roles: dict[tuple[int, int], str] = {}
        self._lock = threading.Lock()

    def scan(self, sensors: dict[int, int]) -> list[dict]:
        """Every live process of the sensor with its role, instance (which ``gr-scos
        run``) and whether it is an orphan. ``sensors``: live gr-scos run pid ->
        instance."""
        processes = {}
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                process = read_process(int(entry.name))
                if process is not None and process.state != "Z":
                    processes[process.pid] = process
        children: dict[int, list[int]] = {}
        for process in processes.values():
            children.setdefault(process.ppid, []).append(process.pid)
        with self._lock:
            found: dict[int, dict] = {}

            def walk(pid: int, instance: int, orphan: bool) -> None:
                stack = [pid]
                while stack:
                    current = stack.pop()
                    if current in found or current not in processes:
                        continue
                    found[current] = {"instance": instance, "orphan": orphan}
                    stack.extend(children.get(current, []))

            for pid, instance in sensors.items():
                walk(pid, instance, orphan=False)
            for pid, (start, instance) in self._known.items():
                if pid in processes and processes[pid].start == start:
                    walk(pid, instance, orphan=True)
            self._known = {pid: (processes[pid].start, f["instance"]) for pid, f in found.items()}
            listed, roles = [], {}
            for pid, facts in found.items():
                key = (pid, processes[pid].start)
                role = self._roles.get(key) or self._role(processes, pid, sensors)
                if role in ROLES:  # not a child caught between fork and exec
                    roles[key] = role
                listed.append({"pid": pid, "start": key[1], "role": role, **facts})
            self._roles = roles
            return listed

    @staticmethod
    def _role(processes: dict[int, Process], pid: int, sensors: dict[int, int]) -> str:
        process = processes[pid]
        if pid in sensors:
            return SCHEDULER
        if "grscos.scheduler.runner" in process.cmdline:
            return RUNNER
        if "gunicorn" in process.cmdline:
            parent = processes.get(process.ppid)
            return API_WORKER if parent and "gunicorn" in parent.cmdline else API_MASTER
        return process.cmdline.split(" ")[0] or "?"


# -- the data filesystem ---------------------------------------------------------------


class DataFilesystem:
    """A tmpfs mounted for the soak alone, so that it can be made read-only and full
    without touching anything else. The sensor's data directory is ``data/`` in it; the
    filler file sits beside that, not the sensor's."""

    def __init__(self, mount_point: Path, size_bytes: int):
        self.mount_point = mount_point
        self.data_dir = mount_point / "data"
        self.filler = mount_point / "not-the-sensors.bin"
        self.size_bytes = size_bytes
        self.mounted = False

    def mount(self) -> None:
        self.mount_point.mkdir(parents=True)
        size = f"size={self.size_bytes // MiB}m"
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", size, "tmpfs", str(self.mount_point)], check=True
        )
        self.mounted = True
        self.data_dir.mkdir()

    def _remount(self, mode: str) -> int:
        """Remount ``ro`` or ``rw``, retrying while busy; how many tries it took."""
        deadline = time.monotonic() + REMOUNT_TRIES_S
        tries = 0
        while True:
            tries += 1
            done = subprocess.run(
                ["mount", "-o", f"remount,{mode}", str(self.mount_point)],
                capture_output=True,
                text=True,
            )
            if done.returncode == 0:
                return tries
            if time.monotonic() > deadline:
                raise RuntimeError(f"remount,{mode} failed {tries} times: {done.stderr.strip()}")
            time.sleep(0.05)

    def read_only(self) -> int:
        return self._remount("ro")

    def read_write(self) -> int:
        return self._remount("rw")

    def fill(self) -> int:
        """Write the filler until the filesystem is full; its size in bytes."""
        chunk = b"\0" * MiB
        written = 0
        with open(self.filler, "wb", buffering=0) as filler:
            for size in (MiB, 4096):
                try:
                    while True:
                        written += filler.write(chunk[:size])
                except OSError as error:
                    if error.errno != errno.ENOSPC:
                        raise
        return written

    def unfill(self) -> None:
        self.filler.unlink(missing_ok=True)

    def recordings(self) -> int:
        """How many recordings (data files) the data directory holds."""
        return sum(1 for _ in self.data_dir.rglob("*.sigmf-data"))

    def usage_percent(self) -> float:
        usage = shutil.disk_usage(self.mount_point)
        return 100.0 * usage.used / usage.total

    def unmount(self) -> None:
        """Unmount (lazily if something still holds it) and remove the mount point."""
        if self.mounted:
            for _ in range(20):
                if subprocess.run(["umount", str(self.mount_point)], check=False).returncode == 0:
                    break
                time.sleep(0.25)
            else:
                subprocess.run(["umount", "-l", str(self.mount_point)], check=False)
            self.mounted = False
        with contextlib.suppress(OSError):
            self.mount_point.rmdir()


# -- gr-scos run, supervised -----------------------------------------------------------


class Sensor:
    """``gr-scos run`` supervised as systemd's ``Restart=`` would: whenever it has
    exited (unless the soak is stopping it) it is started again ``restart_delay``
    seconds later. Exits the soak caused (:meth:`kill`) are planned; any other is
    unplanned. Each instance logs to ``sensor-<n>.log`` in ``log_dir``."""

    def __init__(
        self,
        environment: dict,
        port: int,
        log_dir: Path,
        timeline: list[dict],
        restart_delay: float,
    ):
        self.environment = environment
        self.port = port
        self.log_dir = log_dir
        self.timeline = timeline
        self.restart_delay = restart_delay
        self.process: subprocess.Popen | None = None
        self.instance = 0
        self.ready = False
        self.stopping = False
        self.pids: dict[int, int] = {}  # every gr-scos run started: pid -> instance
        self._killed: dict[int, float] = {}  # pid -> when the soak killed it
        self._exit_seen = True
        self._restart_at = 0.0
        self._lock = threading.RLock()

    @property
    def log(self) -> Path:
        return self.log_dir / f"sensor-{self.instance}.log"

    def live(self) -> dict[int, int]:
        """The running gr-scos run's pid -> instance (empty when none runs)."""
        with self._lock:
            if self.process is not None and self.process.poll() is None:
                return {self.process.pid: self.instance}
            return {}

    def _launch(self) -> None:
        self.instance += 1
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [str(GR_SCOS), "run", "--host", "127.0.0.1", "--port", str(self.port)],
                env=self.environment,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the soak, which stops it cleanly
            )
        self.pids[self.process.pid] = self.instance
        self.ready, self._exit_seen = False, False
        self._event("launch")

    def _event(self, kind: str, **facts) -> dict:
        """Add an event of the current instance to the timeline (now, unless
        ``time`` is given)."""
        event = {"type": kind, "time": time.time(), "instance": self.instance}
        if self.process is not None:
            event["pid"] = self.process.pid
        self.timeline.append(event | facts)
        return event | facts

    def supervise(self) -> None:
        """One look, as systemd takes: notice readiness and exits, restart when due."""
        with self._lock:
            now = time.time()
            process = self.process
            if process is not None and process.poll() is None:
                if not self.ready and BANNER in self.log.read_text(errors="replace"):
                    self.ready = True
                    self._event("ready")
                    say(f"gr-scos run #{self.instance} (pid {process.pid}) is ready")
                return
            if self.stopping:
                return
            self._notice_exit(now)
            if now >= self._restart_at:
                self._launch()
                say(f"started gr-scos run #{self.instance} (pid {self.process.pid})")

    def _notice_exit(self, now: float) -> None:
        """Record the exit of the current instance, once; restart it after the delay."""
        process = self.process
        if process is None or self._exit_seen:
            return
        self._exit_seen = True
        planned = process.pid in self._killed
        exit_event = self._event(
            "exit",
            time=self._killed.get(process.pid, now),
            status=process.returncode,
            planned=planned,
            log_tail=[] if planned else tail(self.log),
        )
        self._restart_at = now + self.restart_delay
        if not planned:
            say(
                f"UNPLANNED EXIT of gr-scos run #{self.instance} (pid {process.pid}) "
                f"with status {process.returncode}: {last_error(exit_event['log_tail'])}"
            )

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Until the current instance is ready; RuntimeError with its log if it exits
        first (at start-up that is a broken set-up, not a fault)."""
        deadline = time.monotonic() + timeout
        while not self.ready:
            with self._lock:
                if self.process is not None and self.process.poll() is not None:
                    log = "\n".join(tail(self.log, 40))
                    raise RuntimeError(f"gr-scos run exited at start-up:\n{log}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"gr-scos run was not ready after {timeout:g} s")
            time.sleep(0.2)

    def kill(self) -> int | None:
        """SIGKILL the running gr-scos run (a planned exit); its pid, or None."""
        with self._lock:
            if self.process is None or self.process.poll() is not None:
                return None
            self._killed[self.process.pid] = time.time()
            os.kill(self.process.pid, signal.SIGKILL)
            return self.process.pid

    def stop(self) -> dict:
        """The clean stop: SIGTERM, then wait; SIGKILL after ``STOP_TIMEOUT_S``."""
        with self._lock:
            self.stopping = True
            process = self.process
            if process is not None and process.poll() is not None:
                self._notice_exit(time.time())
        if process is None or process.poll() is not None:
            return {"status": None, "seconds": 0.0, "note": "gr-scos run was not running"}
        began = time.monotonic()
        process.send_signal(signal.SIGTERM)
        try:
            status = process.wait(STOP_TIMEOUT_S)
            note = ""
        except subprocess.TimeoutExpired:
            process.kill()
            status = process.wait()
            note = f"did not stop within {STOP_TIMEOUT_S:g} s of SIGTERM; killed"
        stop = {"status": status, "seconds": time.monotonic() - began, "note": note}
        self._event("stop", **stop)
        return stop


# -- the API as a client sees it -------------------------------------------------------


class Api:
    """The sensor's HTTP API with the soak user's token."""

    def __init__(self, port: int, token: str):
        self.base = f"http://127.0.0.1:{port}/api/v1"
        self.headers = {"Authorization": f"Token {token}"}

    def create_entry(self, start: datetime.datetime, count: int) -> dict:
        answer = requests.post(
            f"{self.base}/schedule",
            json={
                "name": ENTRY_NAME,
                "action": ACTION,
                "start": format_utc(start),
                "interval": INTERVAL_S,
                "relative_stop": count * INTERVAL_S,
            },
            headers=self.headers,
            timeout=SETUP_TIMEOUT_S,
        )
        if answer.status_code != 201:
            raise RuntimeError(f"POST /schedule: {answer.status_code} {answer.text}")
        return answer.json()

    def status(self) -> dict:
        """One ``GET /status`` poll, never raising."""
        try:
            answer = requests.get(
                f"{self.base}/status", headers=self.headers, timeout=HTTP_TIMEOUT_S
            )
        except requests.RequestException as error:
            return {"ok": False, "error": type(error).__name__}
        if answer.status_code != 200:
            return {"ok": False, "error": f"HTTP {answer.status_code}: {answer.text[:200]}"}
        body = answer.json()
        return {
            "ok": True,
            "healthy": body["healthy"],
            "scheduler": body["scheduler"],
            "problems": body["problems"],
        }

    def task_count(self) -> int | None:
        """How many tasks the entry's task list shows (None if it does not answer)."""
        try:
            answer = requests.get(
                f"{self.base}/schedule/{ENTRY_NAME}/tasks?limit=1",
                headers=self.headers,
                timeout=HTTP_TIMEOUT_S,
            )
            return answer.json()["count"] if answer.status_code == 200 else None
        except requests.RequestException:
            return None


# -- the soak: what faults act on ------------------------------------------------------


@dataclass
class Soak:
    """What the faults act on."""

    arguments: argparse.Namespace
    postgres: PostgresServer
    datafs: DataFilesystem
    sensor: Sensor
    tree: ProcessTree
    api: Api | None = None
    first_task: float = 0.0  # the entry's first task time

    def processes(self) -> list[dict]:
        return self.tree.scan(self.sensor.live())

    def runner(self, target: str) -> dict | None:
        """A runner of the running ``gr-scos run``. ``busy``: the one running the task
        of this second: task times are whole seconds and a flowgraph runs for about
        0.2 s, so 50 ms after one, the runner with the most threads (GNU Radio runs a
        thread per block). ``spare``: the youngest runner, at mid-second, which waits
        for a later task. Waits up to ``RUNNER_WAIT_S`` for runners (the sensor may be
        restarting)."""
        offset = BUSY_OFFSET_S if target == "busy" else SPARE_OFFSET_S
        deadline = time.monotonic() + RUNNER_WAIT_S
        while time.monotonic() < deadline:
            now = time.time()
            time.sleep(math.floor(now) + 1 + offset - now)
            runners = [p for p in self.processes() if p["role"] == RUNNER and not p["orphan"]]
            for runner in runners:
                runner["threads"] = (measure(runner["pid"]) or {}).get("threads", 0)
            if runners and target == "busy":
                return max(runners, key=lambda p: p["threads"])
            if runners:
                return max(runners, key=lambda p: p["start"])
        return None


class Monitor(threading.Thread):
    """systemd and a monitoring client in one: supervises ``gr-scos run`` every
    half second, and every ``sample_every`` seconds samples the sensor's processes
    and polls ``/status``."""

    def __init__(self, soak: Soak, sample_every: float):
        super().__init__(name="monitor", daemon=True)
        self.soak = soak
        self.sample_every = sample_every
        self.samples: list[dict] = []
        self.errors: list[str] = []
        self._stopping = threading.Event()

    def run(self) -> None:
        next_sample = 0.0
        while not self._stopping.is_set():
            # The soak's own bug must not leave the sensor unsupervised: say it, go on.
            try:
                self.soak.sensor.supervise()
                # From the entry's creation on: the first start-up is not sampled.
                if self.soak.api is not None and time.monotonic() >= next_sample:
                    next_sample = time.monotonic() + self.sample_every
                    self.samples.append(self.sample())
            except Exception as error:
                self.errors.append(f"{type(error).__name__}: {error}")
                say(f"SOAK BUG in the monitor: {traceback.format_exc()}")
            self._stopping.wait(SUPERVISE_EVERY_S)

    def sample(self) -> dict:
        moment = time.time()
        processes = []
        for process in self.soak.processes():
            facts = measure(process["pid"])
            if facts is not None:
                processes.append(process | facts)
        return {
            "time": moment,
            "processes": processes,
            "status": self.soak.api.status(),
            "load": os.getloadavg()[0],  # the machine is shared: say how busy it was
        }

    def stop(self) -> None:
        self._stopping.set()
        self.join(30)


# -- the faults: one function each, returning what it did ------------------------------


def fault_runner_kill(soak: Soak, rng: random.Random) -> dict:
    """SIGKILL a runner, as a segfault or the OOM killer would: the busy one (its task
    must fail naming the signal) or a spare (the task handed to it must get a live
    runner instead)."""
    target = rng.choice(RUNNER_TARGETS)
    runner = soak.runner(target)
    if runner is None:
        return {"target": target, "skipped": "no runner"}
    os.kill(runner["pid"], signal.SIGKILL)
    return {"target": target, "pid": runner["pid"], "threads": runner["threads"]}


def fault_runner_stop(soak: Soak, rng: random.Random) -> dict:
    """SIGSTOP a runner: a flowgraph or driver that hangs. A busy one must be killed
    after the heartbeat timeout, failing only its task; a frozen spare must be noticed
    at hand-over. The soak never continues it: it waits to see whether the sensor
    gets rid of it."""
    target = rng.choice(RUNNER_TARGETS)
    runner = soak.runner(target)
    if runner is None:
        return {"target": target, "skipped": "no runner"}
    os.kill(runner["pid"], signal.SIGSTOP)
    stopped = time.monotonic()
    done = {"target": target, "pid": runner["pid"], "threads": runner["threads"]}
    while time.monotonic() - stopped < STOPPED_RUNNER_WAIT_S:
        process = read_process(runner["pid"])
        if process is None or process.start != runner["start"] or process.state == "Z":
            return done | {"gone_after_s": round(time.monotonic() - stopped, 1)}
        time.sleep(0.2)
    return done | {"still_stopped_after_s": STOPPED_RUNNER_WAIT_S}


def fault_db_restart(soak: Soak, rng: random.Random) -> dict:
    """``pg_ctl -m fast restart``: every connection is cut and the server is back a
    moment later. The scheduler must ride through it, with the running task's result
    written once the database is back."""
    began = time.monotonic()
    soak.postgres.restart()
    return {"down_s": round(time.monotonic() - began, 1)}


def fault_db_outage(soak: Soak, rng: random.Random) -> dict:
    """The database stopped for a while (``pg_ctl -m fast stop``, later started on
    the same port): a longer outage or a failover."""
    seconds = draw_duration(rng, "db-outage")
    soak.postgres.halt()
    try:
        time.sleep(seconds)
    finally:
        soak.postgres.resume()
    return {"seconds": seconds}


def fault_data_readonly(soak: Soak, rng: random.Random) -> dict:
    """The data filesystem remounted read-only for a while (a failing SD card, an
    fsck remount). Tasks must fail naming the directory and the error, the API stay
    up, and tasks succeed again once it is writable."""
    seconds = draw_duration(rng, "data-readonly")
    tries = soak.datafs.read_only()
    try:
        time.sleep(seconds)
    finally:
        soak.datafs.read_write()
    return {"seconds": seconds, "remount_tries": tries}


def fault_disk_full(soak: Soak, rng: random.Random) -> dict:
    """The data filesystem filled for a while by a file that is not the sensor's. The
    quota must not delete recordings that cannot make room; tasks fail saying how
    much of the disk is not the sensor's."""
    seconds = draw_duration(rng, "disk-full")
    before = {
        "usage_before_percent": round(soak.datafs.usage_percent(), 1),
        "recordings_before": soak.datafs.recordings(),
    }
    written = soak.datafs.fill()
    try:
        time.sleep(seconds)
    finally:
        soak.datafs.unfill()
    return before | {
        "seconds": seconds,
        "filler_mib": written // MiB,
        "recordings_after": soak.datafs.recordings(),
    }


def fault_sensor_kill(soak: Soak, rng: random.Random) -> dict:
    """SIGKILL ``gr-scos run`` (the OOM killer, an operator's ``kill -9``); the
    monitor restarts it as systemd would. Its children must die with it: those still
    alive ``ORPHAN_GRACE_S`` later are listed, and how long the last of them lived."""
    pid = soak.sensor.kill()
    if pid is None:
        return {"skipped": "gr-scos run was not running"}
    killed = time.monotonic()
    instance = soak.sensor.pids[pid]

    def orphans() -> list[str]:
        return [
            f"{p['role']} {p['pid']}"
            for p in soak.processes()
            if p["orphan"] and p["instance"] == instance
        ]

    time.sleep(ORPHAN_GRACE_S)
    left = orphans()
    while orphans() and time.monotonic() - killed < ORPHAN_WATCH_S:
        time.sleep(0.5)
    lived = time.monotonic() - killed
    return {
        "pid": pid,
        "orphans_after_grace": left,
        "orphans_gone_after_s": round(lived, 1) if lived < ORPHAN_WATCH_S else None,
    }


def draw_duration(rng: random.Random, kind: str) -> float:
    return round(rng.uniform(*DURATIONS_S[kind]), 1)


FAULTS: dict[str, Callable[[Soak, random.Random], dict]] = {
    "runner-kill": fault_runner_kill,
    "runner-stop": fault_runner_stop,
    "db-restart": fault_db_restart,
    "db-outage": fault_db_outage,
    "data-readonly": fault_data_readonly,
    "disk-full": fault_disk_full,
    "sensor-kill": fault_sensor_kill,
}


def inject_faults(
    soak: Soak, kinds: list[str], rng: random.Random, until: float, timeline: list[dict]
) -> None:
    """The main loop: faults one at a time until ``until`` (no fault starts that would
    not end, plus its recovery, before it). Each kind once per round, shuffled; gaps of
    0.5 to 1.5 times ``--fault-every``. The monitor thread meanwhile restarts the
    sensor when it exits."""
    arguments = soak.arguments
    round_left: list[str] = []
    time.sleep(max(0.0, soak.first_task - time.time()))  # faults hit a running schedule
    while kinds:
        if not round_left:
            round_left = list(kinds)
            rng.shuffle(round_left)
        kind = round_left.pop()
        at = time.time() + arguments.fault_every * rng.uniform(0.5, 1.5)
        if at + EXPECTED_S[kind] + arguments.recovery > until:
            if at + min(EXPECTED_S[other] for other in kinds) + arguments.recovery > until:
                return
            continue  # too long for the time left: a shorter kind may still fit
        time.sleep(max(0.0, at - time.time()))
        say(f"fault {kind}" + ("" if soak.sensor.live() else " (gr-scos run is down now)"))
        start = time.time()
        details = {"interrupted": True}  # unless the fault returns: Ctrl-C
        try:
            details = FAULTS[kind](soak, rng)
        except Exception as error:  # a fault that could not be injected is reported
            details = {"error": f"{type(error).__name__}: {error}"}
        finally:
            fault = {"type": "fault", "kind": kind, "start": start, "end": time.time()}
            timeline.append(fault | {"details": details})
        say(f"  {kind} done: {json.dumps(details)}")


# -- set-up, collection, report --------------------------------------------------------


def sensor_environment(home: Path, database_url: str, data_dir: Path, port: int) -> dict:
    """The sensor's environment: no SCOS_* variable or settings file of the caller's."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SCOS_")}
    return environment | {
        "SCOS_SETTINGS_FILE": "",
        "SCOS_HOME": str(home),
        "SCOS_DATABASE_URL": database_url,
        "SCOS_DATA_DIR": str(data_dir),
        "SCOS_API_BIND": f"127.0.0.1:{port}",
        "SCOS_LOG_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
    }


def add_user(environment: dict) -> str:
    """``gr-scos users add soak --admin``; its token (the last line)."""
    done = subprocess.run(
        [str(GR_SCOS), "users", "add", "soak", "--admin"],
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip().splitlines()[-1]


def wait_entry_done(engine, deadline: float) -> bool:
    """Until the entry has taken its last task and nothing is in progress (or the
    deadline); whether it got there. Read from the database: the API may be down."""
    while time.time() < deadline:
        with contextlib.suppress(Exception), Session(engine) as db:
            entry = db.get(ScheduleEntry, ENTRY_NAME)
            running = db.scalar(
                select(func.count()).where(
                    TaskResult.schedule_entry_id == ENTRY_NAME, TaskResult.status == "in-progress"
                )
            )
            if entry is not None and not entry.is_active and not running:
                return True
        time.sleep(1.0)
    return False


def collect(engine, data_dir: Path) -> dict:
    """The entry, its results with their recordings checked on disk, the quota's
    deletions and the files on disk that no acquisition owns."""
    with Session(engine) as db:
        entry = db.get(ScheduleEntry, ENTRY_NAME)
        rows = db.scalars(
            select(TaskResult)
            .where(TaskResult.schedule_entry_id == ENTRY_NAME)
            .options(selectinload(TaskResult.acquisitions))
            .order_by(TaskResult.task_id)
        ).all()
        owned = set()
        for path in db.scalars(select(Acquisition.data_path)):
            owned.update({path, str(Path(path).with_suffix(".sigmf-meta"))})
        quota_deleted = db.scalar(
            select(func.coalesce(func.sum(MetricCounter.value), 0)).where(
                MetricCounter.name == "scos_quota_deleted_acquisitions"
            )
        )

        def on_disk(acquisition: Acquisition) -> bool:
            data = data_dir / acquisition.data_path
            return data.is_file() and data.with_suffix(".sigmf-meta").is_file()

        results = [
            {
                "task_id": row.task_id,
                "scheduled": row.scheduled.timestamp(),
                "started": row.started.timestamp(),
                "finished": row.finished.timestamp() if row.finished else None,
                "status": row.status,
                "detail": row.detail,
                "recordings": [
                    {"path": a.data_path, "on_disk": on_disk(a)} for a in row.acquisitions
                ],
            }
            for row in rows
        ]
        stray = sorted(
            str(path.relative_to(data_dir))
            for path in data_dir.rglob("*")
            if path.is_file() and str(path.relative_to(data_dir)) not in owned
        )
        return {
            "entry": {
                "action": entry.action,
                "interval": entry.interval,
                "start": entry.start.timestamp(),
                "next_task_id": entry.next_task_id,
                "is_active": entry.is_active,
            },
            "results": results,
            "quota_deleted": int(quota_deleted),
            "files_no_acquisition_owns": stray,
        }


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--tasks",
        type=int,
        default=int(os.environ.get("SOAK_TASKS") or 3600),
        help="task times, one per second (default $SOAK_TASKS, else 3600)",
    )
    parser.add_argument("--seed", type=int, help="repeat a run's fault plan (default: random)")
    parser.add_argument(
        "--faults",
        default=",".join(FAULTS),
        help=f"comma-separated kinds to inject, or 'none' (default: all of {', '.join(FAULTS)})",
    )
    parser.add_argument(
        "--fault-every", type=float, default=150.0, help="mean seconds between faults (150)"
    )
    parser.add_argument(
        "--recovery",
        type=float,
        default=15.0,
        help="seconds after a fault (or a restart) during which missed times and failures "
        "are put down to it (15)",
    )
    parser.add_argument(
        "--restart-delay",
        type=float,
        default=5.0,
        help="seconds before an exited gr-scos run is restarted (5, like RestartSec)",
    )
    parser.add_argument(
        "--sample-every", type=float, default=3.0, help="seconds between /proc samples (3)"
    )
    parser.add_argument(
        "--warmup",
        type=int,
        help=f"tasks before a process's slopes count (default: N/4, at most {WARMUP_TASKS})",
    )
    parser.add_argument(
        "--data-size", type=int, default=512, help="MiB of the data filesystem (tmpfs; 512)"
    )
    parser.add_argument("--out", type=Path, help="directory for soak.json and the logs")
    parser.add_argument("--keep", action="store_true", help="keep the temporary SCOS_HOME")
    parser.add_argument(
        "--reanalyse",
        type=Path,
        metavar="SOAK_JSON",
        help="run nothing: analyse and report a saved run's soak.json again",
    )
    arguments = parser.parse_args()
    if arguments.tasks < 10:
        parser.error("--tasks: at least 10")
    kinds = [] if arguments.faults == "none" else arguments.faults.split(",")
    unknown = sorted(set(kinds) - set(FAULTS))
    if unknown:
        parser.error(f"--faults: unknown {', '.join(unknown)}; known: {', '.join(FAULTS)}")
    arguments.kinds = kinds
    if arguments.seed is None:
        arguments.seed = random.SystemRandom().randrange(1 << 31)
    arguments.warmup_given = arguments.warmup is not None  # --reanalyse may change it
    if arguments.warmup is None:
        arguments.warmup = min(WARMUP_TASKS, arguments.tasks // 4)
    if arguments.out is None:
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
        arguments.out = REPO / "var" / "soak" / stamp
    return arguments


def interrupt(signum, frame) -> None:
    """SIGTERM ends the soak as Ctrl-C does, so that its clean-up runs."""
    raise KeyboardInterrupt


def reanalyse(path: Path, warmup: int | None) -> int:
    """Report a saved run again, with the analysis as it is now, its arguments and
    ``warmup`` if given."""
    run = json.loads(path.read_text())
    arguments = argparse.Namespace(**run["arguments"])
    if warmup is not None:
        arguments.warmup = warmup
    report = analyse(run, arguments)
    print_report(report, run, arguments)
    return 0 if all(row["met"] is not False for row in report["targets"]) else 1


def main() -> int:
    arguments = parse_arguments()
    if arguments.reanalyse:
        return reanalyse(arguments.reanalyse, arguments.warmup if arguments.warmup_given else None)
    if os.geteuid() != 0:
        print("make soak runs as root: it mounts a tmpfs for the data directory", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, interrupt)
    print(f"soak: seed {arguments.seed} (--seed {arguments.seed} repeats this fault plan)")
    arguments.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="soak-"))
    timeline: list[dict] = []
    interrupted = False
    with contextlib.ExitStack() as cleanup:
        if not arguments.keep:
            cleanup.callback(shutil.rmtree, work, ignore_errors=True)
        postgres = PostgresServer(work / "pg")
        postgres.start()
        cleanup.callback(postgres.stop)
        cleanup.callback(lambda: shutil.copy(postgres.log_file, arguments.out / "postgres.log"))
        datafs = DataFilesystem(work / "datafs", arguments.data_size * MiB)
        datafs.mount()
        cleanup.callback(datafs.unmount)
        port = free_port()
        environment = sensor_environment(work / "home", postgres.url(), datafs.data_dir, port)
        token = add_user(environment)
        sensor = Sensor(environment, port, arguments.out, timeline, arguments.restart_delay)
        soak = Soak(arguments, postgres, datafs, sensor, ProcessTree())
        cleanup.callback(kill_leftovers, soak)
        monitor = Monitor(soak, arguments.sample_every)
        monitor.start()
        cleanup.callback(monitor.stop)
        sensor.wait_ready()
        soak.api = Api(port, token)
        start = datetime.datetime.fromtimestamp(
            math.ceil(time.time()) + FIRST_TASK_DELAY_S, datetime.UTC
        )
        soak.api.create_entry(start, arguments.tasks)
        soak.first_task = start.timestamp()
        last_task = start.timestamp() + (arguments.tasks - 1) * INTERVAL_S
        say(
            f"entry '{ENTRY_NAME}': {arguments.tasks} x {ACTION} from {format_utc(start)}; "
            f"faults: {', '.join(arguments.kinds) or 'none'}; output in {arguments.out}"
        )
        engine = create_engine(postgres.url(), pool_pre_ping=True)  # the soak's own reads
        cleanup.callback(engine.dispose)
        api_task_count = None
        try:
            inject_faults(soak, arguments.kinds, random.Random(arguments.seed), last_task, timeline)
            say("no more faults; waiting for the last task")
            if not wait_entry_done(engine, last_task + END_GRACE_S):
                say(f"the entry had not finished {END_GRACE_S:g} s after its last task time")
            api_task_count = soak.api.task_count()
        except KeyboardInterrupt:
            interrupted = True
            say("interrupted: stopping the sensor, then the report")
        monitor.stop()  # no more restarts, and no sample of a sensor stopping
        clean_stop = sensor.stop()
        run = {
            "seed": arguments.seed,
            "arguments": {
                k: v for k, v in vars(arguments).items() if k not in ("reanalyse", "warmup_given")
            }
            | {"out": str(arguments.out)},
            "interrupted": interrupted,
            "monitor_errors": monitor.errors,
            "timeline": timeline,
            "samples": monitor.samples,
            "clean_stop": clean_stop,
            "api_task_count": api_task_count,
            "ended": time.time(),
            "scheduler_restarts": scheduler_restarts(arguments.out),
            **collect(engine, datafs.data_dir),
        }
        report = analyse(run, arguments)
        (arguments.out / "soak.json").write_text(json.dumps(run | {"report": report}, indent=1))
        print_report(report, run, arguments)
        print(f"\nraw samples, timeline and results: {arguments.out / 'soak.json'}")
    missed = any(row["met"] is False for row in report["targets"])
    return 1 if missed or interrupted else 0


def scheduler_restarts(log_dir: Path) -> list[str]:
    """The times ``gr-scos run`` replaced its scheduler in-process (it gave up after
    SCOS_MAX_CONSECUTIVE_FAILURES tasks in a row failed): not a process exit, but
    reported, with the failure that made it give up."""
    restarts = []
    for log in sorted(log_dir.glob("sensor-*.log")):
        lines = log.read_text(errors="replace").splitlines()
        for number, line in enumerate(lines):
            if "the scheduler gave up; a new one starts" in line:
                gave_up = [
                    ln for ln in lines[max(0, number - 20) : number] if "in a row failed" in ln
                ]
                restarts.append(f"{log.name}: {(gave_up or [line])[-1].strip()}")
    return restarts


def kill_leftovers(soak: Soak) -> None:
    """SIGKILL every process of the sensor still alive (orphans, stopped runners, a
    gr-scos run that would not stop), then wait a little for them to go."""
    leftovers = soak.processes()
    for process in leftovers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process["pid"], signal.SIGKILL)
    if leftovers:
        say(f"killed {len(leftovers)} leftover process(es) of the sensor")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and soak.processes():
        time.sleep(0.1)


if __name__ == "__main__":
    sys.exit(main())
