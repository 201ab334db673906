"""Tasks: results of schedule entries (Tables 11, 12, 24, 25) and their SigMF archives.

A finished task is ``success`` or ``fail``, a running one ``in-progress``; the next
task of an active entry is listed as ``scheduled`` with the time it will start.
Results follow their entry's visibility (``schedule.py``); deleting a result deletes
its recordings' data files. A task whose entry had a callback_url shows the delivery
of its acquisition notification (``notification``, ``scheduler/callbacks.py``).
"""

from flask import Response
from flask_restx import Namespace, abort, fields
from sqlalchemy import Select, select

from ..storage.archive import Archive, ArchiveError, Recording
from ..storage.models import ScheduleEntry, TaskResult
from .auth import AuthenticatedResource
from .common import (
    Duration,
    UTCDateTime,
    error_model,
    link,
    page_model,
    page_parser,
    paginate,
    sensor_app,
    session,
)
from .schedule import check_may_change, get_entry, visible_entries

ns = Namespace(
    "tasks", description="Task results and SigMF archives (Tables 11-14, 24, 25)", path="/"
)

STATUSES = ["success", "fail", "in-progress", "scheduled"]
FINISHED = ("success", "fail")
# Flask-RESTX documents produces per method only (a class's is dropped); the tar,
# or a JSON error.
ARCHIVE_TYPES = ["application/x-tar", "application/json"]


class File(fields.Raw):
    """A file download: Swagger 2.0's ``type: file`` response schema."""

    __schema_type__ = "file"


error = error_model(ns)
notification_model = ns.model(
    "Notification",
    {
        "state": fields.String(
            required=True,
            enum=["pending", "delivered", "failed"],
            description="pending: not delivered yet, retried with backoff; failed: "
            "SCOS_CALLBACK_RETRIES attempts failed",
        ),
        "attempts": fields.Integer(required=True, description="POSTs made so far"),
        "last_error": fields.String(description="why the latest failed attempt failed"),
        "next_attempt": UTCDateTime(description="when a pending one is tried next"),
        "delivered": UTCDateTime(description="when the callback accepted it"),
    },
)
task_model = ns.model(
    "Task",
    {
        "schedule_id": fields.String(required=True),
        "schedule_name": fields.String(required=True),
        "sensor_id": fields.String(description="the sensor that runs the task"),
        "task_id": fields.Integer(required=True, description="increasing per entry, never reused"),
        "started": UTCDateTime(required=True, description="when it started, or will start"),
        "finished": UTCDateTime(description="when it finished"),
        "duration": Duration(description="finished - started, HH:MM:SS.ffffff"),
        "status": fields.String(required=True, enum=STATUSES),
        "detail": fields.String(description="what happened, e.g. the error of a failed task"),
        "recordings": fields.Integer(description="number of SigMF recordings"),
        "archive_id": fields.String(description="URL of the task's SigMF archive"),
        "url": fields.String(required=True, description="this task"),
        "notification": fields.Nested(
            notification_model,
            skip_none=True,
            allow_null=True,
            description="the acquisition notification (Table 13) POSTed to the entry's "
            "callback_url, when it had one as the task finished",
        ),
    },
)
recording_model = ns.model(
    "Recording",
    {
        "recording_id": fields.Integer(required=True),
        "metadata": fields.Raw(required=True, description="SigMF metadata (Table 25)"),
        "data_size": fields.Integer(required=True, description="bytes of the data file"),
    },
)
task_detail_model = ns.inherit(
    "TaskDetail",
    task_model,
    {"recording_metadata": fields.List(fields.Nested(recording_model), required=True)},
)
tasks_page = page_model(ns, "TaskStatus", task_model)
paging = page_parser()


def render_task(result: TaskResult) -> dict:
    entry = result.schedule_entry
    rendered = {
        "schedule_id": entry.id,
        "schedule_name": entry.name,
        "sensor_id": sensor_app().sensor_id or None,
        "task_id": result.task_id,
        "started": result.started,
        "finished": result.finished,
        "duration": result.finished - result.started if result.finished else None,
        "status": result.status,
        "detail": result.detail or None,
        "recordings": result.recording_count,
        "url": link("task", schedule_id=entry.id, task_id=result.task_id),
    }
    if result.recording_count:
        rendered["archive_id"] = link("task_archive", schedule_id=entry.id, task_id=result.task_id)
    notification = result.notification
    if notification is not None:
        rendered["notification"] = {
            "state": notification.state,
            "attempts": notification.attempts,
            "last_error": notification.last_error,
            "next_attempt": notification.next_attempt,
            "delivered": notification.delivered,
        }
    return rendered


def render_scheduled(entry: ScheduleEntry) -> dict:
    return {
        "schedule_id": entry.id,
        "schedule_name": entry.name,
        "sensor_id": sensor_app().sensor_id or None,
        "task_id": entry.next_task_id,
        "started": entry.next_task_time,
        "status": "scheduled",
        "url": link("task", schedule_id=entry.id, task_id=entry.next_task_id),
    }


def _results(entry: ScheduleEntry) -> Select:
    return select(TaskResult).where(TaskResult.schedule_entry_id == entry.id)


def _scheduled(entry: ScheduleEntry) -> list[dict]:
    return [render_scheduled(entry)] if entry.is_active and entry.next_task_time else []


def _get_result(entry: ScheduleEntry, task_id: int) -> TaskResult | None:
    return session().scalar(_results(entry).where(TaskResult.task_id == task_id))


def _archive_response(recordings: list[Recording], filename: str) -> Response:
    if not recordings:
        abort(404, "no recordings to archive")
    try:
        archive = Archive(recordings)
    except ArchiveError as problem:
        abort(404, str(problem))
    return Response(
        archive.chunks(),
        mimetype="application/x-tar",
        headers={
            "Content-Length": str(archive.size),
            "Content-Disposition": f'attachment; filename="{filename}.tar"',
        },
        direct_passthrough=True,
    )


def _recordings(results: list[TaskResult]) -> list[Recording]:
    data_dir = sensor_app().database.data_dir
    return [
        Recording(
            name=f"{result.schedule_entry_id}_{result.task_id}_{acquisition.recording_id}",
            metadata=acquisition.sigmf_metadata,
            data_path=data_dir / acquisition.data_path,
            data_size=acquisition.data_size,
            mtime=acquisition.created.timestamp(),
        )
        for result in results
        for acquisition in result.acquisitions
    ]


@ns.route("/schedule/<string:schedule_id>/tasks", endpoint="schedule_tasks")
@ns.param("schedule_id", "the entry's id")
@ns.response(401, "No or bad credentials", error)
@ns.response(404, "No such entry visible to the user", error)
class ScheduleTasks(AuthenticatedResource):
    @ns.doc("list_tasks")
    @ns.expect(paging)
    @ns.response(400, "Bad query parameter", error)
    @ns.marshal_with(tasks_page, skip_none=True, description="Table 12, oldest task first")
    def get(self, schedule_id: str):
        """The entry's tasks: its results, then its next task (``scheduled``)."""
        entry = get_entry(schedule_id)
        arguments = paging.parse_args()
        query = _results(entry).order_by(TaskResult.task_id)
        return paginate(query, arguments, render_task, extra=_scheduled(entry))

    @ns.doc("delete_tasks")
    @ns.response(204, "The finished results and their data files are deleted")
    @ns.response(403, "Not the owner", error)
    def delete(self, schedule_id: str):
        """Delete the entry's finished task results and their data files."""
        entry = get_entry(schedule_id)
        check_may_change(entry)
        db = session()
        for result in db.scalars(_results(entry).where(TaskResult.status.in_(FINISHED))):
            db.delete(result)
        db.commit()
        return "", 204


@ns.route("/schedule/<string:schedule_id>/tasks/<int(max=2147483647):task_id>", endpoint="task")
@ns.param("schedule_id", "the entry's id")
@ns.param("task_id", "the task's id")
@ns.response(401, "No or bad credentials", error)
@ns.response(404, "No such task visible to the user", error)
class Task(AuthenticatedResource):
    @ns.doc("get_task")
    @ns.marshal_with(task_detail_model, skip_none=True, description="Table 24 with Table 25")
    def get(self, schedule_id: str, task_id: int):
        """One task, with the SigMF metadata of its recordings."""
        entry = get_entry(schedule_id)
        result = _get_result(entry, task_id)
        if result is not None:
            rendered = render_task(result)
            rendered["recording_metadata"] = [
                {
                    "recording_id": acquisition.recording_id,
                    "metadata": acquisition.sigmf_metadata,
                    "data_size": acquisition.data_size,
                }
                for acquisition in result.acquisitions
            ]
            return rendered
        for scheduled in _scheduled(entry):
            if scheduled["task_id"] == task_id:
                return scheduled | {"recording_metadata": []}
        abort(404, f"schedule entry {schedule_id!r} has no task {task_id}")

    @ns.doc("delete_task")
    @ns.response(204, "The result and its data files are deleted")
    @ns.response(403, "Not the owner", error)
    @ns.response(409, "The task is running or has not run yet", error)
    def delete(self, schedule_id: str, task_id: int):
        """Delete a finished task's result and its data files."""
        entry = get_entry(schedule_id)
        check_may_change(entry)
        result = _get_result(entry, task_id)
        if result is None:
            if any(scheduled["task_id"] == task_id for scheduled in _scheduled(entry)):
                abort(409, f"task {task_id} has not run; deactivate the entry to cancel it")
            abort(404, f"schedule entry {schedule_id!r} has no task {task_id}")
        if result.status not in FINISHED:
            abort(409, f"task {task_id} is {result.status}")
        db = session()
        db.delete(result)
        db.commit()
        return "", 204


@ns.route(
    "/schedule/<string:schedule_id>/tasks/<int(max=2147483647):task_id>/archive",
    endpoint="task_archive",
)
@ns.param("schedule_id", "the entry's id")
@ns.param("task_id", "the task's id")
@ns.response(401, "No or bad credentials", error)
@ns.response(404, "No such task, or it has no recordings", error)
class TaskArchive(AuthenticatedResource):
    @ns.doc("get_task_archive")
    @ns.produces(ARCHIVE_TYPES)
    @ns.response(200, "A tar of one SigMF archive (.sigmf) per recording", File)
    def get(self, schedule_id: str, task_id: int):
        """The task's recordings as SigMF archives in one tar, streamed from disk."""
        entry = get_entry(schedule_id)
        result = _get_result(entry, task_id)
        if result is None:
            abort(404, f"schedule entry {schedule_id!r} has no task {task_id}")
        return _archive_response(_recordings([result]), f"{entry.id}_{task_id}")


@ns.route("/schedule/<string:schedule_id>/archive", endpoint="schedule_archive")
@ns.param("schedule_id", "the entry's id")
@ns.response(401, "No or bad credentials", error)
@ns.response(404, "No such entry, or it has no recordings", error)
class ScheduleArchive(AuthenticatedResource):
    @ns.doc("get_schedule_archive")
    @ns.produces(ARCHIVE_TYPES)
    @ns.response(200, "A tar of one SigMF archive (.sigmf) per recording of all tasks", File)
    def get(self, schedule_id: str):
        """All recordings of the entry's finished tasks, streamed from disk."""
        entry = get_entry(schedule_id)
        results = session().scalars(
            _results(entry).where(TaskResult.status.in_(FINISHED)).order_by(TaskResult.task_id)
        )
        return _archive_response(_recordings(list(results)), entry.id)


@ns.route("/tasks/upcoming", endpoint="upcoming_tasks")
@ns.response(401, "No or bad credentials", error)
class UpcomingTasks(AuthenticatedResource):
    @ns.doc("list_upcoming_tasks")
    @ns.expect(paging)
    @ns.response(400, "Bad query parameter", error)
    @ns.marshal_with(tasks_page, skip_none=True, description="Next tasks, soonest first")
    def get(self):
        """The next task of every active entry the user may see, in the order they run."""
        query = (
            visible_entries()
            .where(ScheduleEntry.is_active.is_(True), ScheduleEntry.next_task_time.is_not(None))
            .order_by(ScheduleEntry.next_task_time, ScheduleEntry.priority, ScheduleEntry.id)
        )
        return paginate(query, paging.parse_args(), render_scheduled)


@ns.route("/tasks/completed", endpoint="completed_tasks")
@ns.response(401, "No or bad credentials", error)
class CompletedTasks(AuthenticatedResource):
    @ns.doc("list_completed_tasks")
    @ns.expect(paging)
    @ns.response(400, "Bad query parameter", error)
    @ns.marshal_with(tasks_page, skip_none=True, description="Finished tasks, newest first")
    def get(self):
        """Finished tasks of every entry the user may see, most recent first."""
        visible = visible_entries().with_only_columns(ScheduleEntry.id)
        query = (
            select(TaskResult)
            .where(TaskResult.status.in_(FINISHED), TaskResult.schedule_entry_id.in_(visible))
            .order_by(TaskResult.finished.desc(), TaskResult.id.desc())
        )
        return paginate(query, paging.parse_args(), render_task)
