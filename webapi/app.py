"""The Flask application: the SCOS HTTP API (section 8.2.1) under ``/api/v1``, its
OpenAPI document at ``/api/v1/swagger.json`` and Swagger UI at ``/api/v1/docs``.

``create_app`` checks the settings and the configuration, migrates the database
to the newest schema and stores the configured location (or, when the database is
unreachable, leaves that to the first request that reaches it: ``availability.py``);
gunicorn serves it with ``grscos.webapi.wsgi:app``.
"""

import datetime
import functools
import logging

from flask import Blueprint, Flask, jsonify
from flask_restx import Api
from sqlalchemy import select
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from .. import __version__
from ..acquire import Catalog
from ..settings import Settings
from ..storage.database import Database
from ..storage.models import Location, utc_now
from ..storage.outage import OutageRecord
from . import capabilities, metrics, root, schedule, status, tasks, users
from .auth import SECURITY
from .availability import RETRY_AFTER_SECONDS, DatabaseAvailability
from .common import MAX_BODY_BYTES, MAX_CONTENT_LENGTH, SensorApp, close_session, read_body

logger = logging.getLogger(__name__)

API_PREFIX = "/api/v1"


class SensorApi(Api):
    """Flask-RESTX's Api, whose API root is our own resource (``root.py``, endpoint
    ``root``) instead of its empty placeholder."""

    def _register_doc(self, app_or_blueprint):
        if self._add_specs and self._doc:
            app_or_blueprint.add_url_rule(self._doc, "doc", self.render_doc)

    @property
    def __schema__(self) -> dict:
        """The OpenAPI document, with the answers every operation may give, which no
        resource documents itself: 503 (database unreachable) and, for an operation
        that takes a body, 413."""
        document = super().__schema__
        for item in document.get("paths", {}).values():
            for method, operation in item.items():
                if method == "parameters":
                    continue
                responses = operation.setdefault("responses", {})
                responses.setdefault("503", _UNREACHABLE)
                if any(parameter["in"] == "body" for parameter in operation.get("parameters", ())):
                    responses.setdefault("413", _TOO_LARGE)
        return document


_ERROR = {"$ref": "#/definitions/Error"}
_UNREACHABLE = {
    "description": "The database is unreachable (errors.database says since when)",
    "schema": _ERROR,
    "headers": {
        "Retry-After": {
            "type": "integer",
            "description": f"seconds to wait before trying again ({RETRY_AFTER_SECONDS})",
        }
    },
}
_TOO_LARGE = {"description": f"The body is larger than {MAX_BODY_BYTES} bytes", "schema": _ERROR}


def create_app(settings: Settings | None = None, database: Database | None = None) -> Flask:
    """The API of the sensor that ``settings`` (default: environment and settings
    file) describe, on ``database`` (default: the settings' database URL)."""
    settings = settings or Settings.load()
    config = settings.config()
    catalog = Catalog.load(config)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    database = database or Database(settings.database_url, settings.data_dir)
    availability = DatabaseAvailability(
        OutageRecord(settings.home), functools.partial(prepare_database, database, config.location)
    )
    availability.start()

    app = Flask("grscos")
    app.url_map.strict_slashes = False
    app.config["MAX_CONTENT_LENGTH"] = MAX_CONTENT_LENGTH
    app.config["RESTX_MASK_SWAGGER"] = False
    app.config["RESTX_ERROR_404_HELP"] = False
    app.config["RESTX_JSON"] = {"indent": None, "separators": (",", ":")}
    app.extensions["scos"] = SensorApp(settings, config, catalog, database, availability, utc_now())
    app.before_request(read_body)
    app.teardown_appcontext(close_session)
    # Behind nginx: trust its X-Forwarded-* for the scheme and host of links.
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_host=1, x_port=1)

    blueprint = Blueprint("api", __name__, url_prefix=API_PREFIX)
    api = SensorApi(
        blueprint,
        version=__version__,
        title="gr-scos sensor API",
        description=(
            "IEEE 802.15.22.3 (SCOS) sensor API, section 8.2.1. Authenticate with "
            "`Authorization: Token <key>` (or `Bearer <JWT>` when the sensor uses JWTs)."
        ),
        doc="/docs",
        authorizations={settings.auth: SECURITY[settings.auth]},
        security=settings.auth,
        validate=False,
    )
    for namespace in (
        root.ns,
        status.ns,
        capabilities.ns,
        schedule.ns,
        tasks.ns,
        users.ns,
        metrics.ns,
    ):
        api.add_namespace(namespace)
    app.register_blueprint(blueprint)
    app.register_error_handler(HTTPException, _json_error)
    return app


def _json_error(error: HTTPException):
    """Errors outside the resources (unknown URL, wrong method, a body too large for
    any URL) as JSON too."""
    response = error.get_response()
    body = jsonify(getattr(error, "data", None) or {"message": error.description})
    body.status_code = error.code
    for name, value in response.headers.items():
        if name.lower() not in ("content-type", "content-length"):
            body.headers[name] = value
    return body


def prepare_database(database: Database, location: dict) -> None:
    """The API's start-up work on its database: migrate it to the newest schema, and
    store the configured location."""
    database.upgrade()
    with database.session() as db:
        sync_location(db, location)


def sync_location(db, location: dict) -> None:
    """Store the configured location (Table 21) unless it is already stored."""
    row = db.scalar(select(Location))
    values = {
        "gps": bool(location.get("gps", False)),
        "description": str(location.get("description", "")),
        "latitude": location.get("latitude"),
        "longitude": location.get("longitude"),
        "altitude": location.get("altitude"),
    }
    if row is None:
        row = Location(**values)
        db.add(row)
    elif all(getattr(row, name) == value for name, value in values.items()):
        return
    for name, value in values.items():
        setattr(row, name, value)
    modified = location.get("modified")
    row.modified = (
        datetime.datetime.fromisoformat(str(modified)).astimezone(datetime.UTC)
        if modified
        else utc_now()
    )
