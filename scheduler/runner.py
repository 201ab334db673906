"""The runner process: ``python -m grscos.scheduler.runner ENDPOINT [PARENT_PID]``.

It is started before its task is known (while the previous task records), so
that the interpreter, GNU Radio and the shipped flowgraphs are imported ahead,
at low CPU priority. It connects to ``ENDPOINT`` first, so that while it imports
its main thread already sends heartbeats and answers pings (the scheduler checks
that a spare runner lives before it hands it a task); then it says ``ready``,
runs the one task it is sent and exits (``protocol.py`` lists the messages). The
task comes ahead of its time with ``start_at``: the runner builds the flowgraph
(for hardware, opens the device) at once and starts it at that instant.

A block that raises aborts the process (the flowgraphs turn GNU Radio's exception
catching off), a device may hang: that costs only this process, which the
scheduler supervises (``supervisor.py``). Should the scheduler die (SIGKILL, a
crash), the runner ends itself at once: unsupervised, it would go on acquiring,
holding the signal analyzer, and then block for ever on its socket. The scheduler
passes its pid (``PARENT_PID``), so that a runner whose scheduler died while the
runner was still starting notices too.
"""

import importlib
import logging
import os
import pkgutil
import signal
import sys
import threading
import time

import zmq

from . import protocol

logger = logging.getLogger(__name__)

PARENT_CHECK_SECONDS = 0.25  # how often the runner checks that its scheduler lives
START_SLACK_SECONDS = 0.005  # the end of the wait for start_at is slept, not polled


def _preload() -> None:
    """Import what every task needs, before the task comes."""
    from gnuradio import scos  # noqa: F401 - imported for its cost, now

    import grscos.flowgraphs

    for module in pkgutil.iter_modules(grscos.flowgraphs.__path__):
        importlib.import_module(f"grscos.flowgraphs.{module.name}")


class _Preload:
    """``_preload`` in a thread whose nice value is the lowest (19): a runner is
    started while the previous task records, and should take CPU time from the
    acquisition only where it leaves some. Nice 19 (not SCHED_IDLE) still gets a
    share when other processes keep the CPUs busy, so a runner is never starved.
    The main thread, whose priority the flowgraph's threads inherit, keeps the
    normal one, and talks to the scheduler meanwhile. ``done_fd`` becomes readable
    when the import has ended."""

    def __init__(self) -> None:
        self.error: BaseException | None = None
        self._ended = threading.Event()
        self.done_fd, self._done_write = os.pipe()
        # A daemon: a runner stopped while it imports exits without waiting for it.
        self._thread = threading.Thread(target=self._run, name="preload", daemon=True)
        self._thread.start()

    @property
    def done(self) -> bool:
        return self._ended.is_set()

    def _run(self) -> None:
        try:
            # These start threads of their own when imported (GNU Radio's runtime
            # eleven, OpenBLAS one), which would inherit a low priority: they come
            # first, at the normal one.
            import numpy  # noqa: F401
            from gnuradio import gr  # noqa: F401

            try:
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)  # this thread
            except OSError as error:
                logger.warning("importing at normal priority: %s", error)
            _preload()
        except BaseException as error:  # re-raised in the main thread
            self.error = error
        finally:
            self._ended.set()
            os.write(self._done_write, b"x")


class _Link:
    """The runner's end of the PAIR socket; one lock, since progress and the
    flowgraph's recording callbacks send from different threads."""

    def __init__(self, endpoint: str):
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.PAIR)
        self.socket.linger = 2000
        self.socket.connect(endpoint)
        self.lock = threading.Lock()

    def send(self, kind: str, **fields) -> None:
        with self.lock:
            self.socket.send(protocol.encode(kind, **fields))

    def receive(self, timeout: float, wake_fd: int | None = None) -> dict | None:
        """The next message within ``timeout`` seconds; None on timeout, or at once
        when ``wake_fd`` becomes readable. A ``ping`` is answered here, whatever the
        runner is doing, and returns None too."""
        poller = zmq.Poller()
        poller.register(self.socket, zmq.POLLIN)
        if wake_fd is not None:
            poller.register(wake_fd, zmq.POLLIN)
        ready = dict(poller.poll(timeout * 1000))
        if self.socket not in ready:
            return None
        message = protocol.decode(self.socket.recv())
        if message["type"] == "ping":
            self.send("pong")
            return None
        return message

    def close(self) -> None:
        self.socket.close()
        self.context.term()


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if isinstance(error, ValueError | OSError) else f"{type(error).__name__}: {text}"


def run_task(link: _Link, request: dict, start_at: float) -> None:
    """Build the flowgraph of ``request``, start it at ``start_at`` (Unix seconds) and
    run it, reporting on ``link``."""
    from gnuradio import scos

    from grscos.actions.flowgraphs import load_class

    began = time.monotonic()
    recordings: list[str] = []

    def finish(status: str, detail: str = "", overflows: int = 0, samples: int = 0) -> None:
        link.send(
            "finished",
            status=status,
            detail=detail,
            recordings=recordings,
            overflows=overflows,
            samples=samples,
        )

    try:
        top = load_class(request["name"], request["source"])(**request["arguments"])
    except Exception as error:  # any failure to build is the task's failure, reported
        finish("fail", _one_line(error))
        return
    build_seconds = time.monotonic() - began
    # grcc makes every block an attribute of the top block.
    blocks = list(vars(top).values())
    sources = [block for block in blocks if isinstance(block, scos.sigan_source)]
    sinks = [block for block in blocks if isinstance(block, scos.sigmf_sink)]
    skips = [block for block in blocks if isinstance(block, scos.skip_after_tune)]

    def recorded(path: str) -> None:
        recordings.append(path)
        link.send("recording", path=path)

    for sink in sinks:
        sink.on_recording = recorded

    def samples_recorded() -> int:
        """Signal-analyzer samples that went into the recordings."""
        return sum(sink.nitems_read(0) * sink.samples_per_item for sink in sinks)

    def samples_taken() -> int:
        """Samples taken so far (upstream of the detectors, so it moves during a record)."""
        return max([samples_recorded()] + [block.nitems_written(0) for block in skips])

    stopped: list[str] = []

    def stop(reason: str) -> None:
        stopped.append(reason)
        top.stop()

    early_stop = _wait_until(link, start_at)
    if early_stop is not None:
        finish("fail", early_stop)
        return
    signal.signal(signal.SIGTERM, lambda *_: stop("stopped by SIGTERM"))
    top.start()
    link.send("started", at=time.time(), build_seconds=round(build_seconds, 6))
    if sinks:
        threading.Thread(
            target=_stop_when_recorded, args=(top, sinks), name="recorded", daemon=True
        ).start()
    # The waiter writes to a pipe when the flowgraph ends, which wakes the loop at once.
    ended_read, ended_write = os.pipe()

    def wait_for_end() -> None:
        top.wait()
        os.write(ended_write, b"x")

    waiter = threading.Thread(target=wait_for_end, daemon=True)
    waiter.start()
    while waiter.is_alive():
        # Progress doubles as the heartbeat: it comes from this loop, so a runner
        # whose main thread hangs falls silent.
        message = link.receive(protocol.HEARTBEAT_SECONDS, wake_fd=ended_read)
        if message is not None and message["type"] == "stop" and not stopped:
            stop(message["reason"])
        link.send(
            "progress",
            seconds=round(time.monotonic() - began, 3),
            samples=samples_taken(),
            recordings=len(recordings),
        )
    problems = list(stopped)
    problems += [
        f"{protocol.SIGAN_PROBLEM}{error}" for source in sources for error in source.command_errors
    ]
    problems += [block.incomplete for block in blocks if getattr(block, "incomplete", None)]
    finish(
        "fail" if problems else "success",
        "; ".join(problems),
        overflows=sum(sink.overflows for sink in sinks),
        samples=samples_recorded(),
    )


def _wait_until(link: _Link, start_at: float) -> str | None:
    """Sleep until ``start_at`` (Unix seconds), with heartbeats; the reason if the
    scheduler says stop first, else None."""
    while (remaining := start_at - time.time()) > START_SLACK_SECONDS:
        # zmq's poll counts whole milliseconds: the last stretch is slept.
        message = link.receive(min(remaining - START_SLACK_SECONDS, protocol.HEARTBEAT_SECONDS))
        if message is None:
            link.send("heartbeat")
        elif message["type"] == "stop":
            return message["reason"]
    time.sleep(max(0.0, start_at - time.time()))
    return None


def _stop_when_recorded(top, sinks: list) -> None:
    """Stop the flowgraph once every sink has written its last recording. Left alone,
    it would run until the sources upstream, blocked on full buffers, notice the
    sinks are gone: up to a few hundred milliseconds of samples nobody records."""
    for sink in sinks:
        sink.finished.wait()
    top.stop()


def _exit_when_orphaned(parent: int) -> None:
    """End this process as soon as ``parent`` (the scheduler) is gone, whatever the
    main thread is doing (it may be blocked sending to the dead scheduler)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_SECONDS)
        os._exit(4)  # nothing to tell: stderr went with the scheduler

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def main(endpoint: str, parent: int | None = None) -> int:
    # Anything printed goes to stderr, which the scheduler keeps for crash reports.
    sys.stdout = sys.stderr
    _exit_when_orphaned(os.getppid() if parent is None else parent)
    link = _Link(endpoint)
    preload = _Preload()
    importing = True
    try:
        while True:
            message = link.receive(
                protocol.HEARTBEAT_SECONDS, wake_fd=preload.done_fd if importing else None
            )
            if importing and preload.done:
                if preload.error is not None:
                    raise preload.error
                importing = False
                link.send("ready", pid=os.getpid())
            elif message is None:
                link.send("heartbeat")
            if message is not None and message["type"] == "task":
                run_task(link, message["request"], message["start_at"])
                return 0
            if message is not None:
                return 0  # stopped before any task
    except protocol.ProtocolError as error:
        logger.error("bad message from the scheduler: %s", error)
        return 3
    finally:
        link.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else None))
