"""The runner process and its supervision, as the scheduler sees them.

A runner starts before its task, sends heartbeats and answers pings while it
imports, says ``ready`` and goes on doing so; it runs one flowgraph (built like
``grscos.acquire`` builds it) and exits. A spare runner that died, stopped or hung
while it waited fails the liveness check at hand-over, and is killed. Every way
a task can go wrong (an exception or ``os.abort()`` in a block's ``work()``, the
runner killed or hung, the flowgraph overrunning its maximum run time, the
schedule stopping it, a runner that never gets ready or talks nonsense) ends in
a :class:`RunError` with one line naming what happened, the recordings finished
before it kept, no process of the runner left behind, and the next runner works.
"""

import datetime
import json
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from grscos.acquire import Catalog, global_metadata, prepare
from grscos.config import Config
from grscos.scheduler import protocol, supervisor
from grscos.scheduler.supervisor import RunError, RunnerProcess
from tests.waiting import wait_for

NOW = "2026-01-01T00:00:00.000Z"
ENDLESS = {"duration_ms": 1e6, "sample_rate": 1e6}  # 1e9 samples: longer than any test
IQ_SAMPLES = 140000  # acquire_iq: 10 ms at 14 MS/s
GONE_WITHIN = 5.0  # seconds for a runner's process group to disappear after RunError
# No fault below may take this long to end in RunError: well below their 30 s maximum
# run time, and far above what a loaded machine needs.
FAULT_SECONDS = 20.0

# Owner flowgraphs (configuration flowgraphs/ folder): one block whose work() fails.
FAULTY_FLOWGRAPH = """
import os

import numpy as np
from gnuradio import blocks, gr


class faulty(gr.sync_block):
    def __init__(self):
        gr.sync_block.__init__(self, "faulty", [np.complex64], None)

    def work(self, input_items, output_items):
        {work}


class {name}(gr.top_block):
    def __init__(self, device="sim", output="x", global_extensions={{}}):
        gr.top_block.__init__(self, catch_exceptions=False)
        self.source = blocks.null_source(gr.sizeof_gr_complex)
        self.sink = faulty()
        self.connect(self.source, self.sink)
"""
FAULTY_WORK = {
    "raises_in_work": 'raise ValueError("the detector broke")',
    "aborts_in_work": "os.abort()",
}
ACTIONS = "actions:\n" + "".join(
    f"  - {{name: {name}, flowgraph: {name}, summary: {name}, max_run_time: 30}}\n"
    for name in ["acquire_iq", "acquire_stepped_iq", *FAULTY_WORK]
)

# Stand-ins for the runner (sys.executable is called as EXE -m MODULE ENDPOINT).
PEER = """\
import sys
import time

import zmq

socket = zmq.Context().socket(zmq.PAIR)
socket.connect(sys.argv[1])
if {ready}:
    socket.send(b'{{"v": {version}, "type": "ready", "pid": 1}}')
    socket.recv()  # the task
socket.send({message!r})
time.sleep(60)
"""


# The real runner, whose imports wait until the file argv[3] exists.
GATED_RUNNER = """\
import sys
import time
from pathlib import Path

from grscos.scheduler import runner

preload = runner._preload


def gated_preload():
    while not Path(sys.argv[3]).exists():
        time.sleep(0.01)
    preload()


runner._preload = gated_preload
sys.exit(runner.main(sys.argv[1], int(sys.argv[2])))
"""


def fake_runner(monkeypatch, directory: Path, shell: str) -> None:
    """Make RunnerProcess start ``shell`` (a sh script; $3 is the endpoint)."""
    script = directory / "fake-python"
    script.write_text(f"#!/bin/sh\n{shell}\n")
    script.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(script))


def live_group(pgid: int) -> list[int]:
    """The processes of group ``pgid`` that still run (zombies left to PID 1 do not)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # ended while we looked
        state, _, group = text[text.rindex(")") + 2 :].split()[:3]
        if int(group) == pgid and state not in "ZX":
            pids.append(int(stat.parent.name))
    return pids


def assert_gone(runner: RunnerProcess) -> None:
    """The runner exited and nothing of its process group is left."""
    assert runner.process.returncode is not None
    deadline = time.monotonic() + GONE_WITHIN
    while live_group(runner.pid):
        assert time.monotonic() < deadline, f"left running: {live_group(runner.pid)}"
        time.sleep(0.05)


def next_message(runner: RunnerProcess, timeout: float = supervisor.HEARTBEAT_TIMEOUT) -> dict:
    """The runner's next message, read here (not by the supervisor) within ``timeout``
    seconds, after which the supervisor would count the runner as hung."""
    assert runner.socket.poll(timeout * 1000), f"the runner sent nothing for {timeout:g} s"
    return protocol.decode(runner.socket.recv())


def assert_one_line(error: RunError, pattern: str) -> None:
    message = str(error)
    assert "\n" not in message
    assert re.search(pattern, message), message


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Config:
    """The default sensor with the faulty owner flowgraphs and an action for each."""
    directory = tmp_path_factory.mktemp("config")
    (directory / "actions.yaml").write_text(ACTIONS)
    (directory / "flowgraphs").mkdir()
    for name, work in FAULTY_WORK.items():
        source = FAULTY_FLOWGRAPH.format(name=name, work=work)
        (directory / "flowgraphs" / f"{name}.py").write_text(source)
    return Config.load(directory)


@pytest.fixture(scope="module")
def catalog(config) -> Catalog:
    return Catalog.load(config)


@pytest.fixture
def request_for(config, catalog, tmp_path):
    """The runner request of an action on the simulator, as grscos.acquire builds it;
    recordings go to tmp_path/out/<action>."""

    def build(action: str, **overrides) -> dict:
        prepared = prepare(catalog, action, overrides, "sim")
        entry = {"id": "test", "name": "test", "action": action, "created": NOW, "modified": NOW}
        extensions, calibration_file, reference = global_metadata(prepared, config, entry, 1)
        output = tmp_path / "out" / action
        output.parent.mkdir(exist_ok=True)
        runtime = {
            "device": "sim",
            "calibration_file": calibration_file,
            "reference": reference,
            "output": str(output),
            "global_extensions": extensions,
            "sim_tones": config.simulator["tones"],
            "sim_bursts": config.simulator["bursts"],
        }
        accepted = prepared.flowgraph.parameters
        values = prepared.values | {k: v for k, v in runtime.items() if k in accepted}
        return {
            "name": prepared.flowgraph.name,
            "source": prepared.flowgraph.source,
            "arguments": prepared.flowgraph.flowgraph_arguments(values),
        }

    return build


@pytest.fixture
def spawn(tmp_path):
    """Start RunnerProcesses with sockets in tmp_path; all are closed afterwards."""
    started: list[RunnerProcess] = []

    def start() -> RunnerProcess:
        started.append(RunnerProcess(tmp_path))
        return started[-1]

    yield start
    for runner in started:
        runner.close()


@pytest.fixture
def importing(monkeypatch, tmp_path, spawn) -> tuple[RunnerProcess, Path]:
    """A real runner that has connected and imports until the file returned exists."""
    gate = tmp_path / "gate"
    script = tmp_path / "gated_runner.py"
    script.write_text(GATED_RUNNER)
    fake_runner(monkeypatch, tmp_path, f'exec "{sys.executable}" "{script}" "$3" "$4" "{gate}"')
    runner = spawn()
    monkeypatch.undo()
    assert next_message(runner)["type"] == "heartbeat"  # it talks while it imports
    return runner, gate


@pytest.fixture(params=["ready", "importing"])
def spare(request, spawn) -> RunnerProcess:
    """A runner waiting for its task: ready, or still importing."""
    if request.param == "importing":
        return request.getfixturevalue("importing")[0]
    runner = spawn()
    runner.wait_ready()
    return runner


@pytest.fixture
def next_runner_works(spawn, request_for):
    """After the test: a new runner still runs acquire_iq."""
    yield
    result = spawn().run(request_for("acquire_iq"), 30)
    assert len(result.recordings) == 1
    assert Path(result.recordings[0]).is_file()


# ---------------------------------------------------------------------------------
# protocol

EXAMPLES = {
    "ready": {"pid": 1234},
    "heartbeat": {},
    "started": {"at": 1767225600.0015, "build_seconds": 0.031},
    "progress": {"seconds": 1.5, "samples": 14000, "recordings": 0},
    "recording": {"path": "/data/x.sigmf-meta"},
    "finished": {
        "status": "fail",
        "detail": "stopped",
        "recordings": ["/data/x.sigmf-meta"],
        "overflows": 2,
        "samples": 140000,
    },
    "task": {
        "request": {"name": "acquire_iq", "source": "x", "arguments": {"a": [1]}},
        "start_at": 1767225600.0,
    },
    "stop": {"reason": "schedule entry deleted"},
    "ping": {},
    "pong": {},
}


def test_examples_cover_every_message_type():
    assert EXAMPLES.keys() == protocol.FIELDS.keys()


@pytest.mark.parametrize("kind", EXAMPLES)
def test_every_message_type_survives_encode_and_decode(kind):
    data = protocol.encode(kind, **EXAMPLES[kind])
    assert protocol.decode(data) == {"v": protocol.VERSION, "type": kind, **EXAMPLES[kind]}


def _message(kind: str, **changes) -> dict:
    return {"v": protocol.VERSION, "type": kind, **EXAMPLES.get(kind, {}), **changes}


def _without(kind: str, name: str) -> dict:
    return {key: value for key, value in _message(kind).items() if key != name}


WRONG_FIELD = r"{}: field '{}' missing or of the wrong type"
V = protocol.VERSION


@pytest.mark.parametrize(
    ("message", "error"),
    [
        pytest.param(b"ready", r"^not JSON: ", id="not JSON"),
        pytest.param(b'{"v": 1, "type": "heart', r"^not JSON: ", id="truncated"),
        pytest.param(b"\xff\xfe\x00", r"^not JSON: ", id="not text"),
        pytest.param([1, 2], r"^a message must be a JSON object$", id="array"),
        pytest.param("ready", r"^a message must be a JSON object$", id="string"),
        pytest.param(_message("heartbeat", v=1), rf"^protocol version 1, expected {V}$", id="v1"),
        pytest.param(
            _without("heartbeat", "v"), rf"^protocol version None, expected {V}$", id="no v"
        ),
        pytest.param(
            _message("heartbeat", v=True), rf"^protocol version True, expected {V}$", id="v true"
        ),
        pytest.param(
            _message("heartbeat", v=float(V)),
            rf"^protocol version {float(V)}, expected {V}$",
            id="v float",
        ),
        pytest.param(_message("hello"), r"^unknown message type 'hello'$", id="unknown type"),
        pytest.param(_without("ready", "type"), r"^unknown message type None$", id="no type"),
        pytest.param(_without("ready", "pid"), WRONG_FIELD.format("ready", "pid"), id="no pid"),
        pytest.param(
            _message("ready", pid="1234"), WRONG_FIELD.format("ready", "pid"), id="pid string"
        ),
        pytest.param(
            _message("ready", pid=True), WRONG_FIELD.format("ready", "pid"), id="pid bool"
        ),
        pytest.param(
            _message("progress", seconds=False),
            WRONG_FIELD.format("progress", "seconds"),
            id="seconds bool",
        ),
        pytest.param(
            _message("progress", samples=1.0),
            WRONG_FIELD.format("progress", "samples"),
            id="samples float",
        ),
        pytest.param(
            _message("finished", recordings="x.sigmf-meta"),
            WRONG_FIELD.format("finished", "recordings"),
            id="recordings string",
        ),
        pytest.param(
            _message("task", request=None), WRONG_FIELD.format("task", "request"), id="no request"
        ),
        pytest.param(
            _without("task", "start_at"), WRONG_FIELD.format("task", "start_at"), id="no start_at"
        ),
        pytest.param(
            _message("task", start_at="2026-01-01T00:00:00Z"),
            WRONG_FIELD.format("task", "start_at"),
            id="start_at text",
        ),
        pytest.param(
            _without("started", "at"), WRONG_FIELD.format("started", "at"), id="started no at"
        ),
        pytest.param(
            _message("finished", status="done"),
            r"^finished: status must be one of success, fail$",
            id="bad status",
        ),
    ],
)
def test_decode_rejects_a_malformed_message_saying_what_is_wrong(message, error):
    data = message if isinstance(message, bytes) else json.dumps(message).encode()
    with pytest.raises(protocol.ProtocolError, match=error):
        protocol.decode(data)


def test_encode_refuses_what_decode_would_reject():
    with pytest.raises(protocol.ProtocolError, match=WRONG_FIELD.format("ready", "pid")):
        protocol.encode("ready", pid="1234")
    with pytest.raises(protocol.ProtocolError, match=r"unknown message type 'hello'"):
        protocol.encode("hello")


# ---------------------------------------------------------------------------------
# a runner that works


def test_a_runner_gets_ready_and_sends_heartbeats_while_idle(spawn):
    runner = spawn()
    runner.wait_ready()
    assert runner.ready
    assert [next_message(runner)["type"] for _ in range(3)] == ["heartbeat"] * 3


def test_a_runner_stopped_before_its_task_exits(spawn):
    runner = spawn()
    runner.wait_ready()
    runner.stop("the scheduler is shutting down")
    assert runner.process.returncode == 0
    assert_gone(runner)


def test_a_task_runs_reports_its_events_and_the_runner_exits(spawn, request_for):
    runner = spawn()
    events = []
    result = runner.run(request_for("acquire_iq"), 30, on_event=events.append)
    (path,) = result.recordings
    assert Path(path).is_file()
    assert Path(path.removesuffix(".sigmf-meta") + ".sigmf-data").stat().st_size == IQ_SAMPLES * 8
    assert (result.samples, result.overflows) == (IQ_SAMPLES, 0)
    assert 0 < result.seconds < 30
    kinds = [event["type"] for event in events]
    assert kinds[0] == "started"
    assert kinds[-1] == "finished"
    assert sorted(set(kinds[1:-1])) == ["progress", "recording"]
    assert [event["path"] for event in events if event["type"] == "recording"] == [path]
    seconds = [event["seconds"] for event in events if event["type"] == "progress"]
    assert seconds == sorted(seconds)
    assert events[-1]["status"] == "success"
    # It exits by itself after finished (close only waits for it, it kills none).
    assert runner.process.wait(5) == 0
    assert_gone(runner)
    assert runner.socket_path.exists()
    runner.close()
    assert not runner.socket_path.exists()


def _capture_time(meta_path: str) -> float:
    """The Unix time of a recording's first sample (its first capture's datetime)."""
    capture = json.loads(Path(meta_path).read_text())["captures"][0]
    return datetime.datetime.fromisoformat(capture["core:datetime"]).timestamp()


def test_a_task_built_ahead_starts_at_start_at_and_stamps_that_time(spawn, request_for):
    runner = spawn()
    runner.wait_ready()
    events = []
    handed_over = time.monotonic()
    start_at = time.time() + 1.0
    result = runner.run(request_for("acquire_iq"), 30, events.append, start_at=start_at)
    run_seconds = time.monotonic() - handed_over
    finished_at = time.time()
    kinds = [event["type"] for event in events]
    # Waiting for its time, the runner keeps sending heartbeats.
    assert kinds[: kinds.index("started")].count("heartbeat") >= 2, kinds
    (started,) = [event for event in events if event["type"] == "started"]
    assert runner.started_at == started["at"]
    assert start_at <= started["at"] <= finished_at  # never early (how late: make bench)
    assert 0 < runner.build_seconds < run_seconds
    # The samples are stamped when they were taken (from start_at on), not when the
    # flowgraph was built (before it); the capture's datetime is read to 1 us here.
    (path,) = result.recordings
    assert start_at - 1e-6 <= _capture_time(path) <= finished_at


def _nice_values(pid: int) -> dict[int, int]:
    """The nice value of each thread of process ``pid``."""
    values = {}
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # the thread ended while we looked
        values[int(stat.parent.name)] = int(text[text.rindex(")") + 2 :].split()[16])
    return values


def test_a_runner_imports_at_low_priority_but_acquires_at_normal_priority(spawn, request_for):
    runner = spawn()
    seen_importing: list[dict[int, int]] = []
    ready = threading.Event()

    def sample() -> None:
        while not ready.is_set():
            seen_importing.append(_nice_values(runner.pid))
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        runner.wait_ready()
    finally:
        ready.set()
        sampler.join()
    assert any(19 in values.values() for values in seen_importing), seen_importing
    threads: list[dict[int, int]] = []

    def on_started(event: dict) -> None:
        if event["type"] == "started":
            threads.append(_nice_values(runner.pid))

    runner.run(request_for("acquire_iq"), 30, on_started)
    (running,) = threads
    assert len(running) > 3  # the flowgraph's block threads
    assert set(running.values()) == {0}, running


def test_the_maximum_run_time_counts_from_start_at(spawn, request_for):
    runner = spawn()
    result = runner.run(request_for("acquire_iq"), 1, start_at=time.time() + 1.5)
    assert len(result.recordings) == 1


def test_a_task_stopped_while_it_waits_for_start_at_never_starts(spawn, request_for):
    runner = spawn()
    runner.wait_ready()
    events = []
    asked = time.monotonic()
    with pytest.raises(RunError) as caught:
        runner.run(
            request_for("acquire_iq"),
            30,
            events.append,
            lambda: "schedule entry deleted" if time.monotonic() - asked > 0.5 else None,
            start_at=time.time() + 20,
        )
    assert_one_line(caught.value, r"^schedule entry deleted$")
    assert "started" not in [event["type"] for event in events]
    assert runner.started_at is None
    assert not list((Path(request_for("acquire_iq")["arguments"]["output"]).parent).iterdir())
    assert runner.process.wait(5) == 0
    assert_gone(runner)


def test_run_starts_a_runner_for_one_task(request_for):
    result = supervisor.run(request_for("acquire_iq"), 30)
    assert len(result.recordings) == 1


# ---------------------------------------------------------------------------------
# liveness at hand-over: a spare runner may have died or frozen while it waited

ANSWER_SECONDS = 30.0  # for a healthy runner to answer a ping: any loaded machine
CHECK_SECONDS = 0.5  # for an unhealthy one: the time the check may take


def process_state(pid: int) -> str:
    """The state letter of process ``pid`` (``T``: stopped by a signal)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2]


def test_a_ready_runner_answers_the_check_and_then_runs_its_task(spawn, request_for):
    runner = spawn()
    runner.wait_ready()
    assert runner.why_unresponsive(ANSWER_SECONDS) is None
    (path,) = runner.run(request_for("acquire_iq"), 30).recordings
    assert Path(path).is_file()


def test_a_runner_still_importing_answers_the_check_and_then_runs_its_task(importing, request_for):
    runner, gate = importing
    assert runner.why_unresponsive(ANSWER_SECONDS) is None
    assert not runner.ready
    gate.touch()
    (path,) = runner.run(request_for("acquire_iq"), 30).recordings
    assert Path(path).is_file()


def test_a_stopped_spare_runner_fails_the_check_and_is_killed(spare):
    os.kill(spare.pid, signal.SIGSTOP)
    wait_for(lambda: process_state(spare.pid) == "T", what="the runner stopped")
    began = time.monotonic()
    reason = spare.why_unresponsive(CHECK_SECONDS)
    assert time.monotonic() - began < CHECK_SECONDS + 5
    assert reason == "the runner process was stopped (SIGSTOP); killed"
    assert spare.process.returncode == -signal.SIGKILL
    assert_gone(spare)


def test_a_killed_spare_runner_fails_the_check(spare):
    os.kill(spare.pid, signal.SIGKILL)
    began = time.monotonic()
    reason = spare.why_unresponsive(CHECK_SECONDS)
    assert time.monotonic() - began < CHECK_SECONDS + 5
    assert re.match(r"the runner process ended with signal 9 \(SIGKILL\)", reason), reason
    assert_gone(spare)


def test_a_spare_runner_that_does_not_answer_fails_the_check_and_is_killed(
    monkeypatch, tmp_path, spawn
):
    """A stand-in that says ready, then never reads again (a hung main thread)."""
    peer = tmp_path / "peer.py"
    peer.write_text(PEER.format(ready=False, message=protocol.encode("ready", pid=1), version=V))
    fake_runner(monkeypatch, tmp_path, f'exec "{sys.executable}" "{peer}" "$3"')
    runner = spawn()
    monkeypatch.undo()
    runner.wait_ready()
    began = time.monotonic()
    reason = runner.why_unresponsive(CHECK_SECONDS)
    assert time.monotonic() - began < CHECK_SECONDS + 5
    assert reason == "the runner did not answer a ping within 0.5 s (hung); killed"
    assert runner.process.returncode == -signal.SIGKILL
    assert_gone(runner)


def test_a_runner_that_stops_while_importing_is_noticed_before_the_startup_timeout(
    monkeypatch, importing
):
    runner, _ = importing
    monkeypatch.setattr(supervisor, "HEARTBEAT_TIMEOUT", 1.0)
    os.kill(runner.pid, signal.SIGSTOP)
    wait_for(lambda: process_state(runner.pid) == "T", what="the runner stopped")
    with pytest.raises(RunError) as caught:
        runner.wait_ready(FAULT_SECONDS)
    assert_one_line(
        caught.value, r"^the runner sent nothing for 1 s while starting \(hung\); killed$"
    )
    assert_gone(runner)


def test_a_runner_closed_while_importing_exits_by_itself(monkeypatch, importing):
    runner, _ = importing
    monkeypatch.setattr(supervisor, "STOP_GRACE", FAULT_SECONDS)  # it is not killed
    runner.close()
    assert runner.process.returncode == 0
    assert_gone(runner)


# ---------------------------------------------------------------------------------
# faults


def _signal_after_start(runner: RunnerProcess, sig: int | None):
    def on_event(event: dict) -> None:
        if sig is not None and event["type"] == "started":
            os.kill(runner.pid, sig)

    return on_event


@pytest.mark.parametrize(
    ("action", "overrides", "timeout", "sig", "error"),
    [
        pytest.param(
            "raises_in_work",
            {},
            30,
            None,
            r"^the flowgraph failed: ValueError: the detector broke$",
            id="exception in work",
        ),
        pytest.param(
            "aborts_in_work",
            {},
            30,
            None,
            r"^the runner process ended with signal 6 \(SIGABRT\)",
            id="abort in work",
        ),
        pytest.param(
            "acquire_iq",
            ENDLESS,
            30,
            signal.SIGKILL,
            r"^the runner process ended with signal 9 \(SIGKILL\)",
            id="runner killed",
        ),
        pytest.param(
            "acquire_iq",
            ENDLESS,
            1,
            None,
            r"^stopped after the maximum run time of 1 s; the flowgraph had not finished$",
            id="maximum run time",
        ),
        pytest.param(
            "acquire_iq",
            ENDLESS,
            30,
            signal.SIGSTOP,
            r"^the runner sent nothing for 1 s \(hung\); killed$",
            id="runner hung",
        ),
    ],
)
@pytest.mark.usefixtures("next_runner_works")
def test_a_failing_task_ends_in_one_line_and_leaves_no_process(
    monkeypatch, spawn, request_for, action, overrides, timeout, sig, error
):
    monkeypatch.setattr(supervisor, "HEARTBEAT_TIMEOUT", 1.0)
    runner = spawn()
    runner.wait_ready()
    began = time.monotonic()
    with pytest.raises(RunError) as caught:
        runner.run(request_for(action, **overrides), timeout, _signal_after_start(runner, sig))
    assert time.monotonic() - began < FAULT_SECONDS
    assert_one_line(caught.value, error)
    assert caught.value.recordings == []
    assert_gone(runner)


@pytest.mark.usefixtures("next_runner_works")
def test_a_stop_request_ends_the_task_and_keeps_its_recordings(spawn, request_for):
    """Stopped after the first of three frequencies: that recording stays."""
    request = request_for("acquire_stepped_iq", durations_ms=[10, 1e6, 1e6])
    recorded: list[str] = []

    def on_event(event: dict) -> None:
        if event["type"] == "recording":
            recorded.append(event["path"])

    runner = spawn()
    began = time.monotonic()
    with pytest.raises(RunError) as caught:
        runner.run(request, 30, on_event, lambda: "schedule entry deleted" if recorded else None)
    assert time.monotonic() - began < FAULT_SECONDS
    assert_one_line(caught.value, r"^schedule entry deleted$")
    assert caught.value.recordings == recorded
    (path,) = recorded
    assert Path(path).is_file()
    assert Path(path.removesuffix(".sigmf-meta") + ".sigmf-data").is_file()
    assert_gone(runner)


@pytest.mark.parametrize(
    ("shell", "timeout", "error"),
    [
        pytest.param(
            "echo \"ModuleNotFoundError: No module named 'gnuradio'\" >&2\nexit 3",
            supervisor.STARTUP_TIMEOUT,
            r"^the runner process ended with exit status 3: "
            r"ModuleNotFoundError: No module named 'gnuradio'$",
            id="exits",
        ),
        pytest.param(
            "exit 3",
            supervisor.STARTUP_TIMEOUT,
            r"^the runner process ended with exit status 3 and no message$",
            id="exits silently",
        ),
        pytest.param(
            "kill -SEGV $$",
            supervisor.STARTUP_TIMEOUT,
            r"^the runner process ended with signal 11 \(SIGSEGV\)",
            id="crashes",
        ),
        pytest.param(
            "sleep 60",  # a child: the whole process group must go
            0.5,
            r"^the runner was not ready after 0.5 s; killed$",
            id="never ready",
        ),
    ],
)
@pytest.mark.usefixtures("next_runner_works")
def test_a_runner_that_is_never_ready_ends_in_one_line(
    monkeypatch, tmp_path, spawn, shell, timeout, error
):
    fake_runner(monkeypatch, tmp_path, shell)
    runner = spawn()
    monkeypatch.undo()  # the next runner is a real one
    with pytest.raises(RunError) as caught:
        runner.wait_ready(timeout)
    assert_one_line(caught.value, error)
    assert caught.value.recordings == []
    assert_gone(runner)


@pytest.mark.parametrize(
    ("ready", "message", "error"),
    [
        pytest.param(True, b"\x00garbage", r"\(not JSON: .*\)", id="not JSON"),
        pytest.param(
            True,
            b'{"v": 1, "type": "progress"}',
            rf"\(protocol version 1, expected {V}\)",
            id="other version",
        ),
        pytest.param(
            True,
            b'{"v": %d, "type": "recording", "path": 7}' % V,
            r"\(recording: field 'path' missing or of the wrong type\)",
            id="wrong field",
        ),
        pytest.param(
            False,
            b'{"v": %d, "type": "ready"}' % V,
            r"\(ready: field 'pid' .*\)",
            id="before ready",
        ),
    ],
)
@pytest.mark.usefixtures("next_runner_works")
def test_a_runner_sending_a_malformed_message_is_killed(
    monkeypatch, tmp_path, spawn, request_for, ready, message, error
):
    peer = tmp_path / "peer.py"
    peer.write_text(PEER.format(ready=ready, message=message, version=V))
    fake_runner(monkeypatch, tmp_path, f'exec "{sys.executable}" "{peer}" "$3"')
    runner = spawn()
    monkeypatch.undo()
    with pytest.raises(RunError) as caught:
        runner.run(request_for("acquire_iq"), 30)
    assert_one_line(caught.value, r"^the runner sent a malformed message " + error + "; killed$")
    assert runner.process.returncode == -signal.SIGKILL
    assert_gone(runner)
