"""``/schedule``: schedule entries (Tables 7, 8, 9, 10 and 23).

Rules (those of NTIA's scos-sensor README):

* no ``start``: the first task runs as soon as possible;
* no ``interval``: one task, then the entry deactivates (one-shot);
* ``interval`` without ``stop`` or ``relative_stop``: tasks repeat until the entry is
  deactivated; ``stop`` (absolute) and ``relative_stop`` (seconds after start) are
  exclusive, need an ``interval`` and must come after ``start``; the last task is
  the last one strictly before the stop;
* ``priority`` from -20 (first) to 19 (last), 10 by default: tasks due at the same
  time run in priority order;
* the action must be one the user may schedule (``/capabilities``).

Users see their own entries and the others' that are not private and do not use an
admin-only action; anything else answers 404, so ids do not leak. Only the owner
or an admin may change or delete an entry.
"""

import copy
import datetime
import re
from urllib.parse import quote

from flask import g
from flask_restx import Namespace, abort, fields, inputs
from sqlalchemy import Select, and_, or_, select
from sqlalchemy.exc import IntegrityError

from ..scheduler import series
from ..scheduler.outbound import DestinationError, OutboundPolicy
from ..scheduler.wake import wake
from ..storage import credentials
from ..storage.models import (
    NAME_LENGTH,
    SCHEDULE_ID_LENGTH,
    URL_LENGTH,
    ScheduleEntry,
    utc_now,
)
from .auth import AuthenticatedResource
from .common import (
    UTCDateTime,
    bad_request,
    error_model,
    link,
    page_model,
    page_parser,
    paginate,
    parse_time,
    sensor_app,
    session,
    strict_model,
    validate_payload,
)

ns = Namespace("schedule", description="Schedule entries (Tables 7-10, 23)", path="/schedule")

SCHEDULE_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
PRIORITY_RANGE = (-20, 19)
DEFAULT_PRIORITY = 10
# A century in seconds: longer intervals and stops mean nothing to a sensor.
MAX_SECONDS = 100 * 365 * 86400

error = error_model(ns)

_writable = {
    "name": fields.String(
        required=True,
        min_length=1,
        max_length=NAME_LENGTH,
        pattern=r"\S",
        description="the entry's name (not only spaces)",
    ),
    "schedule_id": fields.String(
        min_length=1,
        max_length=SCHEDULE_ID_LENGTH,
        pattern=SCHEDULE_ID,
        description="unique id (letters, digits, _ . -); derived from the name when omitted",
    ),
    "action": fields.String(
        required=True, min_length=1, max_length=100, description="an action of /capabilities"
    ),
    "start": UTCDateTime(description="first task time (ISO 8601); default: as soon as possible"),
    "stop": UTCDateTime(description="no task at or after this time; needs interval"),
    "interval": fields.Integer(
        min=1, max=MAX_SECONDS, description="seconds between tasks; none: run once"
    ),
    "priority": fields.Integer(
        min=PRIORITY_RANGE[0],
        max=PRIORITY_RANGE[1],
        description="lower runs first among tasks due together; default 10",
    ),
    "is_active": fields.Boolean(description="whether tasks are scheduled; default true"),
    "is_private": fields.Boolean(
        description="hide the entry and its results from other non-admin users; default false"
    ),
    "callback_url": fields.String(
        max_length=URL_LENGTH,
        pattern=r"^https?://",
        description=(
            "where each task's acquisition notification is POSTed; a loopback, link-local "
            "or private host only if listed in SCOS_CALLBACK_HOSTS; no user:password@"
        ),
    ),
}

# Every field of an answered entry that a client cannot set (so a client that sends
# an entry back is told which fields to leave out).
READ_ONLY = (
    "id",
    "next_task_time",
    "next_task_id",
    "created",
    "modified",
    "owner",
    "url",
    "tasks",
    "archive",
)

entry_request = strict_model(
    ns,
    "ScheduleEntryRequest",
    {
        **_writable,
        "relative_stop": fields.Integer(
            min=1, max=MAX_SECONDS, description="stop this many seconds after start; needs interval"
        ),
        "validate_only": fields.Boolean(description="only validate; create or change nothing"),
    },
    read_only=READ_ONLY,
)


def _optional(field: fields.Raw) -> fields.Raw:
    field = copy.copy(field)
    field.required = False
    return field


# PATCH changes only the fields it gives: the same fields, none required.
entry_patch = strict_model(
    ns,
    "ScheduleEntryPatch",
    {name: _optional(field) for name, field in entry_request.items()},
    read_only=READ_ONLY,
)

entry_model = ns.model(
    "ScheduleEntry",
    {
        "id": fields.String(required=True, description="the entry's id (same as schedule_id)"),
        **_writable,
        "schedule_id": fields.String(required=True, description="the entry's id"),
        "start": UTCDateTime(required=True, description="first task time"),
        "priority": fields.Integer(required=True),
        "is_active": fields.Boolean(required=True),
        "is_private": fields.Boolean(required=True),
        "next_task_time": UTCDateTime(description="when the next task runs (absent: none)"),
        "next_task_id": fields.Integer(required=True, description="id of the next task"),
        "created": UTCDateTime(required=True),
        "modified": UTCDateTime(required=True),
        "owner": fields.String(required=True, description="user name of the owner"),
        "url": fields.String(required=True, description="this entry"),
        "tasks": fields.String(required=True, description="this entry's tasks"),
        "archive": fields.String(required=True, description="SigMF archive of all its tasks"),
    },
)


def _boolean(value: str) -> bool:
    """``inputs.boolean``, except that an empty value is no boolean (not false)."""
    if value == "":
        raise ValueError("Invalid literal for boolean(): ''")
    return inputs.boolean(value)


_boolean.__schema__ = {"type": "boolean"}

overview_parser = page_parser()
overview_parser.add_argument(
    "is_active",
    type=_boolean,
    location="args",
    help="is_active: true lists active entries only, false inactive ones.",
)
overview_model = page_model(ns, "ScheduleOverview", entry_model)


def visible_entries() -> Select:
    """The entries the user may see."""
    query = select(ScheduleEntry)
    user = g.user
    if user.is_admin:
        return query
    public_actions = sensor_app().public_actions
    return query.where(
        or_(
            ScheduleEntry.owner_id == user.id,
            and_(ScheduleEntry.is_private.is_(False), ScheduleEntry.action.in_(public_actions)),
        )
    )


def get_entry(schedule_id: str) -> ScheduleEntry:
    # No id holds NUL, which PostgreSQL cannot even compare (it would answer 500).
    entry = (
        None
        if "\x00" in schedule_id
        else session().scalar(visible_entries().where(ScheduleEntry.id == schedule_id))
    )
    if entry is None:
        abort(404, f"no schedule entry {schedule_id!r}")
    return entry


def check_may_change(entry: ScheduleEntry) -> None:
    if not g.user.is_admin and entry.owner_id != g.user.id:
        abort(403, f"schedule entry {entry.id!r} belongs to {entry.owner.username}")


def entry_url(schedule_id: str) -> str:
    """The entry's URL, formatted from the schedule's (one ``url_for`` per request:
    building three links per entry took a fifth of a 100-entry page's time)."""
    if "schedule_url" not in g:
        g.schedule_url = link("schedule")
    return f"{g.schedule_url}/{quote(schedule_id, safe='')}"


def render_entry(entry: ScheduleEntry) -> dict:
    url = entry_url(entry.id)
    return {
        "id": entry.id,
        "schedule_id": entry.id,
        "name": entry.name,
        "action": entry.action,
        "start": entry.start,
        "stop": entry.stop,
        "interval": entry.interval,
        "priority": entry.priority,
        "is_active": entry.is_active,
        "is_private": entry.is_private,
        "callback_url": entry.callback_url,
        "next_task_time": entry.next_task_time,
        "next_task_id": entry.next_task_id,
        "created": entry.created,
        "modified": entry.modified,
        "owner": entry.owner.username,
        "url": url,
        "tasks": f"{url}/tasks",
        "archive": f"{url}/archive",
    }


def _check_action(name: str) -> None:
    sensor = sensor_app()
    actions = {action for action in sensor.catalog.actions if sensor.may_see_action(g.user, action)}
    if name not in actions:
        bad_request("action", f"unknown action {name!r}; schedulable: {', '.join(sorted(actions))}")


def derive_schedule_id(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:SCHEDULE_ID_LENGTH]
    if not slug:
        bad_request("name", "no schedule_id can be derived from it: give a schedule_id")
    return slug


def _check_callback(url: str) -> None:
    """400 naming callback_url unless the sensor may send notifications to ``url``
    (``scheduler/outbound.py``: its form, and where its host resolves to now)."""
    try:
        OutboundPolicy(sensor_app().settings).check_callback_url(url)
    except DestinationError as refusal:
        bad_request("callback_url", str(refusal))


def apply_payload(entry: ScheduleEntry, payload: dict, replace: bool) -> None:
    """Set ``entry`` from a checked payload: all writable fields (POST, PUT: omitted
    ones take their defaults) or only those given (PATCH); then the cross-field
    rules, and the next task time."""
    now = utc_now()

    def given(name: str, default=None):
        if name in payload:
            return payload[name]
        return default if replace else getattr(entry, name)

    if "schedule_id" in payload and entry.id is not None and payload["schedule_id"] != entry.id:
        bad_request("schedule_id", "cannot be changed (it is the entry's id)")
    if "stop" in payload and "relative_stop" in payload:
        bad_request("relative_stop", "give stop or relative_stop, not both")
    entry.name = given("name")
    entry.action = given("action")
    _check_action(entry.action)
    entry.start = (
        parse_time("start", payload["start"]) if "start" in payload else given("start", now)
    )
    if "stop" in payload:
        entry.stop = parse_time("stop", payload["stop"])
    elif "relative_stop" in payload:
        entry.stop = entry.start + datetime.timedelta(seconds=payload["relative_stop"])
    elif replace:
        entry.stop = None
    entry.interval = given("interval")
    entry.priority = given("priority", DEFAULT_PRIORITY)
    entry.is_private = given("is_private", False)
    entry.callback_url = given("callback_url")
    if "callback_url" in payload and entry.callback_url is not None:
        # Only when given: an unchanged URL is checked again at each delivery.
        _check_callback(entry.callback_url)
    stop_field = "relative_stop" if "relative_stop" in payload else "stop"
    if entry.stop is not None:
        if entry.interval is None:
            bad_request(stop_field, "needs an interval (without one the entry runs once)")
        if entry.stop <= entry.start:
            bad_request(stop_field, "must be after start")
        if ("stop" in payload or "relative_stop" in payload) and entry.stop <= now:
            bad_request(stop_field, "must be in the future")
    active = given("is_active", True)
    next_time = series.next_task_time(entry.start, entry.interval, entry.stop, entry.last_task_time)
    if active and next_time is None:
        # Asked for explicitly, it is an error; otherwise the entry has simply run out.
        if payload.get("is_active") is True:
            bad_request(
                "is_active", "no task time is left (stop has passed or the one-shot task ran)"
            )
        active = False
    entry.is_active = active
    entry.next_task_time = next_time if active else None
    entry.modified = now


def store_callback_credential(entry: ScheduleEntry, payload: dict) -> None:
    """Keep, encrypted, the token to send with the entry's acquisition notifications
    (``Authorization: Token ...``, as NTIA's scos-sensor does): the token of the
    request that sets the callback_url, or of the owner changing their entry. An
    admin changing another's entry without giving callback_url leaves the owner's:
    a token only goes to a URL its holder chose or owns. None without a callback_url,
    or when notifications use OAuth2 (SCOS_CALLBACK_AUTH=oauth, SCOS_AUTH=jwt)."""
    settings = sensor_app().settings
    token = g.get("auth_token")
    if entry.callback_url is None or settings.callback_oauth or token is None:
        entry.callback_credential = None
    elif "callback_url" in payload or entry.owner_id == g.user.id:
        entry.callback_credential = credentials.encrypt(settings.secret_key_file, token)


def _commit_and_wake() -> None:
    session().commit()
    wake(sensor_app().settings.home)


@ns.route("", endpoint="schedule")
@ns.response(401, "No or bad credentials", error)
class Schedule(AuthenticatedResource):
    @ns.doc("list_schedule")
    @ns.expect(overview_parser)
    @ns.response(400, "Bad query parameter", error)
    @ns.marshal_with(overview_model, skip_none=True, code=200, description="Table 10")
    def get(self):
        """The schedule entries the user may see, oldest first (Tables 9, 10)."""
        arguments = overview_parser.parse_args()
        query = visible_entries()
        if arguments["is_active"] is not None:
            query = query.where(ScheduleEntry.is_active.is_(arguments["is_active"]))
        query = query.order_by(ScheduleEntry.created, ScheduleEntry.id)
        return paginate(query, arguments, render_entry)

    @ns.doc("create_schedule_entry")
    @ns.expect(entry_request)
    @ns.response(200, "validate_only: the entry as it would be; nothing created", entry_model)
    @ns.response(400, "Invalid entry: errors names each field and the reason", error)
    @ns.response(409, "The schedule_id exists", error)
    @ns.marshal_with(entry_model, skip_none=True, code=201, description="Created (Table 8)")
    def post(self):
        """Create a schedule entry (Table 7)."""
        payload = validate_payload(entry_request)
        if "schedule_id" in payload and not re.fullmatch(SCHEDULE_ID, payload["schedule_id"]):
            # The model's pattern ends in $, which in Python also accepts a final newline.
            bad_request("schedule_id", f"must match {SCHEDULE_ID}")
        entry = ScheduleEntry(
            id=payload.get("schedule_id") or derive_schedule_id(payload["name"]),
            owner=g.user,
            owner_id=g.user.id,
            next_task_id=1,
            created=utc_now(),
        )
        apply_payload(entry, payload, replace=True)
        db = session()
        if db.get(ScheduleEntry, entry.id) is not None:
            _conflict(entry.id)
        if payload.get("validate_only"):
            return render_entry(entry), 200
        store_callback_credential(entry, payload)
        db.add(entry)
        try:
            _commit_and_wake()
        except IntegrityError:
            db.rollback()
            _conflict(entry.id)
        return render_entry(entry), 201, {"Location": link("schedule_entry", schedule_id=entry.id)}


def _conflict(schedule_id: str) -> None:
    bad_request("schedule_id", f"{schedule_id!r} exists; give another schedule_id or name", 409)


@ns.route("/<string:schedule_id>", endpoint="schedule_entry")
@ns.param("schedule_id", "the entry's id")
@ns.response(401, "No or bad credentials", error)
@ns.response(404, "No such entry visible to the user", error)
class ScheduleEntryResource(AuthenticatedResource):
    @ns.doc("get_schedule_entry")
    @ns.marshal_with(entry_model, skip_none=True, description="Table 8")
    def get(self, schedule_id: str):
        """One schedule entry."""
        return render_entry(get_entry(schedule_id))

    @ns.doc("replace_schedule_entry")
    @ns.expect(entry_request)
    @ns.response(400, "Invalid entry", error)
    @ns.response(403, "Not the owner", error)
    @ns.marshal_with(entry_model, skip_none=True, description="Replaced (omitted fields reset)")
    def put(self, schedule_id: str):
        """Replace an entry: fields left out take their defaults."""
        return self._change(schedule_id, replace=True)

    @ns.doc("update_schedule_entry")
    @ns.expect(entry_patch)
    @ns.response(400, "Invalid entry", error)
    @ns.response(403, "Not the owner", error)
    @ns.marshal_with(entry_model, skip_none=True, description="Updated")
    def patch(self, schedule_id: str):
        """Change the given fields of an entry."""
        return self._change(schedule_id, replace=False)

    @ns.doc("delete_schedule_entry")
    @ns.response(204, "Deleted, with its task results and their data files")
    @ns.response(403, "Not the owner", error)
    def delete(self, schedule_id: str):
        """Delete an entry, its task results and their data files."""
        entry = get_entry(schedule_id)
        check_may_change(entry)
        session().delete(entry)
        _commit_and_wake()
        return "", 204

    def _change(self, schedule_id: str, replace: bool):
        entry = get_entry(schedule_id)
        check_may_change(entry)
        payload = validate_payload(entry_request if replace else entry_patch)
        db = session()
        if payload.get("validate_only"):
            # Validate on a detached copy, so nothing changes.
            with db.no_autoflush:
                apply_payload(entry, payload, replace)
                rendered = render_entry(entry)
            db.rollback()
            return rendered
        apply_payload(entry, payload, replace)
        store_callback_credential(entry, payload)
        _commit_and_wake()
        return render_entry(entry)
