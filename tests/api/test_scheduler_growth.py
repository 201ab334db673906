"""The scheduler's work for a task does not grow with the tasks its entry has run.

Issue 13: a sensor running one task a second grew by ~60 KB per task. Taking each
task loaded every earlier result of its entry (to append the new one to
``entry.task_results``), and with them their notifications through a ``SELECT ...
IN (?, ?, ..., ?)`` with one placeholder per result: a new SQL text for every task,
each kept prepared in SQLite's statement cache. The growth is measured over
thousands of tasks by the soak benchmark; this test checks, deterministically, that
the scheduler reads no earlier result at all, on both database backends.
"""

import datetime
import threading

from sqlalchemy import event, insert, update

from grscos.scheduler.scheduler import Scheduler
from grscos.storage.models import ScheduleEntry, TaskResult, utc_now
from tests.waiting import wait_for

EARLIER_TASKS = 1000
SCHEDULER_THREAD = "scheduler"


def add_earlier_results(api, schedule_id: str, count: int) -> None:
    """``count`` finished results of the entry, as if it had run that many tasks."""
    moment = utc_now() - datetime.timedelta(days=1)
    with api.database.session() as db:
        db.execute(
            insert(TaskResult),
            [
                {
                    "schedule_entry_id": schedule_id,
                    "task_id": task_id,
                    "scheduled": moment,
                    "started": moment,
                    "finished": moment,
                    "status": "success",
                    "detail": "",
                }
                for task_id in range(1, count + 1)
            ],
        )
        db.execute(
            update(ScheduleEntry)
            .where(ScheduleEntry.id == schedule_id)
            .values(next_task_id=count + 1)
        )


def finished_task(api, schedule_id: str, task_id: int) -> dict | None:
    """The task as the API shows it once it has finished, else None."""
    response = api.get(f"/api/v1/schedule/{schedule_id}/tasks/{task_id}")
    if response.status_code == 200 and response.json["status"] in ("success", "fail"):
        return response.json
    return None


def test_a_task_reads_none_of_the_earlier_results_of_its_entry(api):
    entry = api.schedule(name="after a thousand tasks")
    add_earlier_results(api, entry["id"], EARLIER_TASKS)
    loaded: list[int] = []

    def count_load(result: TaskResult, _context) -> None:
        if threading.current_thread().name == SCHEDULER_THREAD:  # not the API's reads
            loaded.append(result.task_id)

    event.listen(TaskResult, "load", count_load)
    scheduler = Scheduler(api.settings, device="sim")
    thread = threading.Thread(target=scheduler.serve_forever, name=SCHEDULER_THREAD, daemon=True)
    thread.start()
    try:
        new_task = EARLIER_TASKS + 1
        done = wait_for(
            lambda: finished_task(api, entry["id"], new_task), 60, f"task {new_task} finished"
        )
    finally:
        scheduler.shutdown()
        thread.join(30)
        event.remove(TaskResult, "load", count_load)
    assert not thread.is_alive(), "the scheduler did not stop"
    assert done["status"] == "success", done
    assert done["recordings"] == 1
    # Only the task's own result is read back (to record its outcome).
    assert loaded == [new_task], (
        f"the scheduler loaded {len(loaded)} task results for one task: "
        f"task ids {sorted(set(loaded))[:5]}..."
    )
