"""``/status`` (Table 4), from the database and the filesystem only: reading it never
touches the radio, so it answers at once while a task runs."""

import shutil

from flask_restx import Namespace, fields
from sqlalchemy import select

from ..storage.models import SCHEDULER_DEAD_AFTER_SECONDS, Location, SchedulerState, utc_now
from .auth import AuthenticatedResource
from .common import UTCDateTime, error_model, sensor_app, session

ns = Namespace("status", description="Sensor status (Table 4)", path="/status")
error = error_model(ns)

SCHEDULER_STATES = ["idle", "running", "dead"]

location_model = ns.model(
    "Location",
    {
        "gps": fields.Boolean(description="from a GPS receiver"),
        "modified": UTCDateTime(description="time of the last location update"),
        "description": fields.String(),
        "latitude": fields.Float(description="decimal degrees"),
        "longitude": fields.Float(description="decimal degrees"),
        "altitude": fields.Float(description="metres above mean sea level"),
    },
)
disk_model = ns.model(
    "DiskUsage",
    {
        "total_bytes": fields.Integer(required=True),
        "used_bytes": fields.Integer(required=True),
        "free_bytes": fields.Integer(required=True),
        "percent": fields.Float(required=True, description="of the data directory's filesystem"),
        "max_percent": fields.Float(
            required=True, description="MAX_DISK_USAGE: above it the oldest data is deleted"
        ),
    },
)
status_model = ns.model(
    "Status",
    {
        "sensor_id": fields.String(),
        "scheduler": fields.String(required=True, enum=SCHEDULER_STATES),
        "location": fields.Nested(location_model, skip_none=True),
        "system_time": UTCDateTime(required=True),
        "start_time": UTCDateTime(required=True, description="when this API process started"),
        "calibration_datetime": UTCDateTime(description="last calibration"),
        "disk_usage": fields.Nested(disk_model, required=True),
        "healthy": fields.Boolean(required=True),
        "problems": fields.List(
            fields.String, required=True, description="why the sensor is not healthy"
        ),
    },
)


def scheduler_state() -> tuple[str, SchedulerState | None]:
    """idle, running or dead, and the scheduler's row when it lives."""
    state = session().scalar(select(SchedulerState))
    if state is None:
        return "dead", None
    if (utc_now() - state.heartbeat).total_seconds() > SCHEDULER_DEAD_AFTER_SECONDS:
        return "dead", None
    return state.state, state


def disk_usage() -> dict:
    sensor = sensor_app()
    usage = shutil.disk_usage(sensor.database.data_dir)
    return {
        "total_bytes": usage.total,
        "used_bytes": usage.used,
        "free_bytes": usage.free,
        "percent": round(100 * usage.used / usage.total, 2),
        "max_percent": sensor.settings.max_disk_usage,
    }


@ns.route("", endpoint="status")
@ns.response(401, "No or bad credentials", error)
class Status(AuthenticatedResource):
    @ns.doc("get_status")
    @ns.marshal_with(status_model, skip_none=True, description="Table 4")
    def get(self):
        """The sensor's status: scheduler, location, times, disk and health."""
        sensor = sensor_app()
        scheduler, state = scheduler_state()
        disk = disk_usage()
        problems = []
        if state is None:
            problems.append("the scheduler is not running")
        else:
            if state.consecutive_failures:
                problems.append(
                    f"{state.consecutive_failures} task(s) in a row failed; the last: "
                    f"{state.last_failure}"
                )
            if state.sigan_error:
                problems.append(state.sigan_error)
        if disk["percent"] >= disk["max_percent"]:
            problems.append(f"disk usage {disk['percent']}% is at or above {disk['max_percent']}%")
        location = session().scalar(select(Location))
        calibration = sensor.config.calibration.calibration_datetime
        return {
            "sensor_id": sensor.sensor_id or None,
            "scheduler": scheduler,
            "location": location,
            "system_time": utc_now(),
            "start_time": sensor.started,
            "calibration_datetime": calibration,
            "disk_usage": disk,
            "healthy": not problems,
            "problems": problems,
        }
