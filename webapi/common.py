"""What every namespace shares: the sensor's state per app, the request's database
session, authenticated resources, errors, times, payload validation and pagination.

Every error body is ``{"message": ..., "errors": {field: reason}}`` (``errors`` for
bad input only), and the payload of a write is validated against the very model
that documents it, plus the cross-field rules of the resource.
"""

import datetime
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any
from urllib.parse import urlencode

import jsonschema
from flask import current_app, g, request, url_for
from flask_restx import Model, Namespace, OrderedModel, abort, fields, inputs, reqparse
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from ..acquire import Catalog
from ..config import Config
from ..settings import Settings
from ..storage.database import Database
from ..storage.models import format_duration, format_utc

# Times clients may give: a sensor has no use for others, and arithmetic on them stays
# far from datetime's limits.
EARLIEST = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
LATEST = datetime.datetime(2200, 1, 1, tzinfo=datetime.UTC)
PAGE_LIMIT_DEFAULT = 100
PAGE_LIMIT_MAX = 1000


@dataclass
class SensorApp:
    """The sensor behind one Flask app."""

    settings: Settings
    config: Config
    catalog: Catalog
    database: Database
    started: datetime.datetime

    @property
    def sensor_id(self) -> str:
        return self.config.sensor_id

    @cached_property
    def action_descriptions(self) -> list[dict]:
        """Every action as ``/capabilities`` lists it (Table 22 and its parameters),
        by name; the configuration does not change while the API runs."""
        catalog = self.catalog
        return [
            {
                "name": action.name,
                "summary": action.summary,
                "description": action.description or None,
                "admin_only": action.admin_only,
                "max_run_time": action.max_run_time,
                "parameters": action.resolve(
                    {}, catalog.limits, catalog.flowgraphs[action.flowgraph].parameters
                ),
            }
            for action in sorted(catalog.actions.values(), key=lambda action: action.name)
        ]


def sensor_app() -> SensorApp:
    return current_app.extensions["scos"]


def session() -> Session:
    """The request's database session; closed (uncommitted work rolled back) when
    the request ends. A request that may write gets a writing session (on SQLite it
    waits for another process's write instead of failing)."""
    if "db_session" not in g:
        database = sensor_app().database
        reads = request.method in ("GET", "HEAD", "OPTIONS")
        g.db_session = (database.sessions if reads else database.write_sessions)()
    return g.db_session


def close_session(_exception: BaseException | None) -> None:
    db_session = g.pop("db_session", None)
    if db_session is not None:
        db_session.close()


class UTCDateTime(fields.DateTime):
    """A datetime written as ISO 8601 UTC with milliseconds and ``Z``."""

    __schema_example__ = "2026-11-21T12:00:00.000Z"

    def format(self, value: datetime.datetime | str) -> str:
        if isinstance(value, str):
            value = datetime.datetime.fromisoformat(value)
        return format_utc(value)


class Duration(fields.String):
    """A duration written as ``HH:MM:SS.ffffff`` (as NTIA's scos-sensor does)."""

    __schema_example__ = "00:00:01.250000"

    def format(self, value: datetime.timedelta) -> str:
        return format_duration(value)


def parse_time(field: str, text: str) -> datetime.datetime:
    """A client's ISO 8601 time as aware UTC (a time without offset is UTC)."""
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        bad_request(field, f"not an ISO 8601 date and time: {text!r}")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    try:
        moment = moment.astimezone(datetime.UTC)
    except OverflowError:
        bad_request(field, f"out of range: {text!r}")
    if not EARLIEST <= moment < LATEST:
        bad_request(field, f"must be between {format_utc(EARLIEST)} and {format_utc(LATEST)}")
    return moment


def bad_request(field: str, reason: str, status: int = 400) -> None:
    abort(status, f"{field}: {reason}", errors={field: reason})


def error_model(namespace: Namespace) -> Model:
    return namespace.model(
        "Error",
        {
            "message": fields.String(required=True, description="what went wrong"),
            "errors": fields.Raw(
                description="for bad input: each offending field and the reason",
                example={"interval": "must be at least 1"},
            ),
        },
    )


_validators: dict[tuple[str, bool], jsonschema.Draft4Validator] = {}


def _validator(model: Model, partial: bool) -> jsonschema.Draft4Validator:
    """The validator of ``model``'s schema, made once per model (not per request)."""
    key = (model.name, partial)
    if key not in _validators:
        schema = dict(model.__schema__)
        if partial:
            schema.pop("required", None)
        schema["definitions"] = {}
        _validators[key] = jsonschema.Draft4Validator(schema)
    return _validators[key]


def validate_payload(model: Model, partial: bool = False) -> dict[str, Any]:
    """The request's JSON object, checked against ``model`` (which rejects unknown
    fields); ``partial`` (PATCH) drops the required fields. 400 naming each bad field."""
    payload = request.get_json(silent=True)
    if not isinstance(payload, dict):
        abort(400, "the request body must be a JSON object", errors={"body": "not a JSON object"})
    validator = _validator(model, partial)
    schema = validator.schema
    errors: dict[str, str] = {}
    for error in validator.iter_errors(payload):
        if error.validator == "additionalProperties":
            for name in sorted(set(payload) - set(schema.get("properties", {}))):
                errors.setdefault(name, _unknown_field_reason(model, name))
        elif error.validator == "required":
            missing = error.message.split("'")[1]
            errors.setdefault(missing, "required")
        else:
            field = ".".join(str(part) for part in error.absolute_path) or "body"
            errors.setdefault(field, _reason(error))
    for name, value in payload.items():
        # PostgreSQL text cannot hold NUL (it would answer 500); no field needs one.
        if isinstance(value, str) and "\x00" in value:
            errors.setdefault(name, "must not contain NUL characters")
    if errors:
        summary = "; ".join(f"{field}: {reason}" for field, reason in sorted(errors.items()))
        abort(400, summary, errors=errors)
    return payload


def _unknown_field_reason(model: Model, name: str) -> str:
    read_only = getattr(model, "read_only_fields", ())
    return "read-only" if name in read_only else "unknown field"


def _reason(error: jsonschema.ValidationError) -> str:
    kind = error.validator
    if kind == "type":
        return f"must be of type {error.validator_value}"
    if kind == "minimum":
        return f"must be at least {error.validator_value}"
    if kind == "maximum":
        return f"must be at most {error.validator_value}"
    if kind == "minLength":
        return f"must have at least {error.validator_value} characters"
    if kind == "maxLength":
        return f"must have at most {error.validator_value} characters"
    if kind == "pattern":
        return f"must match {error.validator_value}"
    if kind == "enum":
        return f"must be one of {', '.join(map(str, error.validator_value))}"
    return error.message


def strict_model(
    namespace: Namespace, name: str, model_fields: dict, read_only: Sequence[str] = ()
) -> Model:
    """A request model that rejects unknown fields (naming read-only ones as such)."""
    model = namespace.model(name, model_fields, strict=True)
    model.read_only_fields = tuple(read_only)
    return model


def link(endpoint: str, **values: Any) -> str:
    return url_for(f"api.{endpoint}", _external=True, **values)


def page_parser() -> reqparse.RequestParser:
    parser = reqparse.RequestParser(bundle_errors=True)
    parser.add_argument(
        "limit",
        type=inputs.int_range(1, PAGE_LIMIT_MAX),
        default=PAGE_LIMIT_DEFAULT,
        location="args",
        help=f"limit: results per page, 1 to {PAGE_LIMIT_MAX}.",
    )
    parser.add_argument(
        "offset",
        type=inputs.int_range(0, 2**31 - 1),
        default=0,
        location="args",
        help="offset: index of the first result, from 0.",
    )
    return parser


def page_model(namespace: Namespace, name: str, item: Model) -> OrderedModel:
    return namespace.model(
        name,
        {
            "count": fields.Integer(required=True, description="results in all pages"),
            "next": fields.String(description="URL of the next page"),
            "previous": fields.String(description="URL of the previous page"),
            "results": fields.List(fields.Nested(item, skip_none=True), required=True),
        },
    )


def paginate(
    query: Select,
    arguments: dict,
    render: Callable[[Any], dict],
    extra: Sequence[Any] = (),
) -> dict:
    """One page of ``query`` (ordered), rendered; ``extra`` items (already
    rendered) follow the query's rows, counted and paged with them."""
    limit, offset = arguments["limit"], arguments["offset"]
    db = session()
    stored = db.scalar(select(func.count()).select_from(query.order_by(None).subquery()))
    count = stored + len(extra)
    rows = [render(row) for row in db.scalars(query.limit(limit).offset(offset))]
    if len(rows) < limit:
        start = max(0, offset - stored)
        rows.extend(extra[start : start + limit - len(rows)])
    page = {"count": count, "results": rows}
    if offset + limit < count:
        page["next"] = _page_url(offset + limit, limit)
    if offset > 0:
        page["previous"] = _page_url(max(0, min(offset - limit, count - limit)), limit)
    return page


def _page_url(offset: int, limit: int) -> str:
    arguments = request.args.to_dict() | {"offset": offset, "limit": limit}
    return f"{request.base_url}?{urlencode(sorted(arguments.items()))}"
