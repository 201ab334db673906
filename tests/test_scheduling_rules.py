"""The scheduler's rules, exactly, against a clock the test moves (tests/scheduling.py):
which task runs first, when it is handed to its runner and when it starts, how
missed times collapse, when an entry stops, and how the loop survives what goes
wrong around it. No wall-clock time is involved: the machine's load cannot change
an outcome.
"""

import datetime
import logging
import re
import time

import pytest
from sqlalchemy import select

from grscos.scheduler import scheduler as scheduler_module
from grscos.scheduler.scheduler import RESTART_DETAIL, Clock, SchedulerBusyError
from grscos.scheduler.wake import WakeListener, wake
from grscos.storage.models import SchedulerState
from tests.scheduling import (
    FakeClock,
    Script,
    WallClock,
    add_entry,
    entry,
    make_scheduler,
    run_until,
    same_time,
    set_entry,
    task_results,
)

MISSED = re.compile(r"schedule (\S+): (\d+) task time\(s\) missed while busy or down")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def scheduler(tmp_path, clock):
    scheduler = make_scheduler(tmp_path, clock)
    yield scheduler
    scheduler.close()


def summary(results) -> list[tuple[str, int, str]]:
    return [(result.schedule_id, result.task_id, result.status) for result in results]


# --- order, priority, stops ----------------------------------------------------------------


def test_tasks_run_in_time_order_each_starting_on_its_time(scheduler, clock):
    add_entry(scheduler, "later", clock.at(20))
    add_entry(scheduler, "sooner", clock.at(10))
    run_until(scheduler, clock.at(30))
    results = task_results(scheduler)
    assert summary(results) == [("sooner", 1, "success"), ("later", 1, "success")]
    assert [result.scheduled for result in results] == [clock.at(10), clock.at(20)]
    assert all(same_time(result.started, result.scheduled) for result in results), results
    assert [result.recordings for result in results] == [1, 1]
    assert not entry(scheduler, "sooner").is_active
    assert entry(scheduler, "sooner").next_task_time is None


def test_of_the_due_tasks_the_lowest_priority_number_runs_first(scheduler, clock):
    """A long task keeps the sensor busy while two others come due: when it ends, the
    one with the lower priority number runs first, though it came due later."""
    scheduler.runners.scripts["acquire_m4s"] = Script(seconds=10)
    add_entry(scheduler, "busy", clock.at(1), action="acquire_m4s")
    add_entry(scheduler, "five", clock.at(2), priority=5)
    add_entry(scheduler, "minus-five", clock.at(5), priority=-5)
    add_entry(scheduler, "same-time-ten", clock.at(20), priority=10)
    add_entry(scheduler, "same-time-one", clock.at(20), priority=1)
    run_until(scheduler, clock.at(40))
    results = task_results(scheduler)
    assert [result.schedule_id for result in results] == [
        "busy",
        "minus-five",
        "five",
        "same-time-one",
        "same-time-ten",
    ]
    busy, minus_five, five = results[:3]
    build = datetime.timedelta(seconds=Script().build_seconds)
    assert same_time(minus_five.started, busy.finished + build)  # taken at once
    assert five.started >= minus_five.finished
    assert same_time(results[3].started, clock.at(20))


def test_an_interval_entry_runs_each_time_before_its_stop_then_deactivates(scheduler, clock):
    add_entry(scheduler, "every-two", clock.at(1), interval=2, stop=clock.at(8))
    run_until(scheduler, clock.at(20))
    results = task_results(scheduler)
    assert summary(results) == [("every-two", n, "success") for n in (1, 2, 3, 4)]
    assert [result.scheduled for result in results] == [clock.at(t) for t in (1, 3, 5, 7)]
    assert all(same_time(result.started, result.scheduled) for result in results)
    stopped = entry(scheduler, "every-two")
    assert (stopped.is_active, stopped.next_task_time, stopped.next_task_id) == (False, None, 5)


def test_a_deactivated_entry_runs_no_more_tasks(scheduler, clock):
    add_entry(scheduler, "every-second", clock.at(0), interval=1)
    run_until(scheduler, clock.at(2.2))
    assert len(task_results(scheduler)) == 3
    set_entry(scheduler, "every-second", is_active=False)
    run_until(scheduler, clock.at(10))
    assert len(task_results(scheduler)) == 3


def test_missed_times_collapse_into_one_task_and_the_grid_goes_on(scheduler, clock, caplog):
    caplog.set_level(logging.WARNING, logger=scheduler_module.__name__)
    add_entry(scheduler, "missed", clock.at(-5.5), interval=1)
    run_until(scheduler, clock.at(3))
    results = task_results(scheduler)
    assert [result.scheduled for result in results[:4]] == [
        clock.at(t) for t in (-0.5, 0.5, 1.5, 2.5)
    ]
    assert [result.task_id for result in results[:4]] == [1, 2, 3, 4]
    assert summary(results).count(("missed", 1, "success")) == 1
    matches = [MISSED.match(record.getMessage()) for record in caplog.records]
    (message,) = [match for match in matches if match]
    assert message.groups() == ("missed", "5")


def test_a_long_task_makes_the_next_interval_times_collapse(scheduler, clock):
    scheduler.runners.scripts["acquire_m4s"] = Script(seconds=3.5)
    add_entry(scheduler, "slow", clock.at(0), interval=1, action="acquire_m4s")
    run_until(scheduler, clock.at(9))
    results = task_results(scheduler)
    # Each task ends 3.5 s after its start: the next one is the latest time passed.
    assert [result.scheduled for result in results[:3]] == [clock.at(t) for t in (0, 3, 7)]


# --- lead time ---------------------------------------------------------------------------


def test_a_task_is_handed_to_its_runner_ahead_of_its_time_by_the_lead(scheduler, clock):
    """The lead is 0.5 s plus twice the longest recent flowgraph build: a task whose
    build took 2 s makes the next one go to its runner 4.5 s ahead, so it starts on
    time."""
    scheduler.runners.default = Script(build_seconds=2.0)
    add_entry(scheduler, "first", clock.at(10))
    add_entry(scheduler, "second", clock.at(30))
    run_until(scheduler, clock.at(40))
    first, second = scheduler.runners.runs
    assert first.handed == clock.at(9.5)  # the lead without any build seen: 0.5 s
    assert first.started == clock.at(11.5)  # its 2 s build made it late
    assert second.handed == clock.at(25.5)  # 0.5 + 2 x 2 s
    assert second.started == clock.at(30)
    assert scheduler.lead == datetime.timedelta(seconds=4.5)


def test_the_lead_is_capped(scheduler, clock):
    scheduler.runners.default = Script(build_seconds=100)
    add_entry(scheduler, "slow-device", clock.at(0))
    run_until(scheduler, clock.at(200))
    assert scheduler.lead == datetime.timedelta(seconds=scheduler_module.MAX_LEAD_SECONDS)


# --- what goes wrong around the loop -------------------------------------------------------


def test_the_wake_listener_can_be_asked_without_waiting(tmp_path):
    listener = WakeListener(tmp_path)
    try:
        assert listener.wait(0.0) is False
        assert listener.wait(-1.0) is False
        assert wake(tmp_path) and wake(tmp_path)
        assert listener.wait(0.0) is True  # both wake-ups read at once
        assert listener.wait(0.0) is False
        assert listener.wait(0.01) is False  # and it still waits when asked to
    finally:
        listener.close()


def test_a_heartbeat_slower_than_the_time_left_does_not_end_the_loop(tmp_path, monkeypatch):
    """The idle heartbeat's write took longer than the time left before the next task:
    the scheduler then sleeps 0 s, which made the wake socket raise BlockingIOError
    and ended ``gr-scos run``. In real time, with the real wake socket."""
    clock = WallClock()
    scheduler = make_scheduler(tmp_path, clock)
    beat = scheduler._beat
    slept = []

    def slow_beat(*args, **kwargs):
        beat(*args, **kwargs)
        time.sleep(1.0)

    def sleep(wake_listener, seconds):
        slept.append(seconds)
        return Clock.sleep(clock, wake_listener, seconds)

    monkeypatch.setattr(scheduler, "_beat", slow_beat)
    monkeypatch.setattr(clock, "sleep", sleep)
    try:
        add_entry(scheduler, "soon", clock.now() + datetime.timedelta(seconds=0.7))
        while not task_results(scheduler):
            scheduler.step()
        assert min(slept) < 0  # the time left was gone when it came to sleep
        assert summary(task_results(scheduler)) == [("soon", 1, "success")]
    finally:
        scheduler.close()


def serve(scheduler, clock: FakeClock, until: float) -> int:
    """``serve_forever`` on the fake clock, shut down once it has slept past ``until``."""
    clock.call_at(clock.at(until), scheduler.shutdown)
    return scheduler.serve_forever()


def test_an_unexpected_error_is_logged_with_its_traceback_and_the_loop_goes_on(
    tmp_path, clock, caplog, monkeypatch
):
    caplog.set_level(logging.ERROR, logger=scheduler_module.__name__)
    scheduler = make_scheduler(tmp_path, clock, start=False)
    add_entry(scheduler, "after-the-error", clock.at(5))
    next_due = scheduler.next_due
    calls = []

    def fails_once():
        calls.append(clock.now())
        if len(calls) == 1:
            raise RuntimeError("a bug in the loop")
        return next_due()

    monkeypatch.setattr(scheduler, "next_due", fails_once)
    assert serve(scheduler, clock, until=30) == 0
    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "unexpected error in the scheduler's loop" in record.getMessage()
    assert record.exc_info and "a bug in the loop" in str(record.exc_info[1])
    assert summary(task_results(scheduler)) == [("after-the-error", 1, "success")]


def test_unexpected_errors_in_a_row_end_the_scheduler_with_status_3(
    tmp_path, clock, caplog, monkeypatch
):
    caplog.set_level(logging.ERROR, logger=scheduler_module.__name__)
    scheduler = make_scheduler(tmp_path, clock, start=False)

    def always_fails():
        raise RuntimeError("a lasting bug")

    monkeypatch.setattr(scheduler, "next_due", always_fails)
    assert serve(scheduler, clock, until=10_000) == 3
    final = caplog.records[-1]
    assert final.levelno == logging.CRITICAL
    assert (
        f"{scheduler_module.MAX_UNEXPECTED_ERRORS} unexpected errors in a row" in final.getMessage()
    )
    assert "a lasting bug" in str(final.exc_info[1])
    # Backing off between them: 1, 2, 4 ... at most a minute.
    assert clock.slept[:4] == [1.0, 2.0, 4.0, 8.0] and max(clock.slept) == 60.0
    with scheduler.database.sessions() as db:
        assert db.scalar(select(SchedulerState)) is None  # closed: /status says dead


def test_a_task_folder_the_database_does_not_know_is_never_written_over(scheduler, clock, caplog):
    """After lost database writes (a deleted SQLite -wal file), the entry would hand
    out a task id whose recordings are still on disk."""
    caplog.set_level(logging.WARNING, logger=scheduler_module.__name__)
    left = scheduler.settings.data_dir / "entry" / "1"
    left.mkdir(parents=True)
    (left / "kept.sigmf-data").write_bytes(b"data")
    add_entry(scheduler, "entry", clock.at(1))
    run_until(scheduler, clock.at(5))
    assert summary(task_results(scheduler)) == [("entry", 2, "success")]
    assert (left / "kept.sigmf-data").read_bytes() == b"data"
    assert any("gr-scos db check" in record.getMessage() for record in caplog.records)


def test_a_second_scheduler_on_the_same_home_refuses_to_start(scheduler, tmp_path, clock):
    second = make_scheduler(tmp_path, clock, start=False)
    with pytest.raises(
        SchedulerBusyError, match=rf"another scheduler \(pid \d+\) runs the sensor in {tmp_path}"
    ):
        second.serve_forever()
    # The first one is untouched.
    with scheduler.database.sessions() as db:
        assert db.scalar(select(SchedulerState)).state == "idle"
    add_entry(scheduler, "still-runs", clock.at(1))
    run_until(scheduler, clock.at(3))
    assert summary(task_results(scheduler)) == [("still-runs", 1, "success")]


def test_a_journaled_result_is_recorded_at_the_next_start(tmp_path, clock):
    """A task finished, but the scheduler stopped before its result reached the
    database: the next start records it, recordings and all, instead of failing it
    as interrupted."""
    scheduler = make_scheduler(tmp_path, clock)
    add_entry(scheduler, "journaled", clock.at(0.5))  # within the lead: taken now
    task = scheduler.take("journaled")
    finished = scheduler._execute(task)
    scheduler.journal.write(finished)
    scheduler.close()
    assert summary(task_results(scheduler)) == [("journaled", 1, "in-progress")]

    restarted = make_scheduler(tmp_path, clock)
    try:
        (result,) = task_results(restarted)
        assert (result.status, result.recordings, result.detail) == ("success", 1, "")
        assert result.detail != RESTART_DETAIL
        assert restarted.journal.pending() == []
    finally:
        restarted.close()


def test_the_data_directory_is_checked_at_start_up_and_then_while_idle(
    tmp_path, clock, monkeypatch
):
    """A recording no acquisition owns (a lost database write) becomes a /status
    problem at the next check, without anyone running `gr-scos db check`."""
    monkeypatch.setattr(scheduler_module, "CHECK_INTERVAL_SECONDS", 60.0)
    orphan = tmp_path / "data" / "lost-entry" / "7"
    orphan.mkdir(parents=True)
    (orphan / "r.sigmf-data").write_bytes(bytes(8))
    scheduler = make_scheduler(tmp_path, clock)
    try:

        def summary_now() -> str | None:
            with scheduler.database.sessions() as db:
                return db.scalar(select(SchedulerState.check_summary))

        assert "lost-entry/7" in summary_now()  # found at start-up
        (orphan / "r.sigmf-data").unlink()
        orphan.rmdir()
        run_until(scheduler, clock.at(30))
        assert "lost-entry/7" in summary_now()  # not checked again yet
        run_until(scheduler, clock.at(70))
        assert summary_now() is None
    finally:
        scheduler.close()
