"""``/api/v1/schedule`` and ``/api/v1/schedule/{schedule_id}``: validation, the
scheduling rules of NTIA's scos-sensor README, replacement against merging, waking
the scheduler, deletion, errors and the paged overview (IEEE 802.15.22.3 Tables
7-10 and 23).

Requests that must be rejected change nothing, so they share one app per backend
(``shared``), which keeps the tables of bad inputs fast; the other tests share
another app per backend whose schedule is emptied after each test (``api``).
"""

import contextlib
import datetime
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select

from grscos.scheduler.wake import WakeListener
from grscos.settings import HostList
from grscos.storage.models import ScheduleEntry, utc_now
from tests.api.conftest import Api, _fresh_database, make_api

SCHEDULE = "/api/v1/schedule"
# Listed in SCOS_CALLBACK_HOSTS by this module's apps: example.com is not resolved
# then (the tests need no DNS), and 2001:db8::/32 may be written in a URL.
CALLBACK_HOSTS = HostList.parse("example.com 2001:db8::/32")
UNLISTED = "; not allowed unless listed in SCOS_CALLBACK_HOSTS"
MAX_SECONDS = 100 * 365 * 86400
UTC_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
TIME_FIELDS = ("start", "stop", "next_task_time", "created", "modified")
WRITABLE_FIELDS = {
    "name",
    "schedule_id",
    "action",
    "start",
    "stop",
    "interval",
    "priority",
    "is_active",
    "is_private",
    "callback_url",
}
READ_ONLY_FIELDS = (
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

# Reference times for the tables below (a test session lasts minutes, not days).
_NOW = utc_now().replace(microsecond=0)
PAST = _NOW - datetime.timedelta(days=1)
FUTURE = _NOW + datetime.timedelta(days=1)
LATER = FUTURE + datetime.timedelta(hours=1)
# A field left out of a request body (the tables otherwise merge into a valid body).
OMIT = object()


# --- helpers ----------------------------------------------------------------------------


def entry_url(schedule_id: str) -> str:
    return f"{SCHEDULE}/{schedule_id}"


def iso(moment: datetime.datetime) -> str:
    return moment.isoformat()


def parse(text: str) -> datetime.datetime:
    """A time of a response, checked to be ISO 8601 UTC with milliseconds and Z."""
    assert UTC_Z.match(text), text
    return datetime.datetime.fromisoformat(text)


def floor_ms(moment: datetime.datetime) -> datetime.datetime:
    """``moment`` as the API writes it (milliseconds, truncated)."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def body_with(base: dict, overrides: dict) -> dict:
    body = dict(base)
    for name, value in overrides.items():
        if value is OMIT:
            body.pop(name, None)
        else:
            body[name] = value
    return body


def assert_error(response, status: int, field: str, reason: str = "") -> None:
    """A JSON error of ``status`` whose ``errors`` name ``field`` with a reason
    containing ``reason``, and whose ``message`` says something."""
    assert response.status_code == status, (response.status_code, response.get_data(True))
    body = response.get_json()
    assert isinstance(body, dict), response.get_data(True)
    assert isinstance(body.get("message"), str) and body["message"], body
    errors = body.get("errors")
    assert isinstance(errors, dict) and field in errors, body
    assert isinstance(errors[field], str) and errors[field], body
    assert reason.lower() in errors[field].lower(), body


def assert_json_error(response, status: int) -> dict:
    assert response.status_code == status, (response.status_code, response.get_data(True))
    body = response.get_json()
    assert isinstance(body, dict) and isinstance(body.get("message"), str), body
    return body


def entry_ids(page: dict) -> list[str]:
    return [entry["id"] for entry in page["results"]]


def overview(api: Api, query: str = "", user: str = "admin") -> dict:
    response = api.get(f"{SCHEDULE}{query}", user=user)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def fetch(api: Api, schedule_id: str, user: str = "admin") -> dict:
    response = api.get(entry_url(schedule_id), user=user)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def change(api: Api, method: str, schedule_id: str, body: dict, user: str = "admin") -> dict:
    response = api.call(method, entry_url(schedule_id), user, json=body)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def consume(api: Api, schedule_id: str, task_time: datetime.datetime) -> None:
    """Do what the scheduler does when it runs the entry's task at ``task_time``:
    record the task, mark the time consumed, and move to the next time or, for a
    one-shot or an exhausted entry, deactivate it."""
    api.add_task(schedule_id)
    with api.database.session() as db:
        entry = db.get(ScheduleEntry, schedule_id)
        entry.last_task_time = task_time
        following = None
        if entry.interval is not None:
            following = task_time + datetime.timedelta(seconds=entry.interval)
            if entry.stop is not None and following >= entry.stop:
                following = None
        entry.next_task_time = following
        entry.is_active = following is not None


def data_files(directory: Path) -> list[Path]:
    return sorted(path for path in directory.rglob("*") if path.is_file())


def finished_tasks(api: Api, schedule_id: str) -> list[dict]:
    """The entry's task results (its tasks but the upcoming one)."""
    response = api.get(f"{entry_url(schedule_id)}/tasks?limit=1000")
    assert response.status_code == 200, response.get_json()
    return [task for task in response.get_json()["results"] if task["status"] != "scheduled"]


@contextlib.contextmanager
def listening(api: Api) -> Iterator[WakeListener]:
    """The scheduler's end of the wake-up socket, bound for the block."""
    listener = WakeListener(api.settings.home)
    try:
        yield listener
    finally:
        listener.close()


# --- fixtures ---------------------------------------------------------------------------


@dataclass
class Shared:
    """The app of the tests whose requests must fail: its only entry is ``taken``
    (the admin's one-shot, start in a day), as answered when created."""

    api: Api
    taken: dict

    def assert_unchanged(self) -> None:
        assert fetch(self.api, "taken") == self.taken
        assert overview(self.api)["count"] == 1


def module_api(request, tmp_path_factory, migrated_templates, api_config, label: str) -> Api:
    """An app for the module on the backend ``request.param``, disposed at its end."""
    home = tmp_path_factory.mktemp(f"{label}-{request.param}")
    url = _fresh_database(request.param, home, request, migrated_templates)
    sensor = make_api(home, url, api_config, callback_hosts=CALLBACK_HOSTS)
    request.addfinalizer(sensor.database.dispose)
    return sensor


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def shared(request, tmp_path_factory, migrated_templates, api_config) -> Shared:
    sensor = module_api(request, tmp_path_factory, migrated_templates, api_config, "rejects")
    taken = sensor.schedule(name="Taken", schedule_id="taken", start=iso(FUTURE))
    return Shared(sensor, taken)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def module_app(request, tmp_path_factory, migrated_templates, api_config) -> Api:
    return module_api(request, tmp_path_factory, migrated_templates, api_config, "schedule")


@pytest.fixture
def api(module_app) -> Iterator[Api]:
    """Conftest's ``api`` (an admin, alice and bob), but one app per backend for the
    module, its schedule (with task results and data files) emptied after each test:
    a fresh app per test would cost most of this module's run time."""
    with module_app.database.session() as db:
        assert db.scalars(select(ScheduleEntry)).first() is None, "a test left entries"
    yield module_app
    with module_app.database.session() as db:
        for entry in db.scalars(select(ScheduleEntry)):
            db.delete(entry)


# --- validation: tables of bad inputs ---------------------------------------------------

# Fields that are wrong whatever the request: (overrides, field named, reason), merged
# into a valid body for POST and PUT, and sent alone (on the one-shot ``taken``,
# start in a day) for PATCH.
FIELD_CASES = [
    pytest.param({"name": ""}, "name", "at least 1", id="name-empty"),
    pytest.param({"name": 5}, "name", "type string", id="name-number"),
    pytest.param({"name": "n" * 201}, "name", "at most 200", id="name-too-long"),
    pytest.param({"name": "nul\x00"}, "name", "NUL", id="name-nul"),
    pytest.param({"callback_url": "http://h/\x00"}, "callback_url", "", id="callback-nul"),
    pytest.param({"action": "make_coffee"}, "action", "unknown action", id="action-unknown"),
    pytest.param({"action": ""}, "action", "at least 1", id="action-empty"),
    pytest.param({"action": ["acquire_iq"]}, "action", "type string", id="action-list"),
    pytest.param({"schedule_id": "-leading-dash"}, "schedule_id", "must match", id="id-dash"),
    pytest.param({"schedule_id": "with space"}, "schedule_id", "must match", id="id-space"),
    pytest.param({"schedule_id": "a/b"}, "schedule_id", "must match", id="id-slash"),
    pytest.param({"schedule_id": "café"}, "schedule_id", "must match", id="id-non-ascii"),
    pytest.param({"schedule_id": ""}, "schedule_id", "at least 1", id="id-empty"),
    pytest.param({"schedule_id": "i" * 201}, "schedule_id", "at most 200", id="id-too-long"),
    pytest.param({"schedule_id": 7}, "schedule_id", "type string", id="id-number"),
    pytest.param({"start": "tomorrow"}, "start", "ISO 8601", id="start-words"),
    pytest.param({"start": "2030-13-01T00:00:00Z"}, "start", "ISO 8601", id="start-month-13"),
    pytest.param({"start": "2030-01-01T25:00:00Z"}, "start", "ISO 8601", id="start-hour-25"),
    pytest.param({"start": "2030-06-30T23:59:60Z"}, "start", "ISO 8601", id="start-leap-second"),
    pytest.param({"start": "2030-01-01T00:00:00+25:00"}, "start", "ISO 8601", id="start-offset"),
    pytest.param({"start": ""}, "start", "ISO 8601", id="start-empty"),
    pytest.param({"start": 1700000000}, "start", "type string", id="start-number"),
    pytest.param({"start": "1969-12-31T23:59:59Z"}, "start", "between", id="start-before-1970"),
    pytest.param({"start": "2200-01-01T00:00:00Z"}, "start", "between", id="start-2200"),
    pytest.param({"start": "0001-01-01T00:00:00+01:00"}, "start", "range", id="start-underflow"),
    pytest.param({"start": "9999-12-31T23:59:59-01:00"}, "start", "range", id="start-overflow"),
    pytest.param({"interval": 60, "stop": "next week"}, "stop", "ISO 8601", id="stop-not-iso"),
    pytest.param(
        {"interval": 60, "stop": "2200-01-01T00:00:00Z"}, "stop", "between", id="stop-2200"
    ),
    pytest.param(
        {"interval": 60, "stop": iso(LATER), "relative_stop": 60},
        "relative_stop",
        "not both",
        id="stop-and-relative-stop",
    ),
    pytest.param({"stop": iso(LATER)}, "stop", "needs an interval", id="stop-no-interval"),
    pytest.param(
        {"relative_stop": 60}, "relative_stop", "needs an interval", id="relative-stop-no-interval"
    ),
    pytest.param(
        {"start": iso(LATER), "stop": iso(FUTURE), "interval": 60},
        "stop",
        "after start",
        id="stop-before-start",
    ),
    pytest.param(
        {"start": iso(FUTURE), "stop": iso(FUTURE), "interval": 60},
        "stop",
        "after start",
        id="stop-equals-start",
    ),
    pytest.param(
        {"start": iso(PAST - datetime.timedelta(hours=2)), "stop": iso(PAST), "interval": 60},
        "stop",
        "future",
        id="stop-in-past",
    ),
    pytest.param(
        {"start": iso(PAST), "relative_stop": 3600, "interval": 60},
        "relative_stop",
        "future",
        id="relative-stop-in-past",
    ),
    pytest.param({"interval": 0}, "interval", "at least 1", id="interval-zero"),
    pytest.param({"interval": -60}, "interval", "at least 1", id="interval-negative"),
    pytest.param({"interval": 1.5}, "interval", "type integer", id="interval-float"),
    pytest.param({"interval": 2.0}, "interval", "type integer", id="interval-integral-float"),
    pytest.param({"interval": "60"}, "interval", "type integer", id="interval-string"),
    pytest.param({"interval": True}, "interval", "type integer", id="interval-bool"),
    pytest.param({"interval": MAX_SECONDS + 1}, "interval", "at most", id="interval-too-big"),
    pytest.param({"interval": 10**30}, "interval", "at most", id="interval-huge"),
    pytest.param(
        {"interval": 60, "relative_stop": 0}, "relative_stop", "at least 1", id="rel-stop-zero"
    ),
    pytest.param(
        {"interval": 60, "relative_stop": -5}, "relative_stop", "at least 1", id="rel-stop-neg"
    ),
    pytest.param(
        {"interval": 60, "relative_stop": 9.5}, "relative_stop", "type integer", id="rel-stop-float"
    ),
    pytest.param(
        {"interval": 60, "relative_stop": "60"},
        "relative_stop",
        "type integer",
        id="rel-stop-string",
    ),
    pytest.param(
        {"interval": 60, "relative_stop": False},
        "relative_stop",
        "type integer",
        id="rel-stop-bool",
    ),
    pytest.param(
        {"interval": 60, "relative_stop": MAX_SECONDS + 1},
        "relative_stop",
        "at most",
        id="rel-stop-too-big",
    ),
    pytest.param({"priority": -21}, "priority", "at least -20", id="priority-below"),
    pytest.param({"priority": 20}, "priority", "at most 19", id="priority-above"),
    pytest.param({"priority": 1.5}, "priority", "type integer", id="priority-float"),
    pytest.param({"priority": "1"}, "priority", "type integer", id="priority-string"),
    pytest.param({"priority": True}, "priority", "type integer", id="priority-bool"),
    pytest.param({"is_active": "true"}, "is_active", "type boolean", id="is-active-string"),
    pytest.param({"is_active": 1}, "is_active", "type boolean", id="is-active-number"),
    pytest.param({"is_private": "no"}, "is_private", "type boolean", id="is-private-string"),
    pytest.param({"is_private": 0}, "is_private", "type boolean", id="is-private-number"),
    pytest.param({"validate_only": "yes"}, "validate_only", "type boolean", id="validate-string"),
    pytest.param(
        {"callback_url": "ftp://example.com/cb"}, "callback_url", "must match", id="callback-ftp"
    ),
    pytest.param(
        {"callback_url": "example.com/cb"}, "callback_url", "must match", id="callback-relative"
    ),
    pytest.param({"callback_url": "http://"}, "callback_url", "host", id="callback-no-host"),
    pytest.param(
        {"callback_url": "https://:8443/cb"}, "callback_url", "host", id="callback-port-no-host"
    ),
    pytest.param(
        {"callback_url": "http://exa mple.com/cb"}, "callback_url", "", id="callback-space"
    ),
    pytest.param(
        {"callback_url": "http://example.com:99999/cb"},
        "callback_url",
        "port",
        id="callback-port-range",
    ),
    pytest.param(
        {"callback_url": "http://example.com:http/cb"},
        "callback_url",
        "port",
        id="callback-port-text",
    ),
    pytest.param({"callback_url": 80}, "callback_url", "type string", id="callback-number"),
    # Where a callback may go (scheduler/outbound.py); this app lists CALLBACK_HOSTS.
    *(
        pytest.param({"callback_url": url}, "callback_url", reason, id=f"callback-{name}")
        for name, url, reason in [
            ("loopback", "http://127.0.0.1:8000/cb", f"127.0.0.1 is a loopback address{UNLISTED}"),
            ("loopback-v6", "http://[::1]:8000/cb", f"::1 is a loopback address{UNLISTED}"),
            ("localhost", "http://localhost:8000/cb", f"a loopback address{UNLISTED}"),
            ("metadata", "http://169.254.169.254/latest", "169.254.169.254 is a link-local"),
            ("private", "https://10.0.0.1/cb", f"10.0.0.1 is a private address{UNLISTED}"),
            ("private-192", "https://192.168.1.20/cb", "192.168.1.20 is a private address"),
            ("unique-local", "https://[fd00::1]/cb", "fd00::1 is a unique-local address"),
            ("unspecified", "http://0.0.0.0:8000/cb", "0.0.0.0 is an unspecified address"),
            ("userinfo", "https://user:secret@example.com/cb", "must not hold a user name"),
            ("bad-ipv6", "http://[::1/x", "is not a valid URL"),
            ("bad-brackets", "http://[zz]/x", "is not a valid URL"),
            (
                "no-dns",
                "http://no-such-host.invalid/cb",
                "host no-such-host.invalid does not resolve",
            ),
        ]
    ),
    pytest.param(
        {"callback_url": "http://example.com/" + "c" * 1982},
        "callback_url",
        "at most 2000",
        id="callback-too-long",
    ),
    pytest.param({"color": "blue"}, "color", "unknown field", id="unknown-field"),
    pytest.param({"Name": "x"}, "Name", "unknown field", id="unknown-field-case"),
    *(
        pytest.param({name: "x"}, name, "read-only", id=f"read-only-{name}")
        for name in READ_ONLY_FIELDS
    ),
    pytest.param({"next_task_id": 5}, "next_task_id", "read-only", id="read-only-number"),
]

# Only for a complete entry (POST, PUT).
REQUIRED_CASES = [
    pytest.param({"name": OMIT}, "name", "required", id="name-missing"),
    pytest.param({"action": OMIT}, "action", "required", id="action-missing"),
]

# Only when the schedule_id is derived from the name (POST without schedule_id).
DERIVED_ID_CASES = [
    pytest.param({"name": "!!! ???"}, "name", "schedule_id", id="name-punctuation"),
    pytest.param({"name": "   "}, "name", "must match", id="name-blank"),
    pytest.param({"name": "ééé"}, "name", "schedule_id", id="name-non-ascii"),
]

NOT_AN_OBJECT = [
    pytest.param({"data": b"{not json", "content_type": "application/json"}, id="not-json"),
    pytest.param({"data": b"", "content_type": "application/json"}, id="empty"),
    pytest.param({"json": [{"name": "x", "action": "acquire_iq"}]}, id="array"),
    pytest.param({"json": "acquire_iq"}, id="string"),
    pytest.param({"data": b"null", "content_type": "application/json"}, id="null"),
    pytest.param({"data": b"name=x&action=acquire_iq", "content_type": "text/plain"}, id="form"),
]


@pytest.mark.parametrize(("overrides", "field", "reason"), FIELD_CASES + REQUIRED_CASES)
def test_post_rejects_invalid_entry(shared, overrides, field, reason):
    body = body_with({"name": f"probe {uuid.uuid4().hex[:8]}", "action": "acquire_iq"}, overrides)
    assert_error(shared.api.post(SCHEDULE, body), 400, field, reason)
    shared.assert_unchanged()


@pytest.mark.parametrize(("overrides", "field", "reason"), DERIVED_ID_CASES)
def test_post_rejects_name_without_letters_or_digits(shared, overrides, field, reason):
    body = body_with({"action": "acquire_iq"}, overrides)
    assert_error(shared.api.post(SCHEDULE, body), 400, field, reason)
    shared.assert_unchanged()


@pytest.mark.parametrize(("overrides", "field", "reason"), FIELD_CASES + REQUIRED_CASES)
def test_put_rejects_invalid_entry(shared, overrides, field, reason):
    body = body_with({"name": "Taken", "action": "acquire_iq"}, overrides)
    assert_error(shared.api.put(entry_url("taken"), body), 400, field, reason)
    shared.assert_unchanged()


@pytest.mark.parametrize(("overrides", "field", "reason"), FIELD_CASES)
def test_patch_rejects_invalid_field(shared, overrides, field, reason):
    assert_error(shared.api.patch(entry_url("taken"), overrides), 400, field, reason)
    shared.assert_unchanged()


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH"])
@pytest.mark.parametrize("request_body", NOT_AN_OBJECT)
def test_body_must_be_a_json_object(shared, method, request_body):
    url = SCHEDULE if method == "POST" else entry_url("taken")
    response = shared.api.call(method, url, "admin", **request_body)
    assert_error(response, 400, "body", "JSON object")
    shared.assert_unchanged()


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"name": "another", "schedule_id": "taken"}, id="explicit"),
        pytest.param({"name": "Taken"}, id="derived-from-name"),
        pytest.param({"name": "  TAKEN!  "}, id="derived-from-other-spelling"),
        pytest.param({"name": "x", "schedule_id": "taken", "validate_only": True}, id="validate"),
    ],
)
def test_duplicate_schedule_id_conflicts(shared, body):
    response = shared.api.post(SCHEDULE, {"action": "acquire_iq"} | body, user="alice")
    assert_error(response, 409, "schedule_id", "exists")
    shared.assert_unchanged()


@pytest.mark.parametrize(
    ("method", "url", "allowed"),
    [
        ("DELETE", SCHEDULE, {"GET", "POST"}),
        ("PUT", SCHEDULE, {"GET", "POST"}),
        ("PATCH", SCHEDULE, {"GET", "POST"}),
        ("POST", entry_url("taken"), {"GET", "PUT", "PATCH", "DELETE"}),
    ],
)
def test_unsupported_method_is_405(shared, method, url, allowed):
    response = shared.api.call(method, url, "admin", json={"name": "x", "action": "acquire_iq"})
    assert_json_error(response, 405)
    assert allowed <= {part.strip() for part in response.headers["Allow"].split(",")}
    shared.assert_unchanged()


@pytest.mark.parametrize(
    ("method", "body"),
    [
        ("GET", None),
        ("PUT", {"name": "x", "action": "acquire_iq"}),
        ("PATCH", {}),
        ("DELETE", None),
    ],
)
@pytest.mark.parametrize("schedule_id", ["missing", "TAKEN", "taken.x", "taken%00"])
def test_unknown_id_is_404(shared, method, body, schedule_id):
    response = shared.api.call(method, entry_url(schedule_id), "admin", json=body)
    assert assert_json_error(response, 404)["message"]
    shared.assert_unchanged()


def test_sending_an_entry_back_names_its_read_only_fields(shared):
    response = shared.api.put(entry_url("taken"), shared.taken)
    assert_error(response, 400, "id", "read-only")
    errors = response.get_json()["errors"]
    assert errors == {name: "read-only" for name in set(shared.taken) - WRITABLE_FIELDS}
    shared.assert_unchanged()


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="none"),
        pytest.param({"Authorization": "Token not-a-real-token"}, id="bad-token"),
        pytest.param({"Authorization": "Token "}, id="empty-token"),
        pytest.param({"Authorization": "Bearer abc.def.ghi"}, id="wrong-scheme"),
    ],
)
@pytest.mark.parametrize(
    ("method", "url", "body"),
    [
        ("GET", SCHEDULE, None),
        ("POST", SCHEDULE, {"name": "x", "action": "acquire_iq"}),
        ("GET", entry_url("taken"), None),
        ("PUT", entry_url("taken"), {"name": "x", "action": "acquire_iq"}),
        ("PATCH", entry_url("taken"), {"name": "x"}),
        ("DELETE", entry_url("taken"), None),
    ],
)
def test_authentication_is_required(shared, headers, method, url, body):
    response = shared.api.call(method, url, None, json=body, headers=headers)
    assert_error(response, 401, "Authorization")
    assert response.headers["WWW-Authenticate"].startswith("Token")
    shared.assert_unchanged()


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("?limit=0", "limit"),
        ("?limit=1001", "limit"),
        ("?limit=-1", "limit"),
        ("?limit=ten", "limit"),
        ("?limit=1.5", "limit"),
        ("?limit=", "limit"),
        ("?offset=-1", "offset"),
        ("?offset=one", "offset"),
        ("?offset=0.5", "offset"),
        ("?is_active=maybe", "is_active"),
        ("?is_active=2", "is_active"),
    ],
)
def test_bad_overview_parameter_is_400(shared, query, parameter):
    assert_error(shared.api.get(SCHEDULE + query), 400, parameter)


# --- creating ---------------------------------------------------------------------------


def test_created_entry_is_answered_in_full(api):
    before = floor_ms(utc_now())
    response = api.post(SCHEDULE, {"name": "Morning scan", "action": "acquire_iq"}, user="alice")
    after = utc_now()
    assert response.status_code == 201, response.get_json()
    entry = response.get_json()
    assert entry["id"] == entry["schedule_id"] == "morning-scan"
    assert entry["name"] == "Morning scan"
    assert entry["action"] == "acquire_iq"
    assert entry["owner"] == "alice"
    assert entry["priority"] == 10
    assert entry["is_active"] is True
    assert entry["is_private"] is False
    assert entry["next_task_id"] == 1
    for name in ("start", "next_task_time", "created", "modified"):
        assert before <= parse(entry[name]) <= after, name
    for name in ("stop", "interval", "callback_url", "relative_stop", "validate_only"):
        assert name not in entry
    assert response.headers["Location"] == entry["url"]
    assert urlsplit(entry["url"]).path == entry_url("morning-scan")
    assert urlsplit(entry["tasks"]).path == entry_url("morning-scan") + "/tasks"
    assert urlsplit(entry["archive"]).path == entry_url("morning-scan") + "/archive"
    assert fetch(api, "morning-scan", user="alice") == entry


@pytest.mark.parametrize(
    ("name", "schedule_id"),
    [
        ("Hello World", "hello-world"),
        ("  Weekly  scan: 700 MHz / LTE  ", "weekly-scan-700-mhz-lte"),
        ("already-a_slug.1", "already-a-slug-1"),
        ("Café", "caf"),
    ],
)
def test_schedule_id_is_derived_from_the_name(api, name, schedule_id):
    entry = api.schedule(name=name)
    assert entry["id"] == entry["schedule_id"] == schedule_id
    assert fetch(api, schedule_id)["name"] == name


def test_explicit_schedule_id_is_kept(api):
    entry = api.schedule(name="Hello", schedule_id="My_Entry.2")
    assert entry["id"] == entry["schedule_id"] == "My_Entry.2"
    assert fetch(api, "My_Entry.2")["name"] == "Hello"


def test_same_name_twice_conflicts(api):
    api.schedule(name="Nightly", user="alice")
    response = api.post(SCHEDULE, {"name": "Nightly", "action": "acquire_iq"}, user="bob")
    assert_error(response, 409, "schedule_id", "exists")
    assert fetch(api, "nightly")["owner"] == "alice"
    assert overview(api)["count"] == 1


def test_admin_only_action_needs_an_admin(api):
    body = {"name": "Calibrate", "action": "admin_calibrate"}
    assert_error(api.post(SCHEDULE, body, user="alice"), 400, "action", "unknown action")
    assert overview(api)["count"] == 0
    response = api.post(SCHEDULE, body, user="admin")
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["action"] == "admin_calibrate"
    # Other users do not even see it.
    assert_json_error(api.get(entry_url("calibrate"), user="alice"), 404)
    assert overview(api, user="alice")["count"] == 0


def test_no_start_means_as_soon_as_possible(api):
    before = floor_ms(utc_now())
    entry = api.schedule(interval=60)
    after = utc_now()
    assert before <= parse(entry["next_task_time"]) <= after
    assert entry["next_task_time"] == entry["start"]


def test_future_start_is_the_first_task_time(api):
    entry = api.schedule(start=iso(FUTURE), interval=600)
    assert parse(entry["start"]) == parse(entry["next_task_time"]) == FUTURE


def test_past_start_is_due_now(api):
    entry = api.schedule(start=iso(PAST))
    assert parse(entry["next_task_time"]) == PAST
    assert entry["is_active"] is True


def test_one_shot_has_no_interval_and_no_stop(api):
    entry = api.schedule(start=iso(FUTURE))
    assert "interval" not in entry and "stop" not in entry
    assert entry["is_active"] is True
    assert parse(entry["next_task_time"]) == FUTURE


def test_interval_without_stop_repeats(api):
    entry = api.schedule(start=iso(FUTURE), interval=3600)
    assert "stop" not in entry
    consume(api, entry["id"], FUTURE)
    # Any change recomputes the next task time: the one after the consumed one.
    changed = change(api, "PATCH", entry["id"], {"priority": 3})
    assert changed["is_active"] is True
    assert parse(changed["next_task_time"]) == FUTURE + datetime.timedelta(hours=1)


def test_absolute_stop_is_kept(api):
    entry = api.schedule(start=iso(FUTURE), interval=60, stop=iso(LATER))
    assert parse(entry["stop"]) == LATER
    assert entry["interval"] == 60


def test_relative_stop_becomes_absolute_stop(api):
    entry = api.schedule(start=iso(FUTURE), interval=60, relative_stop=7200)
    assert parse(entry["stop"]) == FUTURE + datetime.timedelta(seconds=7200)
    assert "relative_stop" not in entry
    assert fetch(api, entry["id"])["stop"] == entry["stop"]


def test_relative_stop_without_start_counts_from_now(api):
    before = floor_ms(utc_now())
    entry = api.schedule(interval=60, relative_stop=600)
    start = parse(entry["start"])
    assert before <= start <= utc_now()
    assert parse(entry["stop"]) == start + datetime.timedelta(seconds=600)


@pytest.mark.parametrize(
    ("given", "answered"),
    [
        ("2031-03-04T05:06:07Z", "2031-03-04T05:06:07.000Z"),
        ("2031-03-04T05:06:07+00:00", "2031-03-04T05:06:07.000Z"),
        ("2031-03-04T05:06:07+02:00", "2031-03-04T03:06:07.000Z"),
        ("2031-03-04T01:06:07-05:30", "2031-03-04T06:36:07.000Z"),
        ("2031-03-04T05:06:07", "2031-03-04T05:06:07.000Z"),
        ("2031-03-04T05:06:07.123456Z", "2031-03-04T05:06:07.123Z"),
        ("2031-12-31T23:30:00-01:00", "2032-01-01T00:30:00.000Z"),
    ],
)
def test_times_are_answered_in_utc(api, given, answered):
    entry = api.schedule(start=given)
    assert entry["start"] == answered
    assert entry["next_task_time"] == answered
    assert fetch(api, entry["id"])["start"] == answered


def test_all_times_are_utc_with_z(api):
    entry = api.schedule(start="2031-03-04T05:06:07+02:00", interval=60, relative_stop=600)
    for name in TIME_FIELDS:
        parse(entry[name])
    assert entry["stop"] == "2031-03-04T03:16:07.000Z"


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"priority": -20}, id="priority-min"),
        pytest.param({"priority": 19}, id="priority-max"),
        pytest.param({"priority": 0}, id="priority-zero"),
        pytest.param({"interval": 1}, id="interval-min"),
        pytest.param({"interval": MAX_SECONDS}, id="interval-max"),
        pytest.param({"interval": 1, "relative_stop": MAX_SECONDS}, id="relative-stop-max"),
        pytest.param({"start": "1970-01-01T00:00:00Z"}, id="start-1970"),
        pytest.param({"start": "2199-12-31T23:59:59.999Z"}, id="start-last-moment"),
        pytest.param({"name": "n" * 200}, id="name-max"),
        pytest.param({"schedule_id": "i" * 200}, id="id-max"),
        pytest.param({"schedule_id": "0"}, id="id-one-digit"),
        pytest.param({"callback_url": "https://example.com:8443/results?x=1"}, id="callback"),
        pytest.param({"callback_url": "http://[2001:db8::1]:8000/cb"}, id="callback-ipv6"),
        pytest.param({"is_private": True, "is_active": True}, id="booleans"),
    ],
)
def test_edge_values_are_accepted(api, fields):
    entry = api.schedule(**fields)
    for name, value in fields.items():
        if name in ("start", "relative_stop"):
            continue
        assert entry[name] == value, name
    assert fetch(api, entry["id"]) == entry


def test_priority_defaults_to_10_and_is_kept(api):
    assert api.schedule()["priority"] == 10
    assert api.schedule(priority=-20)["priority"] == -20


def test_inactive_entry_has_no_next_task_time(api):
    entry = api.schedule(start=iso(FUTURE), is_active=False)
    assert entry["is_active"] is False
    assert "next_task_time" not in entry


def test_private_entry_is_hidden_from_other_users(api):
    entry = api.schedule(user="bob", is_private=True)
    assert fetch(api, entry["id"], user="bob")["is_private"] is True
    assert fetch(api, entry["id"], user="admin")["owner"] == "bob"
    assert_json_error(api.get(entry_url(entry["id"]), user="alice"), 404)
    # Not even 403: that would tell that the id exists.
    assert_json_error(api.patch(entry_url(entry["id"]), {"priority": 1}, user="alice"), 404)
    assert_json_error(api.delete(entry_url(entry["id"]), user="alice"), 404)
    assert overview(api, user="alice")["count"] == 0
    public = api.schedule(user="bob")
    assert entry_ids(overview(api, user="alice")) == [public["id"]]


def test_only_owner_or_admin_may_change(api):
    entry = api.schedule(user="alice", interval=60)
    url = entry_url(entry["id"])
    body = {"name": "mine now", "action": "acquire_iq"}
    assert_json_error(api.patch(url, {"priority": 1}, user="bob"), 403)
    assert_json_error(api.put(url, body, user="bob"), 403)
    assert_json_error(api.delete(url, user="bob"), 403)
    assert fetch(api, entry["id"]) == entry
    changed = change(api, "PATCH", entry["id"], {"priority": 1}, user="admin")
    assert changed["priority"] == 1 and changed["owner"] == "alice"
    assert api.delete(url, user="alice").status_code == 204


def test_trailing_slash_is_optional(api):
    response = api.post(SCHEDULE + "/", {"name": "Slash", "action": "acquire_iq"})
    assert response.status_code == 201, response.get_json()
    assert entry_ids(overview(api, "/")) == ["slash"]
    assert entry_ids(overview(api)) == ["slash"]
    assert api.get(entry_url("slash") + "/").get_json() == fetch(api, "slash")
    response = api.patch(entry_url("slash") + "/", {"priority": 2})
    assert response.status_code == 200 and response.get_json()["priority"] == 2
    assert api.delete(entry_url("slash") + "/").status_code == 204
    assert_json_error(api.get(entry_url("slash")), 404)


# --- validate_only ----------------------------------------------------------------------


def test_validate_only_post_creates_nothing(api):
    body = {"name": "Dry run", "action": "acquire_iq", "start": iso(FUTURE), "interval": 60}
    with listening(api) as listener:
        response = api.post(SCHEDULE, body | {"validate_only": True}, user="alice")
        assert not listener.wait(timeout=0.2)
    assert response.status_code == 200, response.get_json()
    assert "Location" not in response.headers
    entry = response.get_json()
    assert entry["id"] == entry["schedule_id"] == "dry-run"
    assert entry["owner"] == "alice"
    assert entry["interval"] == 60
    assert parse(entry["next_task_time"]) == FUTURE
    assert_json_error(api.get(entry_url("dry-run")), 404)
    assert overview(api)["count"] == 0
    # The same body without validate_only creates it.
    assert api.post(SCHEDULE, body, user="alice").status_code == 201


def test_validate_only_false_creates(api):
    response = api.post(SCHEDULE, {"name": "Real", "action": "acquire_iq", "validate_only": False})
    assert response.status_code == 201
    assert fetch(api, "real")["name"] == "Real"


def test_validate_only_still_validates(api):
    body = {"name": "Dry", "action": "acquire_iq", "interval": 0, "validate_only": True}
    assert_error(api.post(SCHEDULE, body), 400, "interval")


@pytest.mark.parametrize("method", ["PATCH", "PUT"])
def test_validate_only_change_changes_nothing(api, method):
    entry = api.schedule(name="Keep", start=iso(FUTURE), interval=60, priority=5)
    body = {"name": "Changed", "priority": -3, "is_active": False, "validate_only": True}
    if method == "PUT":
        body["action"] = "acquire_stepped_iq"
    with listening(api) as listener:
        would_be = change(api, method, "keep", body)
        assert not listener.wait(timeout=0.2)
    assert would_be["name"] == "Changed"
    assert would_be["priority"] == -3
    assert would_be["is_active"] is False and "next_task_time" not in would_be
    assert fetch(api, "keep") == entry


def test_validate_only_patch_still_validates(api):
    entry = api.schedule()
    body = {"priority": 99, "validate_only": True}
    assert_error(api.patch(entry_url(entry["id"]), body), 400, "priority")
    assert fetch(api, entry["id"]) == entry


# --- PUT replaces, PATCH merges ---------------------------------------------------------


def full_entry(api: Api) -> dict:
    return api.schedule(
        name="Full",
        user="alice",
        start=iso(FUTURE),
        interval=60,
        stop=iso(LATER),
        priority=3,
        is_private=True,
        callback_url="https://example.com/cb",
    )


def test_put_replaces_the_entry(api):
    entry = full_entry(api)
    before = floor_ms(utc_now())
    replaced = change(api, "PUT", "full", {"name": "Bare", "action": "acquire_m4s"}, user="alice")
    assert replaced["id"] == "full" and replaced["name"] == "Bare"
    assert replaced["action"] == "acquire_m4s"
    for name in ("interval", "stop", "callback_url"):
        assert name not in replaced, name
    assert replaced["priority"] == 10
    assert replaced["is_private"] is False
    assert replaced["is_active"] is True
    # No start: as soon as possible, again.
    assert before <= parse(replaced["start"]) <= utc_now()
    assert replaced["next_task_time"] == replaced["start"]
    assert replaced["owner"] == "alice"
    assert replaced["created"] == entry["created"]
    assert fetch(api, "full", user="alice") == replaced


def test_put_sets_every_given_field(api):
    api.schedule(name="Plain")
    body = {
        "name": "Fancy",
        "action": "acquire_stepped_iq",
        "start": iso(FUTURE),
        "interval": 120,
        "relative_stop": 3600,
        "priority": -5,
        "is_private": True,
        "callback_url": "http://example.com/cb",
    }
    replaced = change(api, "PUT", "plain", body)
    assert replaced["schedule_id"] == "plain"
    assert parse(replaced["stop"]) == FUTURE + datetime.timedelta(hours=1)
    for name in ("name", "action", "interval", "priority", "is_private", "callback_url"):
        assert replaced[name] == body[name], name
    assert parse(replaced["next_task_time"]) == FUTURE


def test_patch_changes_only_the_given_fields(api):
    entry = full_entry(api)
    changed = change(api, "PATCH", "full", {"name": "Renamed"}, user="alice")
    assert changed["name"] == "Renamed"
    unchanged = {key: value for key, value in changed.items() if key not in ("name", "modified")}
    assert unchanged == {key: entry[key] for key in unchanged}
    assert set(changed) == set(entry)


def test_patch_with_empty_body_keeps_everything(api):
    entry = full_entry(api)
    changed = change(api, "PATCH", "full", {}, user="alice")
    assert {k: v for k, v in changed.items() if k != "modified"} == {
        k: v for k, v in entry.items() if k != "modified"
    }


def test_patch_relative_stop_counts_from_the_kept_start(api):
    api.schedule(name="Rel", start=iso(FUTURE), interval=60)
    changed = change(api, "PATCH", "rel", {"relative_stop": 600})
    assert parse(changed["stop"]) == FUTURE + datetime.timedelta(seconds=600)
    changed = change(api, "PATCH", "rel", {"start": iso(LATER), "relative_stop": 60})
    assert parse(changed["stop"]) == LATER + datetime.timedelta(seconds=60)


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
def test_schedule_id_in_body_must_match_url(api, method):
    entry = api.schedule(name="Original")
    body = {"name": "Original", "action": "acquire_iq", "schedule_id": "other"}
    assert_error(api.call(method, entry_url("original"), "admin", json=body), 400, "schedule_id")
    assert fetch(api, "original") == entry
    assert_json_error(api.get(entry_url("other")), 404)
    # The same id is fine.
    assert change(api, method, "original", body | {"schedule_id": "original"})["id"] == "original"


def test_put_may_not_take_an_admin_only_action(api):
    entry = api.schedule(user="alice")
    body = {"name": "x", "action": "admin_calibrate"}
    assert_error(api.put(entry_url(entry["id"]), body, user="alice"), 400, "action")
    assert_error(api.patch(entry_url(entry["id"]), body, user="alice"), 400, "action")
    assert fetch(api, entry["id"]) == entry


# --- recomputing the next task time -----------------------------------------------------


def test_patch_start_moves_next_task_time(api):
    entry = api.schedule(interval=60)
    changed = change(api, "PATCH", entry["id"], {"start": iso(FUTURE)})
    assert parse(changed["start"]) == parse(changed["next_task_time"]) == FUTURE
    assert fetch(api, entry["id"])["next_task_time"] == changed["next_task_time"]


def test_patch_interval_moves_next_task_time(api):
    entry = api.schedule(start=iso(FUTURE), interval=60)
    consume(api, entry["id"], FUTURE)
    assert parse(fetch(api, entry["id"])["next_task_time"]) == FUTURE + datetime.timedelta(
        seconds=60
    )
    changed = change(api, "PATCH", entry["id"], {"interval": 600})
    assert parse(changed["next_task_time"]) == FUTURE + datetime.timedelta(seconds=600)


def test_deactivating_clears_next_task_time_and_reactivating_restores_it(api):
    entry = api.schedule(start=iso(FUTURE), interval=60)
    off = change(api, "PATCH", entry["id"], {"is_active": False})
    assert off["is_active"] is False and "next_task_time" not in off
    assert "next_task_time" not in fetch(api, entry["id"])
    on = change(api, "PATCH", entry["id"], {"is_active": True})
    assert on["is_active"] is True
    assert parse(on["next_task_time"]) == FUTURE


def test_reactivating_skips_consumed_task_times(api):
    entry = api.schedule(start=iso(FUTURE), interval=60)
    consume(api, entry["id"], FUTURE)
    change(api, "PATCH", entry["id"], {"is_active": False})
    on = change(api, "PATCH", entry["id"], {"is_active": True})
    assert parse(on["next_task_time"]) == FUTURE + datetime.timedelta(seconds=60)
    assert on["next_task_id"] == 2


def test_reactivating_an_exhausted_one_shot_is_400(api):
    entry = api.schedule(start=iso(PAST))
    consume(api, entry["id"], PAST)
    consumed = fetch(api, entry["id"])
    assert consumed["is_active"] is False and "next_task_time" not in consumed
    assert_error(api.patch(entry_url(entry["id"]), {"is_active": True}), 400, "is_active")
    assert fetch(api, entry["id"]) == consumed


def test_activating_a_one_shot_whose_time_is_consumed_is_400(api):
    """The scheduler has taken the task (a result, last_task_time) but not yet
    deactivated the entry."""
    entry = api.schedule(start=iso(PAST))
    api.add_task(entry["id"])
    with api.database.session() as db:
        db.get(ScheduleEntry, entry["id"]).last_task_time = PAST
    before = fetch(api, entry["id"])
    assert_error(api.patch(entry_url(entry["id"]), {"is_active": True}), 400, "is_active")
    assert fetch(api, entry["id"]) == before
    off = change(api, "PATCH", entry["id"], {"is_active": False})
    assert off["is_active"] is False and "next_task_time" not in off


def test_reactivating_an_entry_past_its_stop_is_400(api):
    start = utc_now().replace(microsecond=0) - datetime.timedelta(seconds=30)
    entry = api.schedule(start=iso(start), interval=20, relative_stop=60)
    consume(api, entry["id"], start + datetime.timedelta(seconds=40))
    assert fetch(api, entry["id"])["is_active"] is False
    assert_error(api.patch(entry_url(entry["id"]), {"is_active": True}), 400, "is_active")


def test_new_start_with_activation_reruns_a_one_shot(api):
    entry = api.schedule(start=iso(PAST))
    consume(api, entry["id"], PAST)
    changed = change(api, "PATCH", entry["id"], {"start": iso(FUTURE), "is_active": True})
    assert changed["is_active"] is True
    assert parse(changed["next_task_time"]) == FUTURE


def test_modified_advances_and_created_does_not(api):
    entry = api.schedule(interval=60)
    time.sleep(0.01)  # modified is answered to the millisecond
    patched = change(api, "PATCH", entry["id"], {"priority": 1})
    assert patched["created"] == entry["created"]
    assert parse(patched["modified"]) > parse(entry["modified"])
    time.sleep(0.01)
    put = change(api, "PUT", entry["id"], {"name": "again", "action": "acquire_iq"})
    assert put["created"] == entry["created"]
    assert parse(put["modified"]) > parse(patched["modified"])
    assert fetch(api, entry["id"])["modified"] == put["modified"]


def test_rejected_change_keeps_modified(api):
    entry = api.schedule(interval=60)
    assert_error(api.patch(entry_url(entry["id"]), {"interval": 0}), 400, "interval")
    assert fetch(api, entry["id"])["modified"] == entry["modified"]


# --- waking the scheduler ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "url", "body", "status"),
    [
        ("POST", SCHEDULE, {"name": "Other", "action": "acquire_iq"}, 201),
        ("PATCH", entry_url("wake"), {"priority": 1}, 200),
        ("PUT", entry_url("wake"), {"name": "w", "action": "acquire_m4s"}, 200),
        ("DELETE", entry_url("wake"), None, 204),
    ],
)
def test_change_wakes_the_scheduler(api, method, url, body, status):
    api.schedule(name="Wake")
    with listening(api) as listener:
        response = api.call(method, url, "admin", json=body)
        assert response.status_code == status, response.get_json()
        assert listener.wait(timeout=2)


@pytest.mark.parametrize(
    ("method", "url", "body", "status"),
    [
        ("GET", SCHEDULE, None, 200),
        ("GET", entry_url("wake"), None, 200),
        ("POST", SCHEDULE, {"name": "Bad", "action": "acquire_iq", "interval": 0}, 400),
        ("POST", SCHEDULE, {"name": "Wake", "action": "acquire_iq"}, 409),
        ("PATCH", entry_url("wake"), {"priority": 100}, 400),
        ("PUT", entry_url("wake"), {"name": "no action"}, 400),
        ("PATCH", entry_url("missing"), {"priority": 1}, 404),
        ("DELETE", entry_url("missing"), None, 404),
        ("DELETE", entry_url("wake"), None, 403),
    ],
)
def test_reads_and_rejections_do_not_wake_the_scheduler(api, method, url, body, status):
    api.schedule(name="Wake")
    user = "alice" if status == 403 else "admin"
    with listening(api) as listener:
        response = api.call(method, url, user, json=body)
        assert response.status_code == status, response.get_json()
        assert not listener.wait(timeout=0.2)


def test_changes_without_listener_still_succeed(api):
    """No scheduler running: the API does not care."""
    entry = api.schedule()
    assert api.patch(entry_url(entry["id"]), {"priority": 1}).status_code == 200
    assert api.delete(entry_url(entry["id"])).status_code == 204


# --- deleting ---------------------------------------------------------------------------


def test_delete_then_get_is_404(api):
    entry = api.schedule(interval=60)
    response = api.delete(entry_url(entry["id"]))
    assert response.status_code == 204
    assert response.get_data() == b""
    assert_json_error(api.get(entry_url(entry["id"])), 404)
    assert_json_error(api.delete(entry_url(entry["id"])), 404)
    assert overview(api)["count"] == 0


def test_delete_removes_task_results_and_their_files(api, recordings):
    entry = api.schedule(name="Doomed", interval=60)
    kept = api.schedule(name="Kept", interval=60)
    for _ in range(2):
        api.add_task("doomed", recordings["acquire_iq"])
    api.add_task("kept", recordings["acquire_iq"])
    doomed_dir = api.settings.data_dir / "doomed"
    kept_dir = api.settings.data_dir / "kept"
    assert len(data_files(doomed_dir)) == 4  # two tasks, .sigmf-data and .sigmf-meta each
    kept_files = data_files(kept_dir)
    assert len(kept_files) == 2
    assert len(finished_tasks(api, "doomed")) == 2

    assert api.delete(entry_url(entry["id"])).status_code == 204
    assert data_files(doomed_dir) == []
    assert not doomed_dir.exists()
    assert data_files(kept_dir) == kept_files
    assert_json_error(api.get(entry_url("doomed") + "/tasks"), 404)
    # A new entry of the same id starts afresh: none of the old results show.
    again = api.schedule(name="Doomed")
    assert again["next_task_id"] == 1
    assert finished_tasks(api, "doomed") == []
    assert len(finished_tasks(api, kept["id"])) == 1


# --- the overview -----------------------------------------------------------------------


def make_entries(api: Api, count: int, **fields) -> list[str]:
    """``count`` entries whose ids sort against their creation order; their ids,
    oldest first."""
    return [
        api.schedule(name=f"entry {count - index:03d}", **fields)["id"] for index in range(count)
    ]


def test_overview_of_empty_schedule(api):
    page = overview(api)
    assert page["count"] == 0 and page["results"] == []
    assert "next" not in page and "previous" not in page


def test_overview_lists_oldest_first(api):
    ids = make_entries(api, 4)
    assert ids == ["entry-004", "entry-003", "entry-002", "entry-001"]
    page = overview(api)
    assert page["count"] == 4
    assert entry_ids(page) == ids
    assert page["results"][0] == fetch(api, ids[0])


def test_overview_after_a_change_keeps_creation_order(api):
    ids = make_entries(api, 3)
    change(api, "PATCH", ids[0], {"name": "touched"})
    assert entry_ids(overview(api)) == ids


def test_page_of_one(api):
    ids = make_entries(api, 3)
    first = overview(api, "?limit=1")
    assert first["count"] == 3 and entry_ids(first) == ids[:1]
    assert "next" in first and "previous" not in first
    middle = overview(api, "?limit=1&offset=1")
    assert entry_ids(middle) == ids[1:2]
    assert "next" in middle and "previous" in middle
    last = overview(api, "?limit=1&offset=2")
    assert entry_ids(last) == ids[2:]
    assert "next" not in last and "previous" in last


def test_page_of_1000(api):
    ids = make_entries(api, 3)
    page = overview(api, "?limit=1000")
    assert page["count"] == 3 and entry_ids(page) == ids
    assert "next" not in page and "previous" not in page


def test_page_exactly_full_has_no_next(api):
    ids = make_entries(api, 2)
    page = overview(api, "?limit=2")
    assert entry_ids(page) == ids and "next" not in page


@pytest.mark.parametrize("offset", [3, 10, 2**31 - 1])
def test_offset_beyond_count_is_empty(api, offset):
    make_entries(api, 3)
    page = overview(api, f"?offset={offset}")
    assert page["count"] == 3 and page["results"] == []
    assert "next" not in page


def follow(api: Api, url: str, link: str) -> list[list[str]]:
    """The ids of each page, following ``link`` from ``url`` until it is absent."""
    pages = []
    while url:
        parts = urlsplit(url)
        response = api.get(f"{parts.path}?{parts.query}" if parts.query else parts.path)
        assert response.status_code == 200, response.get_json()
        page = response.get_json()
        pages.append(entry_ids(page))
        url = page.get(link)
        assert len(pages) < 20, "the links go round in circles"
    return pages


def test_following_next_walks_every_entry_once(api):
    ids = make_entries(api, 5)
    pages = follow(api, f"{SCHEDULE}?limit=2", "next")
    assert pages == [ids[0:2], ids[2:4], ids[4:5]]
    walked = [schedule_id for page in pages for schedule_id in page]
    assert walked == ids


def test_following_previous_walks_back(api):
    ids = make_entries(api, 5)
    pages = follow(api, f"{SCHEDULE}?limit=2&offset=4", "previous")
    assert pages == [ids[4:5], ids[2:4], ids[0:2]]


def test_is_active_filter(api):
    active = make_entries(api, 2)
    inactive = [api.schedule(name=f"off {index}", is_active=False)["id"] for index in range(3)]
    assert entry_ids(overview(api)) == active + inactive
    page = overview(api, "?is_active=true")
    assert page["count"] == 2 and entry_ids(page) == active
    assert all(entry["is_active"] for entry in page["results"])
    page = overview(api, "?is_active=false")
    assert page["count"] == 3 and entry_ids(page) == inactive
    assert not any(entry["is_active"] for entry in page["results"])


def test_is_active_filter_is_kept_in_page_links(api):
    make_entries(api, 2)
    inactive = [api.schedule(name=f"off {index}", is_active=False)["id"] for index in range(3)]
    pages = follow(api, f"{SCHEDULE}?is_active=false&limit=1", "next")
    assert pages == [[schedule_id] for schedule_id in inactive]
