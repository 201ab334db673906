"""Messages between the scheduler and a runner process, over a ZeroMQ PAIR socket.

Each message is one JSON object with the protocol version ``v`` and a ``type``.
The scheduler binds the socket (``ipc://``) and the runner connects to it, as soon
as it starts: heartbeats and pongs come before ``ready``.

Runner to scheduler:

=============  =================================================================
``ready``      ``pid``: the runner has imported GNU Radio and the flowgraphs and
               waits for its task
``heartbeat``  sent every ``HEARTBEAT_SECONDS`` while the runner waits (for its
               imports to end, for its task, or for the task's ``start_at``)
``pong``       the answer to ``ping``
``started``    the flowgraph is running: ``at`` (Unix seconds) when it started,
               ``build_seconds`` how long building it took
``progress``   ``seconds``, ``samples``, ``recordings`` so far; sent every
               ``HEARTBEAT_SECONDS`` while the task runs, so it is its heartbeat
``recording``  ``path``: a finished recording's ``.sigmf-meta``
``finished``   ``status`` (``success`` or ``fail``), ``detail``, ``recordings``,
               ``overflows``, ``samples``; the runner then exits
=============  =================================================================

Scheduler to runner:

=============  =================================================================
``task``       ``request``: ``{"name", "source", "arguments"}`` of the flowgraph
               (``grscos.actions.flowgraphs``) to build and run, once; ``start_at``
               (Unix seconds): build it now, start it then (at once if it has passed)
``stop``       ``reason``: stop the flowgraph now (it ends ``fail`` with the reason,
               without starting if it was waiting for ``start_at``)
``ping``       are you alive? The runner's main thread answers ``pong`` at once,
               whatever it does, also while it imports (before ``ready``); the
               scheduler asks a spare runner before handing it a task
=============  =================================================================

A message that is not valid JSON, has another version, an unknown type or lacks a
field raises :class:`ProtocolError`; the receiving side treats its peer as broken.
"""

import json
from typing import Any

# 2: task start_at, started at and build_seconds; 3: ping and pong, heartbeats while importing
VERSION = 3
HEARTBEAT_SECONDS = 0.25

FIELDS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "ready": {"pid": int},
    "heartbeat": {},
    "pong": {},
    "started": {"at": (int, float), "build_seconds": (int, float)},
    "progress": {"seconds": (int, float), "samples": int, "recordings": int},
    "recording": {"path": str},
    "finished": {
        "status": str,
        "detail": str,
        "recordings": list,
        "overflows": int,
        "samples": int,
    },
    "task": {"request": dict, "start_at": (int, float)},
    "stop": {"reason": str},
    "ping": {},
}
STATUSES = ("success", "fail")
# Starts the part of a ``finished`` detail that is the signal analyzer's problem.
SIGAN_PROBLEM = "signal analyzer: "


class ProtocolError(ValueError):
    """A malformed message; the text says what is wrong with it."""


def encode(kind: str, **fields: Any) -> bytes:
    """A message of type ``kind``, checked as the receiver will check it."""
    message = {"v": VERSION, "type": kind, **fields}
    check(message)
    return json.dumps(message).encode()


def decode(data: bytes) -> dict:
    try:
        message = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ProtocolError(f"not JSON: {error}") from None
    check(message)
    return message


def check(message: object) -> None:
    if not isinstance(message, dict):
        raise ProtocolError("a message must be a JSON object")
    version = message.get("v")
    if type(version) is not int or version != VERSION:  # not true, not 1.0
        raise ProtocolError(f"protocol version {version!r}, expected {VERSION}")
    kind = message.get("type")
    if kind not in FIELDS:
        raise ProtocolError(f"unknown message type {kind!r}")
    for name, expected in FIELDS[kind].items():
        value = message.get(name)
        if not isinstance(value, expected) or isinstance(value, bool):
            raise ProtocolError(f"{kind}: field {name!r} missing or of the wrong type")
    if kind == "finished" and message["status"] not in STATUSES:
        raise ProtocolError(f"finished: status must be one of {', '.join(STATUSES)}")
