"""Who may see and change what, on every endpoint.

* Without valid credentials every endpoint answers 401 with ``WWW-Authenticate``;
  only the OpenAPI document and Swagger UI are public.
* A user sees its own entries and the other users' entries that are neither
  private nor use an admin-only action; anything else is 404 (never 403, so ids do
  not leak), on the entry, its tasks, a task and both archives, and it is absent
  from every listing and count. An admin sees everything.
* A user may read another user's visible entry but not change or delete it (nor
  its task results): 403. The owner and an admin may.
"""

from collections.abc import Iterator

import pytest

from tests.api.conftest import _fresh_database, make_api

API = "/api/v1"

# Every operation of the API: (method, path as in swagger.json).
OPERATIONS = [
    ("GET", "/"),
    ("GET", "/status"),
    ("GET", "/capabilities"),
    ("GET", "/metrics"),
    ("GET", "/schedule"),
    ("POST", "/schedule"),
    ("GET", "/schedule/{schedule_id}"),
    ("PUT", "/schedule/{schedule_id}"),
    ("PATCH", "/schedule/{schedule_id}"),
    ("DELETE", "/schedule/{schedule_id}"),
    ("GET", "/schedule/{schedule_id}/archive"),
    ("GET", "/schedule/{schedule_id}/tasks"),
    ("DELETE", "/schedule/{schedule_id}/tasks"),
    ("GET", "/schedule/{schedule_id}/tasks/{task_id}"),
    ("DELETE", "/schedule/{schedule_id}/tasks/{task_id}"),
    ("GET", "/schedule/{schedule_id}/tasks/{task_id}/archive"),
    ("GET", "/tasks/upcoming"),
    ("GET", "/tasks/completed"),
    ("GET", "/users"),
    ("POST", "/users"),
    ("GET", "/users/me"),
    ("POST", "/users/me/token"),
    ("GET", "/users/{user_id}"),
    ("PATCH", "/users/{user_id}"),
    ("DELETE", "/users/{user_id}"),
    ("POST", "/users/{user_id}/token"),
]

# Bodies that would succeed with credentials: only the credentials are wrong.
BODIES = {
    ("POST", "/schedule"): {"name": "intruder", "action": "acquire_iq"},
    ("PUT", "/schedule/{schedule_id}"): {"name": "intruder", "action": "acquire_iq"},
    ("PATCH", "/schedule/{schedule_id}"): {"name": "intruder"},
    ("POST", "/users"): {"username": "mallory", "is_admin": True},
    ("PATCH", "/users/{user_id}"): {"is_admin": True},
}

BAD_CREDENTIALS = {
    "no header": {},
    "bearer scheme": {"Authorization": "Bearer x"},
    "unknown token": {"Authorization": "Token " + "0" * 64},
    "empty token": {"Authorization": "Token "},
    "basic scheme": {"Authorization": "Basic YWRtaW46YWRtaW4="},
}

# The schedule of the shared sensor: name (also its schedule_id) -> owner, private,
# action. Every entry repeats hourly and has one finished task with a recording.
ENTRIES = {
    "alice_public": ("alice", False, "acquire_iq"),
    "alice_private": ("alice", True, "acquire_iq"),
    "bob_public": ("bob", False, "acquire_iq"),
    "bob_private": ("bob", True, "acquire_iq"),
    "admin_public": ("admin", False, "acquire_iq"),
    "admin_private": ("admin", True, "acquire_iq"),
    "admin_only": ("admin", False, "admin_calibrate"),
}
VISIBLE = {
    "admin": set(ENTRIES),
    "alice": {"alice_public", "alice_private", "bob_public", "admin_public"},
    "bob": {"alice_public", "bob_public", "bob_private", "admin_public"},
}

# Operations on one entry: (id, method, path, body, status when allowed, writes).
ENTRY_OPERATIONS = [
    ("get-entry", "GET", "/schedule/{sid}", None, 200, False),
    (
        "put-entry",
        "PUT",
        "/schedule/{sid}",
        {"name": "replaced", "action": "acquire_iq", "interval": 600},
        200,
        True,
    ),
    ("patch-entry", "PATCH", "/schedule/{sid}", {"name": "renamed"}, 200, True),
    ("delete-entry", "DELETE", "/schedule/{sid}", None, 204, True),
    ("list-tasks", "GET", "/schedule/{sid}/tasks", None, 200, False),
    ("delete-tasks", "DELETE", "/schedule/{sid}/tasks", None, 204, True),
    ("get-task", "GET", "/schedule/{sid}/tasks/{tid}", None, 200, False),
    ("delete-task", "DELETE", "/schedule/{sid}/tasks/{tid}", None, 204, True),
    ("task-archive", "GET", "/schedule/{sid}/tasks/{tid}/archive", None, 200, False),
    ("entry-archive", "GET", "/schedule/{sid}/archive", None, 200, False),
]
READS = [operation for operation in ENTRY_OPERATIONS if not operation[5]]
WRITES = [operation for operation in ENTRY_OPERATIONS if operation[5]]


def _ids(operations):
    return [operation[0] for operation in operations]


def build_entries(api, recordings, names=ENTRIES) -> dict[str, int]:
    """The entries ``names`` of ENTRIES, each with one finished task; their task ids."""
    tasks = {}
    for name in names:
        owner, private, action = ENTRIES[name]
        api.schedule(
            user=owner,
            name=name,
            schedule_id=name,
            action=action,
            is_private=private,
            interval=3600,
        )
        tasks[name] = api.add_task(name, recordings["acquire_iq"])
    return tasks


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def shared(request, tmp_path_factory, api_config, migrated_templates, recordings) -> Iterator:
    """One sensor with the whole ENTRIES schedule, for the tests that change nothing
    (each checks that it did not)."""
    home = tmp_path_factory.mktemp("shared")
    url = _fresh_database(request.param, home, request, migrated_templates)
    api = make_api(home, url, api_config)
    api.entry_tasks = build_entries(api, recordings)
    yield api
    api.database.dispose()


def fill(path: str, sid: str, tid: int) -> str:
    return API + path.format(sid=sid, tid=tid)


def snapshot(api, sid: str) -> tuple:
    """What an admin sees of an entry and its tasks: unchanged by a refused request."""
    entry = api.get(f"{API}/schedule/{sid}")
    tasks = api.get(f"{API}/schedule/{sid}/tasks")
    assert entry.status_code == 200, entry.json
    return entry.json, tasks.json


# --- authentication ---------------------------------------------------------------


def test_operations_cover_the_openapi_document(shared):
    spec = shared.get(f"{API}/swagger.json", user=None).json
    documented = {
        (method.upper(), path)
        for path, item in spec["paths"].items()
        for method in item
        if method != "parameters"
    }
    assert documented == set(OPERATIONS)


@pytest.mark.parametrize("credentials", BAD_CREDENTIALS.values(), ids=BAD_CREDENTIALS.keys())
@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[" ".join(op) for op in OPERATIONS])
def test_bad_credentials_are_401_everywhere(shared, method, path, credentials):
    sid = "alice_public"
    url = API + path.format(
        schedule_id=sid, task_id=shared.entry_tasks[sid], user_id=shared.user_ids["alice"]
    )
    before = snapshot(shared, sid) if method != "GET" else None
    response = shared.call(
        method, url, user=None, headers=credentials, json=BODIES.get((method, path))
    )
    assert response.status_code == 401, (response.status_code, response.json)
    assert response.headers["WWW-Authenticate"].startswith("Token")
    assert response.json["message"]
    if method != "GET":
        assert snapshot(shared, sid) == before
        users = shared.get(f"{API}/users").json
        assert {user["username"]: user["is_admin"] for user in users["results"]} == {
            "admin": True,
            "alice": False,
            "bob": False,
        }


@pytest.mark.parametrize("path", ["/docs", "/swagger.json"])
def test_documentation_is_public(shared, path):
    response = shared.get(API + path, user=None)
    assert response.status_code == 200
    if path == "/swagger.json":
        assert "paths" in response.json


def test_swagger_documents_the_token_scheme(shared):
    spec = shared.get(f"{API}/swagger.json", user=None).json
    assert spec["securityDefinitions"]["token"]["name"] == "Authorization"
    assert spec["security"] == [{"token": []}]


# --- entries hidden from a user -------------------------------------------------

HIDDEN = [
    ("bob", "alice_private"),
    ("alice", "bob_private"),
    ("alice", "admin_private"),
    ("alice", "admin_only"),
    ("bob", "admin_only"),
]


@pytest.mark.parametrize(("user", "name"), HIDDEN, ids=["-sees-".join(pair) for pair in HIDDEN])
@pytest.mark.parametrize(
    ("_id", "method", "path", "body", "_status", "_writes"),
    ENTRY_OPERATIONS,
    ids=_ids(ENTRY_OPERATIONS),
)
def test_hidden_entry_is_404(shared, user, name, _id, method, path, body, _status, _writes):
    before = snapshot(shared, name)
    response = shared.call(method, fill(path, name, shared.entry_tasks[name]), user=user, json=body)
    assert response.status_code == 404, (response.status_code, response.json)
    # Exactly what an entry that does not exist answers: nothing tells them apart.
    assert response.json["message"] == f"no schedule entry {name!r}"
    missing = shared.call(method, fill(path, "no_such_entry", 1), user=user, json=body)
    assert missing.status_code == 404
    assert missing.json["message"] == "no schedule entry 'no_such_entry'"
    assert snapshot(shared, name) == before


@pytest.mark.parametrize(("user", "name"), HIDDEN, ids=["-sees-".join(pair) for pair in HIDDEN])
@pytest.mark.parametrize("method", ["PUT", "PATCH"])
def test_hidden_entry_is_404_before_its_payload_is_checked(shared, user, name, method):
    response = shared.call(method, f"{API}/schedule/{name}", user=user, json={"bogus": 1})
    assert response.status_code == 404


@pytest.mark.parametrize("user", ["alice", "bob", "admin"])
def test_listings_show_only_visible_entries(shared, user):
    visible = VISIBLE[user]
    schedule = shared.get(f"{API}/schedule", user=user).json
    assert {entry["id"] for entry in schedule["results"]} == visible
    assert schedule["count"] == len(visible)
    active = shared.get(f"{API}/schedule?is_active=true", user=user).json
    assert active["count"] == len(visible)
    inactive = shared.get(f"{API}/schedule?is_active=false", user=user).json
    assert inactive["count"] == 0
    for listing in ("tasks/upcoming", "tasks/completed"):
        page = shared.get(f"{API}/{listing}", user=user).json
        assert {task["schedule_id"] for task in page["results"]} == visible, listing
        assert page["count"] == len(visible), listing
        # The count of a page is of all visible tasks, not of the page.
        first = shared.get(f"{API}/{listing}?limit=1", user=user).json
        assert first["count"] == len(visible), listing
        assert len(first["results"]) == 1
        last = shared.get(f"{API}/{listing}?limit=1&offset={len(visible) - 1}", user=user).json
        assert len(last["results"]) == 1
        assert "next" not in last
        beyond = shared.get(f"{API}/{listing}?offset={len(visible)}", user=user).json
        assert beyond["results"] == []


# --- entries a user sees but does not own ----------------------------------------

FOREIGN = [("bob", "alice_public"), ("alice", "bob_public"), ("alice", "admin_public")]


@pytest.mark.parametrize(("user", "name"), FOREIGN, ids=["-on-".join(pair) for pair in FOREIGN])
@pytest.mark.parametrize(
    ("_id", "method", "path", "body", "status", "writes"),
    ENTRY_OPERATIONS,
    ids=_ids(ENTRY_OPERATIONS),
)
def test_foreign_visible_entry_is_readable_not_writable(
    shared, user, name, _id, method, path, body, status, writes
):
    before = snapshot(shared, name)
    response = shared.call(method, fill(path, name, shared.entry_tasks[name]), user=user, json=body)
    if writes:
        assert response.status_code == 403, (response.status_code, response.json)
        assert "belongs to" in response.json["message"]
    else:
        assert response.status_code == status, (response.status_code, response.json)
    assert snapshot(shared, name) == before


@pytest.mark.parametrize(("user", "name"), FOREIGN, ids=["-on-".join(pair) for pair in FOREIGN])
@pytest.mark.parametrize("method", ["PUT", "PATCH"])
def test_foreign_entry_is_403_before_its_payload_is_checked(shared, user, name, method):
    response = shared.call(method, f"{API}/schedule/{name}", user=user, json={"bogus": 1})
    assert response.status_code == 403


# --- what the owner and an admin may do ------------------------------------------

ALLOWED = [
    ("alice", "alice_private"),
    ("alice", "alice_public"),
    ("admin", "alice_private"),
    ("admin", "bob_private"),
    ("admin", "admin_only"),
]


@pytest.mark.parametrize(("user", "name"), ALLOWED, ids=["-on-".join(pair) for pair in ALLOWED])
@pytest.mark.parametrize(
    ("_id", "method", "path", "body", "status", "_writes"), READS, ids=_ids(READS)
)
def test_owner_and_admin_read(shared, user, name, _id, method, path, body, status, _writes):
    task_id = shared.entry_tasks[name]
    response = shared.call(method, fill(path, name, task_id), user=user, json=body)
    assert response.status_code == status, (response.status_code, response.json)
    if path.endswith("archive"):
        assert response.mimetype == "application/x-tar"
        assert len(response.data) > 1024
    elif path == "/schedule/{sid}":
        assert response.json["id"] == name
        assert response.json["owner"] == ENTRIES[name][0]
    elif path == "/schedule/{sid}/tasks":
        statuses = {task["task_id"]: task["status"] for task in response.json["results"]}
        assert statuses[task_id] == "success"
    else:
        assert response.json["task_id"] == task_id
        assert len(response.json["recording_metadata"]) == 1


@pytest.mark.parametrize(
    ("user", "name"),
    [("alice", "alice_private"), ("admin", "alice_private"), ("admin", "admin_only")],
    ids=["owner", "admin-on-private", "admin-on-admin-only"],
)
@pytest.mark.parametrize(
    ("_id", "method", "path", "body", "status", "_writes"), WRITES, ids=_ids(WRITES)
)
def test_owner_and_admin_write(
    api, recordings, user, name, _id, method, path, body, status, _writes
):
    task_id = build_entries(api, recordings, [name])[name]
    response = api.call(method, fill(path, name, task_id), user=user, json=body)
    assert response.status_code == status, (response.status_code, response.json)
    entry = api.get(f"{API}/schedule/{name}")
    tasks = api.get(f"{API}/schedule/{name}/tasks").json
    if _id == "delete-entry":
        assert entry.status_code == 404
        return
    # Whoever changes it, the entry keeps its owner.
    assert entry.json["owner"] == ENTRIES[name][0]
    finished = [task for task in tasks["results"] if task["status"] != "scheduled"]
    if _id in ("put-entry", "patch-entry"):
        assert entry.json["name"] == body["name"]
        assert len(finished) == 1
    else:
        assert finished == []
        assert api.get(fill("/schedule/{sid}/tasks/{tid}", name, task_id)).status_code == 404


# --- admin-only actions -------------------------------------------------------------


@pytest.mark.parametrize(("user", "listed"), [("admin", True), ("alice", False), ("bob", False)])
def test_admin_only_action_in_capabilities(api, user, listed):
    actions = {
        action["name"]: action
        for action in api.get(f"{API}/capabilities", user=user).json["actions"]
    }
    assert ("admin_calibrate" in actions) is listed
    assert "acquire_iq" in actions
    if listed:
        assert actions["admin_calibrate"]["admin_only"] is True
    assert not any(action["admin_only"] for action in actions.values() if not listed)


@pytest.mark.parametrize(
    ("method", "url", "body"),
    [
        ("POST", "/schedule", {"name": "sneaky", "action": "admin_calibrate"}),
        (
            "POST",
            "/schedule",
            {"name": "sneaky", "action": "admin_calibrate", "validate_only": True},
        ),
        ("PATCH", "/schedule/mine", {"action": "admin_calibrate"}),
        ("PUT", "/schedule/mine", {"name": "mine", "action": "admin_calibrate"}),
    ],
    ids=["create", "validate-only", "patch", "put"],
)
def test_user_cannot_schedule_an_admin_only_action(api, method, url, body):
    api.schedule(user="alice", name="mine", schedule_id="mine")
    response = api.call(method, API + url, user="alice", json=body)
    assert response.status_code == 400
    assert "action" in response.json["errors"]
    assert api.get(f"{API}/schedule/mine", user="alice").json["action"] == "acquire_iq"
    assert api.get(f"{API}/schedule").json["count"] == 1


def test_admin_schedules_an_admin_only_action(api):
    entry = api.schedule(user="admin", action="admin_calibrate", is_private=False)
    assert entry["owner"] == "admin"
    assert api.get(f"{API}/schedule/{entry['id']}").status_code == 200
    for user in ("alice", "bob"):
        assert api.get(f"{API}/schedule/{entry['id']}", user=user).status_code == 404
        assert api.get(f"{API}/schedule", user=user).json["count"] == 0
        assert api.get(f"{API}/tasks/upcoming", user=user).json["count"] == 0


# --- visibility follows changes; own entries stay visible -------------------------


def test_own_entries_stay_visible(api):
    private = api.schedule(user="alice", name="private", is_private=True, interval=60)
    public = api.schedule(user="alice", name="public", interval=60)
    # An admin moves alice's public entry to an admin-only action: still hers.
    changed = api.patch(f"{API}/schedule/{public['id']}", {"action": "admin_calibrate"})
    assert changed.status_code == 200, changed.json
    assert changed.json["owner"] == "alice"
    for entry in (private, public):
        response = api.get(f"{API}/schedule/{entry['id']}", user="alice")
        assert response.status_code == 200
        assert api.get(f"{API}/schedule/{entry['id']}", user="bob").status_code == 404
    for listing in ("schedule", "tasks/upcoming"):
        assert api.get(f"{API}/{listing}", user="alice").json["count"] == 2
        assert api.get(f"{API}/{listing}", user="bob").json["count"] == 0
        assert api.get(f"{API}/{listing}", user="admin").json["count"] == 2
    # The owner may still delete it.
    assert api.delete(f"{API}/schedule/{public['id']}", user="alice").status_code == 204


def test_privacy_follows_is_private(api, recordings):
    entry = api.schedule(user="alice", interval=60)
    api.add_task(entry["id"], recordings["acquire_iq"])
    url = f"{API}/schedule/{entry['id']}"
    assert api.get(url, user="bob").status_code == 200
    assert api.patch(url, {"is_private": True}, user="alice").status_code == 200
    assert api.get(url, user="bob").status_code == 404
    assert api.get(f"{API}/tasks/completed", user="bob").json["count"] == 0
    assert api.get(f"{API}/tasks/completed", user="alice").json["count"] == 1
    # Another user cannot make it public again: it is hidden from them.
    assert api.patch(url, {"is_private": False}, user="bob").status_code == 404
    assert api.patch(url, {"is_private": False}, user="admin").status_code == 200
    assert api.get(url, user="bob").status_code == 200
    assert api.get(f"{API}/tasks/completed", user="bob").json["count"] == 1


def test_admin_loses_sight_when_demoted(api):
    api.patch(f"{API}/users/{api.user_ids['alice']}", {"is_admin": True})
    entry = api.schedule(user="bob", is_private=True)
    assert api.get(f"{API}/schedule/{entry['id']}", user="alice").status_code == 200
    demoted = api.patch(f"{API}/users/{api.user_ids['alice']}", {"is_admin": False})
    assert demoted.status_code == 200
    assert api.get(f"{API}/schedule/{entry['id']}", user="alice").status_code == 404
