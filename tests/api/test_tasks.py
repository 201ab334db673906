"""Tasks (Tables 11, 12, 24, 25), their SigMF archives, the upcoming and completed
task lists, /status (Table 4), /capabilities (Table 6) and the API root.

Every test runs on SQLite and on PostgreSQL (the ``api`` fixture)."""

import dataclasses
import datetime
import hashlib
import io
import json
import shutil
import tarfile
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
import sigmf
from sigmf import sigmffile
from sqlalchemy import select

from grscos.config import Config
from grscos.storage.models import ScheduleEntry, SchedulerState, TaskResult, utc_now

API = "/api/v1"
HOST = "http://localhost"
UTC = datetime.UTC
SECOND = datetime.timedelta(seconds=1)
TASK_FIELDS = {
    "schedule_id",
    "schedule_name",
    "sensor_id",
    "task_id",
    "started",
    "finished",
    "duration",
    "status",
    "recordings",
    "url",
}
# the scheduled task: no finished, duration, detail, recordings or archive_id
SCHEDULED_FIELDS = TASK_FIELDS - {"finished", "duration", "recordings"}


# -- helpers ---------------------------------------------------------------------------


def iso(moment: datetime.datetime) -> str:
    """How the API writes a time: ISO 8601 UTC, milliseconds, Z."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse(text: str) -> datetime.datetime:
    assert text.endswith("Z"), text
    return datetime.datetime.fromisoformat(text[:-1]).replace(tzinfo=UTC)


def tasks_url(schedule_id: str, *rest) -> str:
    return "/".join([f"{API}/schedule/{schedule_id}/tasks", *map(str, rest)])


def sensor_id(api) -> str:
    return Config.load(api.settings.config_dir).sensor["sensor_spec"]["id"]


def entry_json(api, schedule_id: str) -> dict:
    response = api.get(f"{API}/schedule/{schedule_id}")
    assert response.status_code == 200, response.json
    return response.json


def task_folder(api, schedule_id: str, task_id: int) -> Path:
    return api.settings.data_dir / schedule_id / str(task_id)


def task_files(api, schedule_id: str, task_id: int, metas: list[Path]) -> list[Path]:
    """The data and meta files of a task's copies of ``metas``."""
    folder = task_folder(api, schedule_id, task_id)
    return [
        folder / meta.with_suffix(suffix).name
        for meta in metas
        for suffix in (".sigmf-data", ".sigmf-meta")
    ]


def existing_files(paths: list[Path]) -> list[Path]:
    return [path for path in paths if path.exists()]


def set_times(api, schedule_id: str, task_id: int, started, finished) -> None:
    with api.database.session() as db:
        result = db.query(TaskResult).filter_by(schedule_entry_id=schedule_id, task_id=task_id)
        result = result.one()
        result.started = started
        result.finished = finished


def assert_json_error(response, status: int) -> str:
    assert response.status_code == status, response.data[:500]
    assert response.mimetype == "application/json"
    assert isinstance(response.json["message"], str) and response.json["message"]
    return response.json["message"]


def results_of(api, url: str, user: str = "admin") -> dict:
    response = api.get(url, user=user)
    assert response.status_code == 200, response.json
    return response.json


def tar_members(body: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:") as tar:
        return tar.getmembers()


def check_archive(body: bytes, expected: list[tuple[str, Path]], tmp_path: Path) -> None:
    """``body`` is a tar of exactly the SigMF archives ``expected`` (member name
    without suffix, original meta path), each one equal to its original recording."""
    members = tar_members(body)
    assert [member.name for member in members] == [f"{name}.sigmf" for name, _ in expected]
    assert all(member.isfile() for member in members)
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:") as tar:
        for (name, original_meta), member in zip(expected, members, strict=True):
            inner = tar.extractfile(member).read()
            path = tmp_path / f"{name}.sigmf"
            path.write_bytes(inner)
            original_data = original_meta.with_suffix(".sigmf-data").read_bytes()
            original_metadata = json.loads(original_meta.read_text())
            with tarfile.open(fileobj=io.BytesIO(inner), mode="r:") as sigmf_tar:
                inner_names = sigmf_tar.getnames()
                assert f"{name}/{name}.sigmf-meta" in inner_names
                assert f"{name}/{name}.sigmf-data" in inner_names
                meta = json.load(sigmf_tar.extractfile(f"{name}/{name}.sigmf-meta"))
                data = sigmf_tar.extractfile(f"{name}/{name}.sigmf-data").read()
            assert meta == original_metadata
            assert data == original_data
            digest = hashlib.sha512(data).hexdigest()
            assert meta["global"]["core:sha512"] == digest
            assert hashlib.sha512(original_data).hexdigest() == digest
            # fromarchive checks core:sha512 against the data it finds in the archive.
            archived = sigmf.fromarchive(str(path))
            assert archived.get_global_field("core:sha512") == digest
            original = sigmffile.fromfile(str(original_meta))
            samples = archived.read_samples()
            assert samples.size > 0
            assert np.array_equal(samples, original.read_samples())


def get_archive(api, url: str, filename: str, user: str = "admin") -> bytes:
    response = api.get(url, user=user)
    assert response.status_code == 200, response.data[:500]
    assert response.mimetype == "application/x-tar"
    body = response.data
    assert int(response.headers["Content-Length"]) == len(body)
    assert response.headers["Content-Disposition"] == f'attachment; filename="{filename}"'
    return body


# -- GET /schedule/{id}/tasks -------------------------------------------------------


def test_list_results_then_the_scheduled_task(api, recordings):
    entry = api.schedule(name="Survey 1", schedule_id="survey", interval=600)
    sid = entry["id"]
    t0 = utc_now().replace(microsecond=123456) - datetime.timedelta(hours=3)
    iq, stepped = recordings["acquire_iq"], recordings["acquire_stepped_iq"]
    api.add_task(sid, iq, started=t0)
    api.add_task(sid, [], status="fail", detail="sigan overload", started=t0 + 600 * SECOND)
    api.add_task(sid, stepped, started=t0 + 1200 * SECOND)
    api.add_task(sid, [], status="in-progress", started=t0 + 1800 * SECOND)
    entry = entry_json(api, sid)
    assert entry["next_task_id"] == 5

    page = results_of(api, tasks_url(sid))
    assert page["count"] == 5
    assert "next" not in page and "previous" not in page
    results = page["results"]
    assert [item["task_id"] for item in results] == [1, 2, 3, 4, 5]
    assert [item["status"] for item in results] == [
        "success",
        "fail",
        "success",
        "in-progress",
        "scheduled",
    ]
    for item in results:
        assert item["schedule_id"] == sid
        assert item["schedule_name"] == "Survey 1"
        assert item["sensor_id"] == sensor_id(api) == "gr-scos-sim"
        assert item["url"] == f"{HOST}{tasks_url(sid, item['task_id'])}"

    success, fail, stepped_task, running, scheduled = results
    assert set(success) == TASK_FIELDS | {"archive_id"}
    assert success["started"] == iso(t0)
    assert success["finished"] == iso(t0 + 1.5 * SECOND)
    assert success["duration"] == "00:00:01.500000"
    assert success["recordings"] == 1
    assert success["archive_id"] == f"{HOST}{tasks_url(sid, 1, 'archive')}"

    assert set(fail) == TASK_FIELDS | {"detail"}
    assert fail["detail"] == "sigan overload"
    assert fail["recordings"] == 0

    assert stepped_task["recordings"] == 3
    assert stepped_task["archive_id"] == f"{HOST}{tasks_url(sid, 3, 'archive')}"
    assert "detail" not in stepped_task

    assert set(running) == TASK_FIELDS - {"finished", "duration"}
    assert running["started"] == iso(t0 + 1800 * SECOND)

    assert set(scheduled) == SCHEDULED_FIELDS
    assert scheduled["task_id"] == entry["next_task_id"]
    assert scheduled["started"] == entry["next_task_time"]


def test_archive_id_resolves(api, recordings):
    sid = api.schedule(interval=60)["id"]
    api.add_task(sid, recordings["acquire_iq"])
    item = results_of(api, tasks_url(sid))["results"][0]
    response = api.get(item["archive_id"])
    assert response.status_code == 200
    assert response.mimetype == "application/x-tar"
    assert api.get(item["url"]).json["task_id"] == item["task_id"]


DURATIONS = [
    (datetime.timedelta(microseconds=1), "00:00:00.000001"),
    (datetime.timedelta(seconds=59, microseconds=999999), "00:00:59.999999"),
    (datetime.timedelta(hours=1, minutes=2, seconds=3, microseconds=250000), "01:02:03.250000"),
    (datetime.timedelta(hours=1) - datetime.timedelta(microseconds=1), "00:59:59.999999"),
    (datetime.timedelta(days=2, seconds=1), "48:00:01.000000"),
    (datetime.timedelta(0), "00:00:00.000000"),
]


def test_duration_is_finished_minus_started(api):
    sid = api.schedule(interval=60)["id"]
    started = datetime.datetime(2026, 3, 1, 12, 0, 0, 500000, tzinfo=UTC)
    for duration, _ in DURATIONS:
        set_times(api, sid, api.add_task(sid), started, started + duration)
    items = results_of(api, tasks_url(sid))["results"][: len(DURATIONS)]
    for item, (duration, text) in zip(items, DURATIONS, strict=True):
        assert item["duration"] == text, duration
        assert item["started"] == iso(started)
        assert item["finished"] == iso(started + duration)


def test_inactive_entry_has_no_scheduled_task(api):
    sid = api.schedule(interval=60)["id"]
    api.add_task(sid, [], status="fail", detail="no signal analyzer")
    response = api.patch(f"{API}/schedule/{sid}", {"is_active": False})
    assert response.status_code == 200, response.json
    page = results_of(api, tasks_url(sid))
    assert page["count"] == 1
    assert [item["status"] for item in page["results"]] == ["fail"]
    assert_json_error(api.get(tasks_url(sid, 2)), 404)
    assert_json_error(api.delete(tasks_url(sid, 2)), 404)


def test_new_entry_lists_only_its_scheduled_task(api):
    start = utc_now() + datetime.timedelta(hours=1)
    sid = api.schedule(start=iso(start))["id"]
    page = results_of(api, tasks_url(sid))
    assert page["count"] == 1
    (scheduled,) = page["results"]
    assert scheduled["status"] == "scheduled"
    assert scheduled["task_id"] == 1
    assert scheduled["started"] == iso(start)


def test_inactive_entry_without_results_lists_nothing(api):
    sid = api.schedule(interval=60, is_active=False)["id"]
    assert results_of(api, tasks_url(sid)) == {"count": 0, "results": []}


def test_unknown_or_hidden_entry_is_404(api):
    assert_json_error(api.get(tasks_url("nope")), 404)
    private = api.schedule(user="alice", interval=60, is_private=True)["id"]
    api.add_task(private, [])
    assert results_of(api, tasks_url(private), user="alice")["count"] == 2
    assert results_of(api, tasks_url(private), user="admin")["count"] == 2
    for url in (tasks_url(private), tasks_url(private, 1), tasks_url(private, 1, "archive")):
        assert_json_error(api.get(url, user="bob"), 404)
    assert_json_error(api.get(f"{API}/schedule/{private}/archive", user="bob"), 404)
    assert api.get(tasks_url(private), user=None).status_code == 401


# Three results (1, 2, 3) and the scheduled task 4: count 4 on every page.
# (limit, offset, task ids, offset of the next page, offset of the previous one)
PAGES = [
    (2, 0, [1, 2], 2, None),
    (2, 2, [3, 4], None, 0),
    (3, 0, [1, 2, 3], 3, None),
    (3, 3, [4], None, 0),
    (3, 1, [2, 3, 4], None, 0),
    (1, 2, [3], 3, 1),
    (1, 3, [4], None, 2),
    (4, 0, [1, 2, 3, 4], None, None),
    (100, 0, [1, 2, 3, 4], None, None),
    (2, 4, [], None, 2),
    (2, 9, [], None, 2),
]


def test_pagination_with_the_scheduled_task(api):
    sid = api.schedule(interval=60)["id"]
    for _ in range(3):
        api.add_task(sid, [])
    for limit, offset, task_ids, next_offset, previous_offset in PAGES:
        case = f"limit={limit}&offset={offset}"
        page = results_of(api, f"{tasks_url(sid)}?{case}")
        assert page["count"] == 4, case
        assert [item["task_id"] for item in page["results"]] == task_ids, case
        statuses = [item["status"] for item in page["results"]]
        assert statuses == ["scheduled" if task_id == 4 else "success" for task_id in task_ids]
        for key, expected in (("next", next_offset), ("previous", previous_offset)):
            if expected is None:
                assert key not in page, case
                continue
            link = urlsplit(page[key])
            assert f"{link.scheme}://{link.netloc}{link.path}" == f"{HOST}{tasks_url(sid)}"
            assert parse_qs(link.query) == {"limit": [str(limit)], "offset": [str(expected)]}, case


def test_next_and_previous_links_walk_every_task(api):
    sid = api.schedule(interval=60)["id"]
    for _ in range(4):
        api.add_task(sid, [])
    seen, url, pages = [], f"{tasks_url(sid)}?limit=2", 0
    while url:
        page = results_of(api, url)
        assert page["count"] == 5
        seen += [item["task_id"] for item in page["results"]]
        url, pages = page.get("next"), pages + 1
    assert seen == [1, 2, 3, 4, 5]
    assert pages == 3
    back, url = [], page["previous"]
    while url:
        page = results_of(api, url)
        back = [item["task_id"] for item in page["results"]] + back
        url = page.get("previous")
    assert back == [1, 2, 3, 4]


def test_bad_page_parameters(api):
    sid = api.schedule(interval=60)["id"]
    for query in ("limit=0", "limit=1001", "offset=-1", "limit=x", "offset=1.5", "limit="):
        response = api.get(f"{tasks_url(sid)}?{query}")
        assert_json_error(response, 400)
        assert query.split("=")[0] in response.json["errors"], (query, response.json)


# -- GET /schedule/{id}/tasks/{task_id} -----------------------------------------------


def test_get_task_with_its_recordings_metadata(api, recordings):
    sid = api.schedule(interval=60)["id"]
    stepped = recordings["acquire_stepped_iq"]
    task_id = api.add_task(sid, stepped)
    listed = results_of(api, tasks_url(sid))["results"][0]
    task = results_of(api, tasks_url(sid, task_id))
    assert {key: value for key, value in task.items() if key != "recording_metadata"} == listed
    recording_metadata = task["recording_metadata"]
    assert [item["recording_id"] for item in recording_metadata] == [0, 1, 2]
    for item, meta in zip(recording_metadata, stepped, strict=True):
        assert set(item) == {"recording_id", "metadata", "data_size"}
        assert item["metadata"] == json.loads(meta.read_text())
        assert item["data_size"] == meta.with_suffix(".sigmf-data").stat().st_size


def test_get_failed_task(api):
    sid = api.schedule(interval=60)["id"]
    task_id = api.add_task(sid, [], status="fail", detail="deadline exceeded")
    task = results_of(api, tasks_url(sid, task_id))
    assert task["status"] == "fail"
    assert task["detail"] == "deadline exceeded"
    assert task["recordings"] == 0
    assert task["recording_metadata"] == []
    assert "archive_id" not in task


def test_get_scheduled_task(api):
    sid = api.schedule(interval=60)["id"]
    api.add_task(sid, [])
    entry = entry_json(api, sid)
    task = results_of(api, tasks_url(sid, entry["next_task_id"]))
    assert task["status"] == "scheduled"
    assert task["task_id"] == 2
    assert task["started"] == entry["next_task_time"]
    assert task["recording_metadata"] == []
    assert set(task) == SCHEDULED_FIELDS | {"recording_metadata"}


def test_unknown_task_is_404(api):
    sid = api.schedule(interval=60)["id"]
    api.add_task(sid, [])
    # task 2 is the scheduled one; 3 does not exist yet
    for task_id in ("99", "0", "3", "abc", "1.5", "-1", "%20", "99999999999999999999"):
        assert_json_error(api.get(tasks_url(sid, task_id)), 404)
        assert_json_error(api.get(tasks_url(sid, task_id, "archive")), 404)
        assert_json_error(api.delete(tasks_url(sid, task_id)), 404)


# -- DELETE ---------------------------------------------------------------------------


def test_delete_task_removes_result_and_files(api, recordings):
    sid = api.schedule(interval=60)["id"]
    stepped, iq = recordings["acquire_stepped_iq"], recordings["acquire_iq"]
    doomed = api.add_task(sid, stepped)
    kept = api.add_task(sid, iq)
    doomed_files = task_files(api, sid, doomed, stepped)
    kept_files = task_files(api, sid, kept, iq)
    assert len(doomed_files) == 6 and all(path.is_file() for path in doomed_files + kept_files)

    response = api.delete(tasks_url(sid, doomed))
    assert response.status_code == 204
    assert response.data == b""
    # at once: no background job, the files are gone when the answer arrives
    assert existing_files(doomed_files) == []
    assert not task_folder(api, sid, doomed).exists()
    assert all(path.is_file() for path in kept_files)
    assert api.settings.data_dir.is_dir()

    assert_json_error(api.get(tasks_url(sid, doomed)), 404)
    assert_json_error(api.get(tasks_url(sid, doomed, "archive")), 404)
    assert_json_error(api.delete(tasks_url(sid, doomed)), 404)
    page = results_of(api, tasks_url(sid))
    assert [item["task_id"] for item in page["results"]] == [kept, 3]
    # task ids are never reused
    assert api.add_task(sid, []) == 3


def test_delete_failed_task(api):
    sid = api.schedule(interval=60)["id"]
    task_id = api.add_task(sid, [], status="fail", detail="boom")
    assert api.delete(tasks_url(sid, task_id)).status_code == 204
    assert_json_error(api.get(tasks_url(sid, task_id)), 404)


def test_delete_running_or_scheduled_task_is_409(api, recordings):
    sid = api.schedule(interval=60)["id"]
    iq = recordings["acquire_iq"]
    running = api.add_task(sid, iq, status="in-progress")
    scheduled = entry_json(api, sid)["next_task_id"]
    for task_id in (running, scheduled):
        assert_json_error(api.delete(tasks_url(sid, task_id)), 409)
    assert results_of(api, tasks_url(sid, running))["status"] == "in-progress"
    assert all(path.is_file() for path in task_files(api, sid, running, iq))
    assert results_of(api, tasks_url(sid))["count"] == 2


def test_delete_tasks_of_another_users_entry_is_403(api, recordings):
    sid = api.schedule(user="alice", interval=60)["id"]
    iq = recordings["acquire_iq"]
    task_id = api.add_task(sid, iq)
    assert_json_error(api.delete(tasks_url(sid, task_id), user="bob"), 403)
    assert_json_error(api.delete(tasks_url(sid), user="bob"), 403)
    assert all(path.is_file() for path in task_files(api, sid, task_id, iq))
    assert api.delete(tasks_url(sid, task_id), user="alice").status_code == 204


def test_delete_all_tasks_keeps_the_running_one(api, recordings):
    sid = api.schedule(interval=60)["id"]
    stepped, iq = recordings["acquire_stepped_iq"], recordings["acquire_iq"]
    first = api.add_task(sid, stepped)
    failed = api.add_task(sid, [], status="fail", detail="boom")
    second = api.add_task(sid, iq)
    running = api.add_task(sid, iq, status="in-progress")
    gone = task_files(api, sid, first, stepped) + task_files(api, sid, second, iq)
    kept = task_files(api, sid, running, iq)

    response = api.delete(tasks_url(sid))
    assert response.status_code == 204
    assert existing_files(gone) == []
    assert not task_folder(api, sid, first).exists()
    assert not task_folder(api, sid, second).exists()
    assert all(path.is_file() for path in kept)
    page = results_of(api, tasks_url(sid))
    assert [(item["task_id"], item["status"]) for item in page["results"]] == [
        (running, "in-progress"),
        (running + 1, "scheduled"),
    ]
    for task_id in (first, failed, second):
        assert_json_error(api.get(tasks_url(sid, task_id)), 404)
    # nothing left to delete is fine too
    assert api.delete(tasks_url(sid)).status_code == 204


def test_delete_waits_for_another_writer(api, recordings):
    """A write request while another connection holds a write transaction waits for
    it and succeeds (on SQLite: no "database is locked")."""
    sid = api.schedule(interval=60)["id"]
    iq = recordings["acquire_iq"]
    task_id = api.add_task(sid, iq)
    holding, committing = threading.Event(), threading.Event()

    def hold_a_write_transaction():
        with api.database.session() as db:
            db.get(ScheduleEntry, sid).priority = 3
            db.flush()
            holding.set()
            time.sleep(0.5)  # any time: the order of events is what is checked
            committing.set()  # the commit follows, releasing the write lock

    holder = threading.Thread(target=hold_a_write_transaction)
    holder.start()
    try:
        assert holding.wait(10)
        response = api.delete(tasks_url(sid, task_id))
        answered_after_the_commit = committing.is_set()
    finally:
        holder.join()
    assert response.status_code == 204, response.json
    assert existing_files(task_files(api, sid, task_id, iq)) == []
    if api.database.engine.dialect.name == "sqlite":
        # The delete waited for the write lock (PostgreSQL locks rows: no wait there).
        assert answered_after_the_commit
    response = api.patch(f"{API}/schedule/{sid}", {"priority": 5})
    assert response.status_code == 200, response.json
    assert response.json["priority"] == 5


def test_delete_all_tasks_of_unknown_entry_is_404(api):
    assert_json_error(api.delete(tasks_url("nope")), 404)


# -- archives -------------------------------------------------------------------------


def test_task_archive(api, recordings, tmp_path):
    sid = api.schedule(schedule_id="stepped", interval=60)["id"]
    api.add_task(sid, [], status="fail", detail="first one failed")
    stepped = recordings["acquire_stepped_iq"]
    task_id = api.add_task(sid, stepped)
    body = get_archive(api, tasks_url(sid, task_id, "archive"), f"{sid}_{task_id}.tar")
    expected = [(f"{sid}_{task_id}_{index}", meta) for index, meta in enumerate(stepped)]
    check_archive(body, expected, tmp_path)


def test_schedule_archive_has_every_finished_task_in_order(api, recordings, tmp_path):
    sid = api.schedule(schedule_id="all", interval=60)["id"]
    iq, stepped = recordings["acquire_iq"], recordings["acquire_stepped_iq"]
    api.add_task(sid, iq)
    api.add_task(sid, [], status="fail", detail="boom")
    api.add_task(sid, stepped)
    api.add_task(sid, iq, status="in-progress")
    api.add_task(sid, stepped[:1])
    body = get_archive(api, f"{API}/schedule/{sid}/archive", f"{sid}.tar")
    expected = [
        (f"{sid}_1_0", iq[0]),
        (f"{sid}_3_0", stepped[0]),
        (f"{sid}_3_1", stepped[1]),
        (f"{sid}_3_2", stepped[2]),
        (f"{sid}_5_0", stepped[0]),
    ]
    check_archive(body, expected, tmp_path)
    # the entry links its archive
    assert entry_json(api, sid)["archive"] == f"{HOST}{API}/schedule/{sid}/archive"


def test_archive_of_task_without_recordings_is_404(api):
    sid = api.schedule(interval=60)["id"]
    failed = api.add_task(sid, [], status="fail", detail="boom")
    scheduled = entry_json(api, sid)["next_task_id"]
    assert "recordings" in assert_json_error(api.get(tasks_url(sid, failed, "archive")), 404)
    assert_json_error(api.get(tasks_url(sid, scheduled, "archive")), 404)
    assert_json_error(api.get(f"{API}/schedule/{sid}/archive"), 404)
    assert_json_error(api.get(f"{API}/schedule/nope/archive"), 404)


def test_schedule_archive_leaves_out_running_task(api, recordings):
    sid = api.schedule(interval=60)["id"]
    api.add_task(sid, recordings["acquire_iq"], status="in-progress")
    assert_json_error(api.get(f"{API}/schedule/{sid}/archive"), 404)


def test_damaged_data_file_is_404_naming_the_problem(api, recordings):
    stepped = recordings["acquire_stepped_iq"]
    for damage in ("missing", "truncated", "empty", "longer"):
        sid = api.schedule(interval=60)["id"]
        task_id = api.add_task(sid, stepped)
        data = task_folder(api, sid, task_id) / stepped[1].with_suffix(".sigmf-data").name
        size = data.stat().st_size
        if damage == "missing":
            data.unlink()
        elif damage == "truncated":
            with data.open("r+b") as file:
                file.truncate(size // 2)
        elif damage == "empty":
            data.write_bytes(b"")
        else:
            with data.open("ab") as file:
                file.write(b"\0" * 8)
        for url in (tasks_url(sid, task_id, "archive"), f"{API}/schedule/{sid}/archive"):
            message = assert_json_error(api.get(url), 404)
            assert f"{sid}_{task_id}_1" in message, damage
            if damage == "missing":
                assert "missing" in message
            else:
                assert str(size) in message, damage
                assert f" {data.stat().st_size} " in message, damage
    # an undamaged task still downloads
    other = api.schedule(interval=60)["id"]
    api.add_task(other, stepped)
    assert api.get(tasks_url(other, 1, "archive")).status_code == 200


def test_archive_of_a_removed_task_folder_is_404(api, recordings):
    """A task folder removed behind the API's back: 404, not 500."""
    sid = api.schedule(interval=60)["id"]
    task_id = api.add_task(sid, recordings["acquire_iq"])
    shutil.rmtree(task_folder(api, sid, task_id))
    assert "missing" in assert_json_error(api.get(tasks_url(sid, task_id, "archive")), 404)
    # the result itself can still be read and deleted
    assert results_of(api, tasks_url(sid, task_id))["recordings"] == 1
    assert api.delete(tasks_url(sid, task_id)).status_code == 204


# -- /tasks/upcoming and /tasks/completed ---------------------------------------------


def test_upcoming_tasks_by_time_then_priority(api):
    base = utc_now().replace(microsecond=0) + datetime.timedelta(hours=1)
    later = api.schedule(schedule_id="later", start=iso(base + 3600 * SECOND), interval=60)
    low = api.schedule(schedule_id="low", start=iso(base), priority=15)
    high = api.schedule(schedule_id="high", start=iso(base), priority=-5)
    middle = api.schedule(schedule_id="middle", start=iso(base), interval=600)
    api.schedule(schedule_id="off", start=iso(base - 600 * SECOND), is_active=False, interval=60)
    soon = api.schedule(
        user="alice", schedule_id="soon", start=iso(base - 60 * SECOND), is_private=True
    )
    api.add_task("later", [])  # its next task is task 2

    page = results_of(api, f"{API}/tasks/upcoming")
    order = ["soon", "high", "middle", "low", "later"]
    assert [item["schedule_id"] for item in page["results"]] == order
    assert page["count"] == 5
    by_id = {item["schedule_id"]: item for item in page["results"]}
    for entry in (later, low, high, middle, soon):
        item = by_id[entry["id"]]
        assert set(item) == SCHEDULED_FIELDS
        assert item["status"] == "scheduled"
        assert item["started"] == entry["next_task_time"]
        assert item["schedule_name"] == entry["name"]
        assert item["sensor_id"] == sensor_id(api)
    assert by_id["later"]["task_id"] == 2
    assert by_id["soon"]["task_id"] == 1
    assert by_id["later"]["url"] == f"{HOST}{tasks_url('later', 2)}"

    # bob does not see alice's private entry
    page = results_of(api, f"{API}/tasks/upcoming", user="bob")
    assert [item["schedule_id"] for item in page["results"]] == order[1:]

    first = results_of(api, f"{API}/tasks/upcoming?limit=2")
    assert [item["schedule_id"] for item in first["results"]] == order[:2]
    assert first["count"] == 5 and "previous" not in first
    second = results_of(api, first["next"])
    assert [item["schedule_id"] for item in second["results"]] == order[2:4]
    third = results_of(api, second["next"])
    assert [item["schedule_id"] for item in third["results"]] == order[4:]
    assert "next" not in third
    assert results_of(api, third["previous"])["results"] == second["results"]

    # deactivating an entry takes it off the list
    assert api.patch(f"{API}/schedule/high", {"is_active": False}).status_code == 200
    page = results_of(api, f"{API}/tasks/upcoming")
    assert [item["schedule_id"] for item in page["results"]] == ["soon", "middle", "low", "later"]


def test_no_upcoming_tasks(api):
    assert results_of(api, f"{API}/tasks/upcoming") == {"count": 0, "results": []}
    assert results_of(api, f"{API}/tasks/completed") == {"count": 0, "results": []}


def test_completed_tasks_newest_first(api, recordings):
    now = utc_now().replace(microsecond=0)
    x = api.schedule(schedule_id="x", interval=60)["id"]
    y = api.schedule(schedule_id="y", interval=60)["id"]
    hidden = api.schedule(user="alice", schedule_id="hidden", interval=60, is_private=True)["id"]
    hour = datetime.timedelta(hours=1)
    api.add_task(x, recordings["acquire_iq"], started=now - 5 * hour)  # x 1
    api.add_task(y, [], status="fail", detail="boom", started=now - 4 * hour)  # y 1
    api.add_task(x, [], status="in-progress", started=now - 3 * hour)  # x 2
    api.add_task(y, [], started=now - 1 * hour)  # y 2
    api.add_task(x, [], started=now - 2 * hour)  # x 3
    api.add_task(hidden, [], started=now - 0.5 * hour)  # hidden 1

    def listed(page):
        return [(item["schedule_id"], item["task_id"]) for item in page["results"]]

    everything = [("hidden", 1), ("y", 2), ("x", 3), ("y", 1), ("x", 1)]
    page = results_of(api, f"{API}/tasks/completed")
    assert listed(page) == everything
    assert page["count"] == 5
    assert all(item["status"] in ("success", "fail") for item in page["results"])
    x1 = page["results"][-1]
    assert x1["archive_id"] == f"{HOST}{tasks_url('x', 1, 'archive')}"
    assert x1["finished"] == iso(now - 5 * hour + 1.5 * SECOND)
    assert x1["duration"] == "00:00:01.500000"
    assert page["results"][-2]["detail"] == "boom"

    assert listed(results_of(api, f"{API}/tasks/completed", user="bob")) == everything[1:]
    assert listed(results_of(api, f"{API}/tasks/completed", user="alice")) == everything

    first = results_of(api, f"{API}/tasks/completed?limit=3")
    assert listed(first) == everything[:3]
    assert first["count"] == 5
    second = results_of(api, first["next"])
    assert listed(second) == everything[3:]
    assert "next" not in second
    assert listed(results_of(api, second["previous"])) == everything[:3]
    assert listed(results_of(api, f"{API}/tasks/completed?offset=4&limit=1")) == everything[4:]
    assert_json_error(api.get(f"{API}/tasks/completed?limit=0"), 400)
    assert_json_error(api.get(f"{API}/tasks/upcoming?offset=-2"), 400)


# -- /status --------------------------------------------------------------------------


def set_scheduler(api, state: str | None, age: float = 0.0) -> None:
    """The scheduler's heartbeat row, ``age`` seconds old (None: no row)."""
    with api.database.session() as db:
        for row in db.query(SchedulerState).all():
            db.delete(row)
        if state is not None:
            now = utc_now()
            db.add(
                SchedulerState(
                    pid=4242,
                    state=state,
                    started=now - datetime.timedelta(seconds=age + 60),
                    heartbeat=now - datetime.timedelta(seconds=age),
                )
            )


def status_of(api, user: str = "admin") -> dict:
    return results_of(api, f"{API}/status", user=user)


def test_status_fields(api):
    before = utc_now()
    status = status_of(api)
    after = utc_now()
    assert set(status) == {
        "sensor_id",
        "scheduler",
        "location",
        "system_time",
        "start_time",
        "calibration_datetime",
        "disk_usage",
        "healthy",
        "problems",
    }
    config = Config.load(api.settings.config_dir)
    assert status["sensor_id"] == sensor_id(api)
    location = config.location
    assert status["location"] == {
        "gps": location["gps"],
        "description": location["description"],
        "latitude": location["latitude"],
        "longitude": location["longitude"],
        "altitude": location["altitude"],
        "modified": "2026-01-01T00:00:00.000Z",
    }
    assert location["modified"] == "2026-01-01T00:00:00Z"
    system_time = parse(status["system_time"])
    slack = datetime.timedelta(milliseconds=1)
    assert before - slack <= system_time <= after + slack
    start_time = parse(status["start_time"])
    assert start_time <= system_time
    assert status["calibration_datetime"] == "2026-01-01T00:00:00.000Z"

    disk = status["disk_usage"]
    actual = shutil.disk_usage(api.settings.data_dir)
    assert disk["total_bytes"] == actual.total
    assert disk["used_bytes"] + disk["free_bytes"] <= disk["total_bytes"]
    assert 0 <= disk["percent"] <= 100
    # as df shows it: of the space the sensor may use, root's reserve excluded
    usable = disk["used_bytes"] + disk["free_bytes"]
    assert disk["percent"] == pytest.approx(100 * disk["used_bytes"] / usable, abs=0.01)
    # other processes write to the disk too: the numbers are close, not equal
    assert abs(disk["used_bytes"] - actual.used) < 1 << 30
    assert disk["max_percent"] == api.settings.max_disk_usage == 85.0

    # everyone may read it
    assert status_of(api, user="bob")["scheduler"] == status["scheduler"]
    assert api.get(f"{API}/status", user=None).status_code == 401


def test_status_without_scheduler_is_dead_and_unhealthy(api):
    status = status_of(api)
    assert status["scheduler"] == "dead"
    assert status["healthy"] is False
    assert any("scheduler" in problem for problem in status["problems"])


def test_status_scheduler_state_from_its_heartbeat(api):
    for state, age, expected in [
        ("running", 0.0, "running"),
        ("idle", 0.0, "idle"),
        ("running", 3.0, "running"),
        ("running", 60.0, "dead"),
        ("idle", 3600.0, "dead"),
        (None, 0.0, "dead"),
    ]:
        set_scheduler(api, state, age)
        status = status_of(api)
        assert status["scheduler"] == expected, (state, age)
        scheduler_problems = [problem for problem in status["problems"] if "scheduler" in problem]
        assert bool(scheduler_problems) == (expected == "dead"), (state, age)


def test_status_healthy_when_scheduler_alive_and_disk_under_limit(api):
    sensor = api.app.extensions["scos"]
    sensor.settings = dataclasses.replace(sensor.settings, max_disk_usage=100.0)
    set_scheduler(api, "running")
    status = status_of(api)
    assert status["disk_usage"]["percent"] < 100
    assert status["healthy"] is True
    assert status["problems"] == []

    # over the limit with files that are not the sensor's: unhealthy, saying so
    sensor.settings = dataclasses.replace(sensor.settings, max_disk_usage=0.001)
    status = status_of(api)
    assert status["healthy"] is False
    (problem,) = status["problems"]
    assert problem.startswith("the data filesystem is ")
    assert "above MAX_DISK_USAGE 0.001%" in problem and "not the sensor's data" in problem
    assert status["disk_usage"]["max_percent"] == 0.001

    # and both problems at once
    set_scheduler(api, "running", age=120)
    status = status_of(api)
    assert status["healthy"] is False
    assert len(status["problems"]) == 2


def test_a_disk_over_the_limit_that_the_quota_can_bring_back_is_healthy(api, recordings):
    """Kept at MAX_DISK_USAGE by the quota is a sensor's steady state: the disk is a
    problem only when deleting the sensor's recordings could not make room."""
    sensor = api.app.extensions["scos"]
    set_scheduler(api, "idle")
    entry = api.schedule(name="stored")
    task_id = api.add_task(entry["id"], recordings["acquire_iq"])
    used = status_of(api)["disk_usage"]["percent"]
    # One percent below the current use: the recording would have to free that much.
    sensor.settings = dataclasses.replace(sensor.settings, max_disk_usage=used - 1)
    assert status_of(api)["healthy"] is False
    with api.database.session() as db:
        result = db.scalar(
            select(TaskResult).where(
                TaskResult.schedule_entry_id == entry["id"], TaskResult.task_id == task_id
            )
        )
        # As if the recording held the whole disk: deleting it would make room.
        result.acquisitions[0].data_size = shutil.disk_usage(api.settings.data_dir).total
    status = status_of(api)
    assert (status["healthy"], status["problems"]) == (True, [])


# -- /capabilities and the root -------------------------------------------------------


def test_capabilities(api):
    config = Config.load(api.settings.config_dir)
    body = results_of(api, f"{API}/capabilities")
    assert set(body) == {"sensor", "actions"}
    assert body["sensor"] == json.loads(json.dumps(config.sensor))
    catalog = api.app.extensions["scos"].catalog
    names = [action["name"] for action in body["actions"]]
    assert names == sorted(catalog.actions)
    assert "admin_calibrate" in names
    for action in body["actions"]:
        assert isinstance(action["name"], str) and action["name"]
        assert isinstance(action["summary"], str) and action["summary"]
        assert action["summary"] == catalog.actions[action["name"]].summary
        assert isinstance(action["parameters"], dict)
        assert action["max_run_time"] > 0
    # non-admins do not see admin-only actions
    alice = results_of(api, f"{API}/capabilities", user="alice")
    assert [action["name"] for action in alice["actions"]] == [
        name for name in names if name != "admin_calibrate"
    ]
    assert alice["sensor"] == body["sensor"]


def test_root_links_resolve(api):
    links = results_of(api, f"{API}/")
    assert set(links) == {
        "status",
        "capabilities",
        "schedule",
        "upcoming_tasks",
        "completed_tasks",
        "users",
        "me",
        "metrics",
        "docs",
        "swagger",
    }
    for name, url in links.items():
        assert url.startswith(f"{HOST}{API}/"), (name, url)
        response = api.get(url)
        assert response.status_code == 200, (name, url, response.data[:300])
    assert results_of(api, links["status"])["disk_usage"]["total_bytes"] > 0
    assert api.get(f"{API}/", user=None).status_code == 401
