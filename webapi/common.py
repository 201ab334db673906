"""What every namespace shares: the sensor's state per app, the request's database
session, authenticated resources, errors, times, payload validation and pagination.

Every error body is ``{"message": ..., "errors": {field: reason}}`` (``errors`` for
bad input only), and the payload of a write is validated against the very model
that documents it, plus the cross-field rules of the resource. A body is at most
MAX_BODY_BYTES (413 beyond) and nests at most MAX_BODY_DEPTH levels (400 beyond), so
that no body is read whole past the limit nor parsed by recursing without bound.
"""

import datetime
import itertools
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlencode

import jsonschema
from flask import current_app, g, request, url_for
from flask_restx import Model, Namespace, OrderedModel, abort, fields, inputs, reqparse
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session
from werkzeug.exceptions import RequestEntityTooLarge

from ..acquire import Catalog
from ..config import Config
from ..settings import Settings
from ..storage.database import Database
from ..storage.models import User, format_duration, format_utc

if TYPE_CHECKING:
    from .availability import DatabaseAvailability

# Times clients may give: a sensor has no use for others, and arithmetic on them stays
# far from datetime's limits.
EARLIEST = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
LATEST = datetime.datetime(2200, 1, 1, tzinfo=datetime.UTC)
PAGE_LIMIT_DEFAULT = 100
PAGE_LIMIT_MAX = 1000
# As nginx's client_max_body_size (deploy/nginx): entries and users are small JSON.
MAX_BODY_BYTES = 1 << 20
# Flask's MAX_CONTENT_LENGTH: werkzeug ends a chunked body at this limit without an
# error, so it reads one byte more, which tells a body of MAX_BODY_BYTES from a longer one.
MAX_CONTENT_LENGTH = MAX_BODY_BYTES + 1
# The request models are flat; JSON's parser recurses once per level of nesting.
MAX_BODY_DEPTH = 32


@dataclass
class SensorApp:
    """The sensor behind one Flask app."""

    settings: Settings
    config: Config
    catalog: Catalog
    database: Database
    availability: "DatabaseAvailability"
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

    @cached_property
    def public_actions(self) -> frozenset[str]:
        """The configured actions that are not admin-only."""
        return frozenset(
            name for name, action in self.catalog.actions.items() if not action.admin_only
        )

    def may_see_action(self, user: User, action: str) -> bool:
        """Whether ``user`` may see ``action``: an admin every action (in ``/metrics``
        also one no longer configured), anyone else the configured actions that are
        not admin-only. ``/capabilities`` lists, ``/metrics`` counts and schedule
        entries name only actions their user may see."""
        return user.is_admin or action in self.public_actions


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


def read_body() -> None:
    """Read the request's body (kept for the request), or answer 413 when it is larger
    than MAX_BODY_BYTES: at once for a declared length, after MAX_BODY_BYTES for a
    chunked one. Run before every request (``create_app``), so that no endpoint, even
    one that ignores the body, accepts what nginx would refuse."""
    try:
        too_large = len(request.get_data(cache=True)) > MAX_BODY_BYTES
    except RequestEntityTooLarge:  # its Content-Length says so
        too_large = True
    if too_large:
        bad_request("body", f"larger than the limit of {MAX_BODY_BYTES} bytes (1 MiB)", 413)


_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_A_BRACKET = re.compile(r"[^][{}]+")
_NESTING = {"[": 1, "{": 1, "]": -1, "}": -1}
_SURROGATE = re.compile("[\ud800-\udfff]")


def nesting_depth(text: str) -> int:
    """How deep arrays and objects nest in JSON ``text``, found without parsing it
    (strings are skipped, so brackets inside them do not count)."""
    brackets = _NOT_A_BRACKET.sub("", _JSON_STRING.sub("", text))
    return max(itertools.accumulate(map(_NESTING.__getitem__, brackets)), default=0)


def _refuse_constant(constant: str) -> NoReturn:
    raise ValueError(f"{constant} is not JSON")


def request_json() -> Any:
    """The request's body as JSON; 400 naming ``body`` when it is not JSON or nests
    more than MAX_BODY_DEPTH levels (checked before parsing, which recurses)."""
    if not request.is_json:
        bad_request("body", "not a JSON object (Content-Type is not application/json)")
    data = request.get_data(cache=True)
    try:
        text = data.decode(json.detect_encoding(data), "surrogatepass")
    except UnicodeDecodeError as error:
        bad_request("body", f"not a JSON object: {error.reason}")
    if nesting_depth(text) > MAX_BODY_DEPTH:
        bad_request("body", f"nested more than {MAX_BODY_DEPTH} levels deep")
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as error:
        bad_request(
            "body", f"not a JSON object: {error.msg} at line {error.lineno} column {error.colno}"
        )
    except ValueError as error:  # a number beyond int's digit limit, NaN, Infinity
        bad_request("body", f"not a JSON object: {error}")


def validate_payload(model: Model, partial: bool = False) -> dict[str, Any]:
    """The request's JSON object, checked against ``model`` (which rejects unknown
    fields); ``partial`` (PATCH) drops the required fields. 400 naming each bad field."""
    payload = request_json()
    if not isinstance(payload, dict):
        bad_request("body", "not a JSON object")
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
        # A \ud800 escape without its pair is valid JSON but no text: no database
        # stores it (it would answer 500).
        elif isinstance(value, str) and _SURROGATE.search(value):
            errors.setdefault(name, "must not contain unpaired UTF-16 surrogates")
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
