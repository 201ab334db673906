"""Structured logs: one line per event, with the task's ``schedule_id`` and
``task_id`` on every line logged while the scheduler works on a task.

``SCOS_LOG_FORMAT=text`` (the default) writes ``time LEVEL logger: message`` and
then the fields as ``key=value``, for people and journald; ``json`` writes one JSON
object per line (``time``, ``level``, ``logger``, ``message`` and the fields), for
log collectors. Fields come from :func:`task_context` (a context variable, so it
follows the scheduler's code, not other threads) or from a call's ``extra``.
"""

import contextlib
import contextvars
import datetime
import json
import logging
import sys
from collections.abc import Iterator

FIELDS = ("schedule_id", "task_id")
_task: contextvars.ContextVar[dict | None] = contextvars.ContextVar("grscos_task", default=None)


@contextlib.contextmanager
def task_context(schedule_id: str, task_id: int) -> Iterator[None]:
    """Every line logged inside carries this task's ids."""
    token = _task.set({"schedule_id": schedule_id, "task_id": task_id})
    try:
        yield
    finally:
        _task.reset(token)


class _TaskFields(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in (_task.get() or {}).items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True


def _fields(record: logging.LogRecord) -> dict:
    return {name: getattr(record, name) for name in FIELDS if hasattr(record, name)}


def _time(record: logging.LogRecord) -> str:
    moment = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = f"{_time(record)} {record.levelname} {record.name}: {record.getMessage()}"
        fields = " ".join(f"{name}={value}" for name, value in _fields(record).items())
        if fields:
            line = f"{line} {fields}"
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        event = {
            "time": _time(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            event["exception"] = self.formatException(record.exc_info)
        return json.dumps(event, default=str)


def configure(level: str, log_format: str = "text") -> None:
    """Log to stderr at ``level`` in ``log_format`` (text or json), replacing any
    handler the root logger had."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(_TaskFields())
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
