"""Run one action flowgraph in a process of its own, with a deadline.

A flowgraph runs in a child process (``python -m grscos.runner``) so that a block
that raises (GNU Radio then aborts the process: the flowgraphs turn exception
catching off), a device that hangs or a run past the action's maximum run time
costs only that process. The parent sends the child a JSON request on stdin::

    {"source": "grscos.flowgraphs.acquire_m4s", "name": "acquire_m4s",
     "arguments": {... keyword arguments of the flowgraph ...}}

and reads JSON events, one per line, from its stdout: ``progress`` (seconds,
samples, recordings so far), ``recording`` (a finished recording's metadata path),
then ``done`` (recordings, overflows) or ``error`` (message).
"""

import json
import logging
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

PROGRESS_INTERVAL = 0.5  # seconds between progress events
_STOP_GRACE = 2.0  # seconds between SIGTERM and SIGKILL
_STDERR_KEPT = 64 * 1024  # bytes of the child's stderr kept for the failure reason


class RunError(RuntimeError):
    """The flowgraph failed or overran; the message says why in one line.
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


# --- parent side ---------------------------------------------------------------------


def run(
    request: dict,
    timeout: float,
    on_event: Callable[[dict], None] | None = None,
) -> RunResult:
    """Run ``request`` in a child process; kill it after ``timeout`` seconds."""
    began = time.monotonic()
    child = subprocess.Popen(
        [sys.executable, "-m", "grscos.runner"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group, killed as a whole
    )
    stderr = bytearray()
    reader = threading.Thread(target=_drain, args=(child.stderr, stderr), daemon=True)
    reader.start()
    child.stdin.write(json.dumps(request).encode())
    child.stdin.close()
    recordings: list[str] = []
    outcome: dict | None = None
    overran = False
    selector = selectors.DefaultSelector()
    selector.register(child.stdout, selectors.EVENT_READ)
    pending = b""
    while True:
        left = timeout - (time.monotonic() - began)
        if left <= 0:
            overran = True
            break
        if not selector.select(min(left, 1.0)):
            continue
        chunk = os.read(child.stdout.fileno(), 65536)
        if not chunk:
            break
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            event = json.loads(line)
            if event["event"] == "recording":
                recordings.append(event["path"])
            if event["event"] in ("done", "error"):
                outcome = event
            if on_event is not None:
                on_event(event)
    selector.close()
    if overran:
        _stop(child)
        raise RunError(
            f"stopped after the maximum run time of {timeout:g} s; the flowgraph had not finished",
            recordings,
        )
    code = child.wait()
    reader.join(5)
    if outcome is not None and outcome["event"] == "done" and code == 0:
        return RunResult(
            recordings=outcome["recordings"],
            overflows=outcome["overflows"],
            samples=outcome["samples"],
            seconds=time.monotonic() - began,
        )
    if outcome is not None and outcome["event"] == "error":
        raise RunError(outcome["message"], recordings)
    raise RunError(_crash_reason(code, stderr.decode(errors="replace")), recordings)


def _drain(stream, kept: bytearray) -> None:
    for chunk in iter(lambda: stream.read1(65536), b""):
        kept.extend(chunk)
        del kept[:-_STDERR_KEPT]


def _stop(child: subprocess.Popen) -> None:
    for sig, grace in ((signal.SIGTERM, _STOP_GRACE), (signal.SIGKILL, None)):
        try:
            os.killpg(child.pid, sig)
        except ProcessLookupError:
            return
        try:
            child.wait(grace)
            return
        except subprocess.TimeoutExpired:
            continue


def _crash_reason(code: int, stderr: str) -> str:
    """One line on why the child died: the exception GNU Radio aborted on, else its
    last words, with the exit status."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    status = f"signal {-code}" if code < 0 else f"exit status {code}"
    for index, line in enumerate(lines):
        if line.endswith("Got std::exception") and index + 1 < len(lines):
            return f"the flowgraph failed: {lines[index + 1]}"
    tail = [line for line in lines if not line.startswith(("0x", "At:", "/"))]
    if tail:
        return f"the flowgraph process ended with {status}: {tail[-1]}"
    return f"the flowgraph process ended with {status} and no message"


# --- child side ----------------------------------------------------------------------


def _child() -> int:
    from gnuradio import scos

    from grscos.actions.flowgraphs import load_class

    # Events own the real stdout; anything else printed goes to stderr.
    events = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def emit(event: dict) -> None:
        events.write(json.dumps(event) + "\n")

    request = json.load(sys.stdin)
    began = time.monotonic()
    try:
        top = load_class(request["name"], request["source"])(**request["arguments"])
    except Exception as error:  # any failure to build is the task's failure, reported
        emit({"event": "error", "message": _one_line(error)})
        return 1
    # grcc makes every block an attribute of the top block.
    blocks = list(vars(top).values())
    sources = [block for block in blocks if isinstance(block, scos.sigan_source)]
    sinks = [block for block in blocks if isinstance(block, scos.sigmf_sink)]
    skips = [block for block in blocks if isinstance(block, scos.skip_after_tune)]
    recordings: list[str] = []

    def finished(path: str) -> None:
        recordings.append(path)
        emit({"event": "recording", "path": path})

    for sink in sinks:
        sink.on_recording = finished

    def recorded() -> int:
        """Signal-analyzer samples that went into the recordings."""
        return sum(sink.nitems_read(0) * sink.samples_per_item for sink in sinks)

    def acquired() -> int:
        """Samples taken so far (upstream of the detectors, so it moves during a record)."""
        return max([recorded()] + [block.nitems_written(0) for block in skips])

    def stop(*_) -> None:
        top.stop()

    signal.signal(signal.SIGTERM, stop)
    top.start()
    waiter = threading.Thread(target=top.wait, daemon=True)
    waiter.start()
    while waiter.is_alive():
        waiter.join(PROGRESS_INTERVAL)
        emit(
            {
                "event": "progress",
                "seconds": round(time.monotonic() - began, 3),
                "samples": acquired(),
                "recordings": len(recordings),
            }
        )
    problems = [
        f"signal analyzer: {error}" for source in sources for error in source.command_errors
    ]
    problems += [block.incomplete for block in blocks if getattr(block, "incomplete", None)]
    if problems:
        emit({"event": "error", "message": "; ".join(problems)})
        return 1
    emit(
        {
            "event": "done",
            "recordings": recordings,
            "overflows": sum(sink.overflows for sink in sinks),
            "samples": recorded(),
        }
    )
    return 0


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if isinstance(error, ValueError | OSError) else f"{type(error).__name__}: {text}"


if __name__ == "__main__":
    sys.exit(_child())
