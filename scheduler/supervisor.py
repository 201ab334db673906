"""The scheduler's side of a runner process: start it ahead of its task, hand it the
task over ZeroMQ, follow its events, and end it when it overruns, hangs or dies.

* past the task's maximum run time (counted from its ``start_at``): a ``stop``
  message, then SIGTERM, then SIGKILL (each after ``STOP_GRACE`` seconds) to the
  runner's process group;
* no message for ``HEARTBEAT_TIMEOUT`` seconds (a hung runner): SIGKILL;
* the process ends without ``finished`` (an exception in ``work()`` aborts it, a
  segfault, ``os.abort()``, SIGKILL): the reason comes from its stderr and status.

Each way, :meth:`RunnerProcess.run` raises :class:`RunError` with a one-line detail
naming what happened and the recordings finished before it.

A runner started ahead may die or freeze while it waits (SIGSTOP, a deadlock):
:meth:`RunnerProcess.why_unresponsive` pings it, so that the scheduler hands the
task to another runner instead. While it imports, a runner that falls silent for
``HEARTBEAT_TIMEOUT`` seconds counts as hung too.
"""

import itertools
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import zmq

from . import protocol

logger = logging.getLogger(__name__)

STARTUP_TIMEOUT = 60.0  # seconds for a new runner to import everything and say ready
HEARTBEAT_TIMEOUT = 10.0  # seconds of silence after which a runner counts as hung
# Seconds for a runner to answer a ping: a ready one answers within a millisecond,
# one importing at nice 19 on a loaded machine within a few hundred. Stopped or
# ended runners are told apart without waiting, so this is waited only for a hung one.
PING_TIMEOUT = 2.0
STOP_GRACE = 2.0  # seconds between stop, SIGTERM and SIGKILL
_STDERR_KEPT = 64 * 1024  # bytes of the runner's stderr kept for the failure reason
_numbers = itertools.count()


class RunError(RuntimeError):
    """The task failed, overran or its runner died; the message says why in one line.
    ``recordings`` lists what it finished before that (left on disk)."""

    def __init__(self, message: str, recordings: list[str] | None = None):
        super().__init__(message)
        self.recordings = list(recordings or [])


@dataclass
class RunResult:
    recordings: list[str] = field(default_factory=list)
    overflows: int = 0
    samples: int = 0
    seconds: float = 0.0


class RunnerProcess:
    """One runner process, started now, for one task later."""

    def __init__(self, socket_dir: str | Path):
        self.socket_path = Path(socket_dir) / f"runner-{os.getpid()}-{next(_numbers)}.sock"
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.PAIR)
        self.socket.linger = 0
        self.socket.bind(f"ipc://{self.socket_path}")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "grscos.scheduler.runner",
                f"ipc://{self.socket_path}",
                str(os.getpid()),  # the runner ends itself when this process is gone
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group, killed as a whole
        )
        self.stderr = bytearray()
        self._drain = threading.Thread(target=self._keep_stderr, daemon=True)
        self._drain.start()
        self.ready = False
        self.heard = time.monotonic()
        # From the task's "started" event: when its flowgraph started (Unix seconds)
        # and how long it took to build.
        self.started_at: float | None = None
        self.build_seconds: float | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def _keep_stderr(self) -> None:
        for chunk in iter(lambda: self.process.stderr.read1(65536), b""):
            self.stderr.extend(chunk)
            del self.stderr[:-_STDERR_KEPT]

    def _receive(self, timeout: float) -> dict | None:
        if not self.socket.poll(max(timeout, 0) * 1000):
            return None
        message = protocol.decode(self.socket.recv())
        self.heard = time.monotonic()
        return message

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT) -> None:
        """Wait for ``ready``; RunError if the runner dies, falls silent for
        ``HEARTBEAT_TIMEOUT`` seconds or takes longer than ``timeout``."""
        deadline = time.monotonic() + timeout
        while not self.ready:
            try:
                message = self._receive(min(0.1, deadline - time.monotonic()))
            except protocol.ProtocolError as error:
                raise RunError(self._kill_for_nonsense(error), []) from None
            if message is not None:
                self.ready = message["type"] == "ready"
            elif self.process.poll() is not None:
                raise RunError(self._death(), [])
            elif time.monotonic() - self.heard > HEARTBEAT_TIMEOUT:
                self.kill()
                raise RunError(
                    f"the runner sent nothing for {HEARTBEAT_TIMEOUT:g} s while starting "
                    "(hung); killed",
                    [],
                )
            elif time.monotonic() > deadline:
                self.kill()
                raise RunError(f"the runner was not ready after {timeout:g} s; killed", [])

    def why_unresponsive(self, timeout: float = PING_TIMEOUT) -> str | None:
        """None if the runner answers a ``ping`` within ``timeout`` seconds, ready or
        still importing; else why it cannot take a task, in one line, having killed
        it: it has ended, it is stopped (SIGSTOP), it does not answer (hung) or it
        talks nonsense."""
        if self.process.poll() is not None:
            return self._death()
        if _process_state(self.pid) == "T":
            self.kill()
            return "the runner process was stopped (SIGSTOP); killed"
        deadline = time.monotonic() + timeout
        try:
            # Writable once the runner has connected, which a young one may not have yet.
            if self.socket.poll(timeout * 1000, zmq.POLLOUT):
                self.socket.send(protocol.encode("ping"), zmq.NOBLOCK)
                # Heartbeats queued while nobody listened come first.
                while (message := self._receive(deadline - time.monotonic())) is not None:
                    if message["type"] == "pong":
                        return None
                    if message["type"] == "ready":
                        self.ready = True
        except zmq.Again:
            pass  # it went between poll and send: it has ended, said below
        except protocol.ProtocolError as error:
            return self._kill_for_nonsense(error)
        if self.process.poll() is not None:
            return self._death()
        self.kill()
        return f"the runner did not answer a ping within {timeout:g} s (hung); killed"

    def run(
        self,
        request: dict,
        timeout: float,
        on_event: Callable[[dict], None] | None = None,
        stop_requested: Callable[[], str | None] = lambda: None,
        start_at: float | None = None,
    ) -> RunResult:
        """Run ``request``, starting its flowgraph at ``start_at`` (Unix seconds;
        None: now); stop it ``timeout`` seconds after that, or as soon as
        ``stop_requested`` returns a reason."""
        self.wait_ready()
        now = time.time()
        start_at = now if start_at is None else start_at
        began = time.monotonic() + max(0.0, start_at - now)
        self.socket.send(protocol.encode("task", request=request, start_at=start_at))
        self.heard = time.monotonic()
        recordings: list[str] = []
        try:
            while True:
                now = time.monotonic()
                if now - began > timeout:
                    self.stop(f"stopped after the maximum run time of {timeout:g} s")
                    raise RunError(
                        f"stopped after the maximum run time of {timeout:g} s; "
                        "the flowgraph had not finished",
                        recordings,
                    )
                reason = stop_requested()
                if reason:
                    self.stop(reason)
                    raise RunError(reason, recordings)
                if now - self.heard > HEARTBEAT_TIMEOUT:
                    self.kill()
                    raise RunError(
                        f"the runner sent nothing for {HEARTBEAT_TIMEOUT:g} s (hung); killed",
                        recordings,
                    )
                message = self._receive(min(protocol.HEARTBEAT_SECONDS, timeout - (now - began)))
                if message is None:
                    if self.process.poll() is not None:
                        raise RunError(self._death(), recordings)
                    continue
                if on_event is not None:
                    on_event(message)
                if message["type"] == "started":
                    self.started_at, self.build_seconds = message["at"], message["build_seconds"]
                elif message["type"] == "recording":
                    recordings.append(message["path"])
                elif message["type"] == "finished":
                    if message["status"] == "fail":
                        raise RunError(message["detail"], message["recordings"])
                    return RunResult(
                        recordings=message["recordings"],
                        overflows=message["overflows"],
                        samples=message["samples"],
                        seconds=time.monotonic() - began,
                    )
        except protocol.ProtocolError as error:
            raise RunError(self._kill_for_nonsense(error), recordings) from None

    def stop(self, reason: str) -> None:
        """Ask the flowgraph to stop, then SIGTERM, then SIGKILL."""
        try:
            self.socket.send(protocol.encode("stop", reason=reason), zmq.NOBLOCK)
        except zmq.ZMQError:
            pass
        for sig in (None, signal.SIGTERM, signal.SIGKILL):
            if sig is not None:
                self._signal(sig)
            try:
                self.process.wait(STOP_GRACE)
                return
            except subprocess.TimeoutExpired:
                continue

    def kill(self) -> None:
        self._signal(signal.SIGKILL)
        self.process.wait()

    def _kill_for_nonsense(self, error: protocol.ProtocolError) -> str:
        """Kill a runner that sent a malformed message; the detail saying so."""
        self.kill()
        return f"the runner sent a malformed message ({error}); killed"

    def _signal(self, sig: int) -> None:
        try:
            os.killpg(self.process.pid, sig)
        except ProcessLookupError:
            pass

    def _death(self) -> str:
        """One line on why the runner died: the exception GNU Radio aborted on, else
        its last words, with the exit status."""
        code = self.process.wait()
        self._drain.join(5)
        lines = [line.strip() for line in self.stderr.decode(errors="replace").splitlines()]
        lines = [line for line in lines if line]
        status = (
            f"signal {-code} ({signal.Signals(-code).name})" if code < 0 else f"exit status {code}"
        )
        for index, line in enumerate(lines):
            if line.endswith("Got std::exception") and index + 1 < len(lines):
                return f"the flowgraph failed: {lines[index + 1]}"
        tail = [line for line in lines if not line.startswith(("0x", "At:", "/"))]
        if tail:
            return f"the runner process ended with {status}: {tail[-1]}"
        return f"the runner process ended with {status} and no message"

    def close(self, grace: float = STOP_GRACE) -> None:
        """End the runner: one that has finished its task exits by itself; an idle
        one is told to stop; either is killed after ``grace`` seconds."""
        if self.process.poll() is None:
            try:
                self.socket.send(protocol.encode("stop", reason="closed"), zmq.NOBLOCK)
            except zmq.ZMQError:
                pass
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                logger.warning("runner %d did not exit within %g s; killing it", self.pid, grace)
                self.kill()
        self.socket.close()
        self.context.term()
        self.socket_path.unlink(missing_ok=True)


def _process_state(pid: int) -> str:
    """The state letter of process ``pid`` (``T``: stopped by a signal), "" if unknown."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return text[text.rindex(")") + 2]


def run(request: dict, timeout: float, on_event: Callable[[dict], None] | None = None) -> RunResult:
    """Run ``request`` in a new runner process, with ``timeout`` seconds to finish."""
    with tempfile.TemporaryDirectory(prefix="grscos-") as socket_dir:
        runner = RunnerProcess(socket_dir)
        try:
            return runner.run(request, timeout, on_event)
        finally:
            runner.close()
