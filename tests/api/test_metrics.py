"""``GET /api/v1/metrics`` (Prometheus text format), on both database backends.

The exposition is parsed with prometheus_client's own parser, as Prometheus would
read it. Counters are made by the real scheduler, notifier and quota code; the
end-to-end test runs tasks through a scheduler thread as ``test_scheduler.py`` does.
"""

import threading
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from grscos.scheduler.journal import Finished
from grscos.scheduler.scheduler import Scheduler
from grscos.storage import metrics, quota
from grscos.storage.models import TaskResult, utc_now
from tests.api import test_callbacks, test_scheduler
from tests.api.conftest import ADMIN_ACTION, Api
from tests.api.test_callbacks import queue
from tests.api.test_scheduler import wait_for_results
from tests.test_acquire import OWNER_FLOWGRAPH, write_config
from tests.test_quota import SmallDisk, add_recordings
from tests.waiting import wait_for

METRICS = "/api/v1/metrics"
# Fixtures shared with the scheduler's and the notifier's tests.
in_thread = test_scheduler.in_thread
notifiers = test_callbacks.notifiers
receiver = test_callbacks.receiver
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(scope="module")
def api_config(tmp_path_factory) -> Path:
    """The scheduler tests' actions (``test_scheduler.py``) and the admin-only one."""
    return write_config(
        tmp_path_factory.mktemp("metrics-config"),
        test_scheduler.TEST_ACTIONS + ADMIN_ACTION,
        OWNER_FLOWGRAPH,
    )


def scrape(api: Api, user: str = "admin") -> Samples:
    """Every sample, keyed by (name, sorted labels), after checking the answer."""
    response = api.get(METRICS, user=user)
    assert response.status_code == 200, response.data[:300]
    assert response.content_type == "text/plain; version=0.0.4; charset=utf-8"
    samples = {}
    for family in text_string_to_metric_families(response.data.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def test_metrics_need_a_token_and_any_user_may_read_them(api):
    response = api.get(METRICS, user=None)
    assert response.status_code == 401
    assert "WWW-Authenticate" in response.headers
    assert value(scrape(api, user="alice"), "scos_schedule_entries", active="true") == 0


def test_non_admins_see_the_counts_of_the_actions_they_may_see_only(api):
    """As in /capabilities: an admin-only action, or one no longer configured, is
    counted for admins alone."""
    with api.database.session() as db:
        for action in ("acquire_iq", "admin_calibrate", "retired"):
            metrics.count(db, metrics.TASKS, action=action, status="success")
            metrics.count(db, metrics.RECORDINGS, action=action)
            metrics.count(db, metrics.OVERFLOWS, action=action)
            metrics.observe(db, metrics.TASK_DURATION, 1.0, action=action)
        metrics.count(db, metrics.NOTIFICATION_ATTEMPTS, outcome="delivered")

    def actions(samples: Samples) -> set[str]:
        return {dict(labels)["action"] for _, labels in samples if "action" in dict(labels)}

    everything = {"acquire_iq", "admin_calibrate", "retired"}
    assert actions(scrape(api, user="admin")) == everything
    for user in ("alice", "bob"):
        samples = scrape(api, user=user)
        assert actions(samples) == {"acquire_iq"}
        assert value(samples, "scos_tasks_total", action="acquire_iq", status="success") == 1
        assert value(samples, "scos_task_duration_seconds_count", action="acquire_iq") == 1
        assert value(samples, "scos_notification_attempts_total", outcome="delivered") == 1
        listed = api.get("/api/v1/capabilities", user=user).json["actions"]
        assert actions(samples) <= {action["name"] for action in listed}


def test_a_sensor_without_scheduler_shows_it_dead_and_unhealthy(api):
    samples = scrape(api)
    assert value(samples, "scos_healthy") == 0
    assert value(samples, "scos_scheduler_state", state="dead") == 1
    assert value(samples, "scos_scheduler_state", state="idle") == 0
    assert value(samples, "scos_disk_usage_limit_ratio") == pytest.approx(0.85)
    assert value(samples, "scos_disk_size_bytes") > value(samples, "scos_disk_used_bytes") > 0
    info = [key for key in samples if key[0] == "scos_sensor_info"]
    assert len(info) == 1 and ("sensor_id", "gr-scos-sim") in info[0][1]


def test_counters_add_up_across_writers_and_histograms_are_cumulative(api):
    def count(times: int) -> None:
        for _ in range(times):
            with api.database.session() as db:
                metrics.count(db, metrics.TASKS, action="a", status="success")

    writers = [threading.Thread(target=count, args=(50,)) for _ in range(4)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    with api.database.session() as db:
        for seconds in (0.05, 0.3, 0.3, 7, 5000):
            metrics.observe(db, metrics.TASK_DURATION, seconds, action="a")
    samples = scrape(api)
    assert value(samples, "scos_tasks_total", action="a", status="success") == 200
    bucket = "scos_task_duration_seconds_bucket"
    assert value(samples, bucket, action="a", le="0.1") == 1
    assert value(samples, bucket, action="a", le="0.25") == 1
    assert value(samples, bucket, action="a", le="0.5") == 3
    assert value(samples, bucket, action="a", le="10.0") == 4
    assert value(samples, bucket, action="a", le="1800.0") == 4
    assert value(samples, bucket, action="a", le="+Inf") == 5
    assert value(samples, "scos_task_duration_seconds_count", action="a") == 5
    assert value(samples, "scos_task_duration_seconds_sum", action="a") == pytest.approx(5007.65)


def test_a_metric_refuses_labels_it_does_not_have(api):
    with api.database.session() as db:
        with pytest.raises(ValueError, match="takes the labels"):
            metrics.count(db, metrics.TASKS, action="a")
        with pytest.raises(ValueError, match="histogram"):
            metrics.count(db, metrics.TASK_DURATION, action="a")
        with pytest.raises(ValueError, match="counter"):
            metrics.observe(db, metrics.OVERFLOWS, 1.0, action="a")


def test_tasks_by_status_and_duration_outlive_their_entries(api, in_thread):
    in_thread()
    broken = api.schedule(name="broken", action="broken", priority=0)
    working = api.schedule(name="working", action="acquire_iq", priority=1)
    (failed,) = wait_for_results(api, broken["id"], 1, timeout=15)
    (succeeded,) = wait_for_results(api, working["id"], 1, timeout=15)
    assert (failed["status"], succeeded["status"]) == ("fail", "success")

    samples = scrape(api)
    assert value(samples, "scos_tasks_total", action="broken", status="fail") == 1
    assert value(samples, "scos_tasks_total", action="acquire_iq", status="success") == 1
    assert value(samples, "scos_task_duration_seconds_count", action="acquire_iq") == 1
    assert 0 < value(samples, "scos_task_duration_seconds_sum", action="acquire_iq") < 15
    assert value(samples, "scos_recordings_total", action="acquire_iq") == 1
    assert value(samples, "scos_stored_recordings") == 1
    assert value(samples, "scos_stored_recording_bytes") > 0
    assert value(samples, "scos_consecutive_failures") == 0  # the success came last
    assert value(samples, "scos_healthy") == 1
    assert value(samples, "scos_scheduler_state", state="dead") == 0

    for entry in (broken, working):
        assert api.delete(f"/api/v1/schedule/{entry['id']}").status_code == 204
    after = scrape(api)
    assert value(after, "scos_tasks_total", action="broken", status="fail") == 1
    assert value(after, "scos_tasks_total", action="acquire_iq", status="success") == 1
    assert value(after, "scos_recordings_total", action="acquire_iq") == 1
    assert value(after, "scos_stored_recordings") == 0
    assert value(after, "scos_schedule_entries", active="false") == 0


def test_overflows_of_a_task_are_counted_by_action(api):
    entry = api.schedule(name="overflowing")
    task_id = api.add_task(entry["id"], status="in-progress")
    with api.database.sessions() as db:
        result_id = db.scalar(
            select(TaskResult.id).where(
                TaskResult.schedule_entry_id == entry["id"], TaskResult.task_id == task_id
            )
        )
    folder = api.settings.data_dir / entry["id"] / str(task_id)
    finished = Finished(
        result_id=result_id,
        schedule_id=entry["id"],
        task_id=task_id,
        action="acquire_iq",
        folder=str(folder),
        finished=utc_now(),
        started=utc_now(),
        detail=None,
        overflows=3,
    )
    scheduler = Scheduler(api.settings, device="sim")
    try:
        scheduler._record(finished)
    finally:
        scheduler.database.dispose()
    assert value(scrape(api), "scos_overflows_total", action="acquire_iq") == 3


def test_notification_attempts_count_the_retries(api, notifiers, receiver):
    receiver.status = 503
    entry = api.schedule(callback_url=receiver.url())
    task_id = api.add_task(entry["id"])
    notifier = notifiers()
    notifier.start()
    queue(api, notifier, entry["id"], task_id)
    wait_for(lambda: len(receiver.requests) >= 2)
    receiver.status = 201
    wait_for(lambda: value(scrape(api), "scos_notifications_total", state="delivered"))
    samples = scrape(api)
    errors = value(samples, "scos_notification_attempts_total", outcome="error")
    assert errors >= 2
    assert value(samples, "scos_notification_attempts_total", outcome="delivered") == 1
    assert errors + 1 == len(receiver.requests)
    assert value(samples, "scos_notifications_pending") == 0
    assert value(samples, "scos_notifications_total", state="failed") is None


def test_quota_deletions_are_counted(api):
    add_recordings(api.database, "old", 3, utc_now())
    result = quota.enforce(api.database, 40.0, SmallDisk(api.database.data_dir, total=4 << 20))
    assert result.deleted == 2
    assert value(scrape(api), "scos_quota_deleted_acquisitions_total") == 2
