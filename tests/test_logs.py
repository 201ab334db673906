"""Structured logs: one line per event, the task's ids on every line the scheduler
logs for a task, as key=value text or as JSON."""

import json
import logging

import pytest

from grscos import logs


@pytest.fixture
def configured(capsys):
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level

    def configure(log_format: str) -> None:
        logs.configure("INFO", log_format)

    yield configure
    root.handlers[:] = handlers
    root.setLevel(level)


def test_text_lines_carry_the_task_ids_inside_a_task_context(configured, capsys):
    configured("text")
    logger = logging.getLogger("grscos.scheduler.scheduler")
    logger.info("outside")
    with logs.task_context("entry-1", 7):
        logger.info("acquire_iq starts")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    assert lines[0].endswith(" INFO grscos.scheduler.scheduler: outside")
    assert lines[1].endswith(
        " INFO grscos.scheduler.scheduler: acquire_iq starts schedule_id=entry-1 task_id=7"
    )


def test_json_lines_are_one_object_per_event(configured, capsys):
    configured("json")
    with logs.task_context("entry-2", 3):
        logging.getLogger("grscos.x").warning("two\nlines")
    logging.getLogger("grscos.y").error("by extra", extra={"schedule_id": "e", "task_id": 1})
    lines = capsys.readouterr().err.splitlines()
    events = [json.loads(line) for line in lines]
    assert len(events) == 2
    assert events[0]["message"] == "two\nlines"
    assert (events[0]["schedule_id"], events[0]["task_id"], events[0]["level"]) == (
        "entry-2",
        3,
        "WARNING",
    )
    assert events[0]["time"].endswith("Z")
    assert (events[1]["schedule_id"], events[1]["task_id"]) == ("e", 1)
