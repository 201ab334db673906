"""``/status`` (Table 4), from the database and the filesystem only (``storage/health.py``):
reading it never touches the radio, so it answers at once while a task runs."""

from flask_restx import Namespace, fields
from sqlalchemy import select

from ..storage.health import SCHEDULER_STATES, DiskUsage, Health, health
from ..storage.models import Location, utc_now
from .auth import AuthenticatedResource
from .common import UTCDateTime, error_model, sensor_app, session

ns = Namespace("status", description="Sensor status (Table 4)", path="/status")
error = error_model(ns)

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
        "percent": fields.Float(
            required=True,
            description="of the data filesystem's space the sensor may use, as df shows it",
        ),
        "max_percent": fields.Float(
            required=True, description="MAX_DISK_USAGE: above it the oldest data is deleted"
        ),
    },
)
status_model = ns.model(
    "Status",
    {
        "sensor_id": fields.String(),
        "scheduler": fields.String(required=True, enum=list(SCHEDULER_STATES)),
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


def sensor_health() -> Health:
    sensor = sensor_app()
    disk = DiskUsage.measure(sensor.database.data_dir, sensor.settings.max_disk_usage)
    return health(session(), disk, sensor.availability.record.current())


@ns.route("", endpoint="status")
@ns.response(401, "No or bad credentials", error)
class Status(AuthenticatedResource):
    @ns.doc("get_status")
    @ns.marshal_with(status_model, skip_none=True, description="Table 4")
    def get(self):
        """The sensor's status: scheduler, location, times, disk and health."""
        sensor = sensor_app()
        current = sensor_health()
        location = session().scalar(select(Location))
        calibration = sensor.config.calibration.calibration_datetime
        return {
            "sensor_id": sensor.sensor_id or None,
            "scheduler": current.scheduler,
            "location": location,
            "system_time": utc_now(),
            "start_time": sensor.started,
            "calibration_datetime": calibration,
            "disk_usage": current.disk.as_dict(),
            "healthy": current.healthy,
            "problems": current.problems,
        }
