"""The API under faults: bodies that are too deep or too large, and a database that
is unreachable (PostgreSQL stopped, an SQLite write lock held past the busy timeout).

Every bad body answers 4xx naming ``body``, on every endpoint that takes one, both
through the Flask test client (both backends) and through gunicorn configured as
``gr-scos run`` starts it. An unreachable database answers 503 saying since when, with
``Retry-After``, never the driver's message; the API works again as soon as the
database does, and an API started during the outage starts all the same.
"""

import contextlib
import datetime
import io
import json
import logging
import os
import select
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.client import HTTPResponse
from pathlib import Path

import pytest
import requests
from sqlalchemy import text

from grscos.settings import Settings
from grscos.storage import users
from grscos.storage.database import Database
from grscos.storage.models import format_utc
from grscos.storage.outage import OUTAGE_FILE
from grscos.webapi import create_app
from tests.api.conftest import Api, _fresh_database, make_api
from tests.deploy.conftest import VENV_BIN, free_port, terminate
from tests.waiting import wait_for

API = "/api/v1"
STATUS = f"{API}/status"
SCHEDULE = f"{API}/schedule"
MAX_DEPTH = 32
LIMIT = 1 << 20  # 1 MiB, as nginx's client_max_body_size
HUGE = 100 * 1000 * 1000
ANSWER_TIMEOUT = 60  # generous: the machine may be busy
ENTRY = {"name": "probe", "action": "acquire_iq"}

# Every endpoint that reads a body, with a body it would accept.
BODY_ENDPOINTS = [
    pytest.param("POST", SCHEDULE, ENTRY, id="post-schedule"),
    pytest.param("PUT", f"{SCHEDULE}/taken", ENTRY, id="put-schedule"),
    pytest.param("PATCH", f"{SCHEDULE}/taken", {"priority": 3}, id="patch-schedule"),
    pytest.param("POST", f"{API}/users", {"username": "carol"}, id="post-users"),
    pytest.param("PATCH", f"{API}/users/ALICE", {"username": "alicia"}, id="patch-user"),
]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def shared(request, tmp_path_factory, api_config, migrated_templates) -> Iterator[Api]:
    """One sensor for the tests whose requests are all refused (each checks that
    nothing changed), with alice's entry ``taken``."""
    home = tmp_path_factory.mktemp("faults")
    url = _fresh_database(request.param, home, request, migrated_templates)
    api = make_api(home, url, api_config)
    api.schedule(user="alice", schedule_id="taken", name="taken", interval=60)
    yield api
    api.database.dispose()


def target(api: Api, url: str) -> str:
    return url.replace("ALICE", str(api.user_ids["alice"]))


def assert_unchanged(api: Api) -> None:
    users_page = api.get(f"{API}/users").json
    assert [user["username"] for user in users_page["results"]] == ["admin", "alice", "bob"]
    entries = api.get(SCHEDULE).json["results"]
    assert [(entry["id"], entry["priority"]) for entry in entries] == [("taken", 10)]


def assert_error(response, status: int, field: str, reason: str) -> dict:
    assert response.status_code == status, (response.status_code, response.get_data(True)[:300])
    body = response.get_json()
    assert body["errors"] == {field: reason}, body
    assert reason in body["message"], body
    return body


def nested(depth: int) -> bytes:
    """A JSON object whose ``name`` holds arrays nested so that the body is ``depth``
    levels deep."""
    return b'{"name":' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"


# --- bodies nested too deeply ---------------------------------------------------------


@pytest.mark.parametrize("depth", [200, 1000, 100_000])
@pytest.mark.parametrize(("method", "url", "_body"), BODY_ENDPOINTS)
def test_a_body_nested_too_deeply_is_400(shared, method, url, _body, depth):
    response = shared.call(
        method, target(shared, url), data=nested(depth), content_type="application/json"
    )
    assert_error(response, 400, "body", f"nested more than {MAX_DEPTH} levels deep")
    assert_unchanged(shared)


def test_the_depth_limit_counts_arrays_and_objects_outside_strings(shared):
    def post(data: bytes):
        return shared.call("POST", SCHEDULE, data=data, content_type="application/json")

    # as deep as allowed: validated as usual
    response = post(nested(MAX_DEPTH))
    assert response.status_code == 400
    assert response.json["errors"] == {"name": "must be of type string", "action": "required"}
    # brackets in strings are text
    brackets = json.dumps(ENTRY | {"name": "[{" * 5000}).encode()
    assert_error(post(brackets), 400, "name", "must have at most 200 characters")
    escaped = ENTRY | {"name": '[{ \\" [[[', "schedule_id": "brackets", "validate_only": True}
    response = post(json.dumps(escaped).encode())
    assert response.status_code == 200, response.json
    # one level more is refused
    assert_error(
        post(nested(MAX_DEPTH + 1)), 400, "body", f"nested more than {MAX_DEPTH} levels deep"
    )
    assert_unchanged(shared)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        pytest.param(b'{"priority": NaN}', "not a JSON object: NaN is not JSON", id="nan"),
        pytest.param(b"\xff\xfe\xfd", "not a JSON object:", id="not-utf"),
        pytest.param(b'{"name": "x"', "not a JSON object: Expecting", id="unterminated"),
    ],
)
def test_a_body_that_is_not_json_is_400_naming_the_reason(shared, data, reason):
    response = shared.call("POST", SCHEDULE, data=data, content_type="application/json")
    assert response.status_code == 400, response.get_data(True)
    assert response.json["errors"]["body"].startswith(reason), response.json
    assert_unchanged(shared)


@pytest.mark.parametrize(
    ("method", "url"),
    [("POST", SCHEDULE), ("PUT", f"{SCHEDULE}/taken"), ("PATCH", f"{SCHEDULE}/taken")],
)
def test_an_unpaired_surrogate_is_400(shared, method, url):
    """``\\ud800`` alone is valid JSON but no text a database can store."""
    data = json.dumps(ENTRY | {"name": "probe \ud800"}).encode()  # escaped: ASCII
    response = shared.call(method, url, data=data, content_type="application/json")
    assert_error(response, 400, "name", "must not contain unpaired UTF-16 surrogates")
    assert_unchanged(shared)


# --- bodies larger than 1 MiB ----------------------------------------------------------


def padded(body: dict, size: int) -> bytes:
    """``body`` as JSON padded with spaces (still valid JSON) to ``size`` bytes."""
    data = json.dumps(body).encode()
    return data + b" " * (size - len(data))


def send(api: Api, method: str, url: str, data: bytes, how: str, user: str = "admin"):
    """A request with body ``data``, its length declared (``how``: content-length) or
    not (chunked: the app gets it so from gunicorn, which sets ``wsgi.input_terminated``)."""
    if how == "content-length":
        return api.call(method, url, user, data=data, content_type="application/json")
    return api.client.open(
        url,
        method=method,
        input_stream=io.BytesIO(data),
        headers=api.headers(user)
        | {"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )


def assert_too_large(response) -> None:
    assert_error(response, 413, "body", f"larger than the limit of {LIMIT} bytes (1 MiB)")


@pytest.mark.parametrize("how", ["content-length", "chunked"])
@pytest.mark.parametrize(("method", "url", "body"), BODY_ENDPOINTS)
def test_a_body_larger_than_1_mib_is_413(shared, method, url, body, how):
    url = target(shared, url)
    # 1 MiB is read and validated
    response = send(shared, method, url, padded({"unknown": 1}, LIMIT), how)
    assert response.status_code == 400, response.get_data(True)[:300]
    assert response.json["errors"]["unknown"] == "unknown field"
    # a byte more is refused, however good the body
    assert_too_large(send(shared, method, url, padded(body, LIMIT + 1), how))
    assert_unchanged(shared)


@pytest.mark.parametrize("how", ["content-length", "chunked"])
def test_an_endpoint_without_body_refuses_a_large_one_too(shared, how):
    """As nginx does: rotating a token takes no body, and a large one is refused
    before anything is done."""
    data = b" " * (LIMIT + 1)
    assert_too_large(send(shared, "POST", f"{API}/users/me/token", data, how, user="bob"))
    assert shared.get(f"{API}/users/me", user="bob").status_code == 200  # the same token
    assert_too_large(send(shared, "POST", f"{API}/no/such/thing", data, how))


# --- through gunicorn ----------------------------------------------------------------------


@dataclass
class Gunicorn:
    """gunicorn serving the API as ``gr-scos run`` starts it (``grscos.gunicorn_conf``)."""

    process: subprocess.Popen
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v1"

    def answer(self, path: str, token: str) -> requests.Response | None:
        """GET ``path`` with ``token``; None while nothing answers."""
        try:
            headers = {"Authorization": f"Token {token}"}
            return requests.get(f"{self.url}{path}", headers=headers, timeout=ANSWER_TIMEOUT)
        except requests.ConnectionError:
            return None


@contextlib.contextmanager
def gunicorn(home: Path, **environment: str) -> Iterator[Gunicorn]:
    """gunicorn with one worker on a free port, for the sensor of ``home``; stopped
    at the end."""
    port = free_port()
    log = home / "gunicorn.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [VENV_BIN / "gunicorn", "-c", "python:grscos.gunicorn_conf", "grscos.webapi.wsgi:app"],
            env=os.environ
            | {
                "SCOS_HOME": str(home),
                "SCOS_API_BIND": f"127.0.0.1:{port}",
                "SCOS_API_WORKERS": "1",
            }
            | environment,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Gunicorn(process, port, log)
    try:
        wait_for(
            lambda: server.answer("/status", "none") is not None or process.poll() is not None,
            ANSWER_TIMEOUT,
            "gunicorn answering",
        )
        assert process.poll() is None, log.read_text()
        yield server
    finally:
        terminate(process)


def sensor_home(home: Path, database_url: str) -> str:
    """Migrate the database of a sensor in ``home``; the token of its admin."""
    database = Database(database_url, home / "data")
    try:
        database.upgrade()
        with database.session() as db:
            return users.create_user(db, "admin", is_admin=True)[1]
    finally:
        database.dispose()


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[tuple[Gunicorn, str]]:
    """gunicorn serving a sensor on SQLite, and its admin's token."""
    home = tmp_path_factory.mktemp("gunicorn")
    token = sensor_home(home, f"sqlite:///{home / 'scos.sqlite3'}")
    with gunicorn(home) as server:
        yield server, token


def send_until_answered(port: int, head: bytes, body: Iterator[bytes]) -> tuple[HTTPResponse, int]:
    """Send ``head`` then ``body`` to 127.0.0.1:``port``, stopping as soon as the server
    answers (or stops taking more); the answer and the body bytes sent."""
    with socket.create_connection(("127.0.0.1", port), timeout=ANSWER_TIMEOUT) as sock:
        sock.sendall(head)
        sent = _send_until_readable(sock, body)
        sock.settimeout(ANSWER_TIMEOUT)
        answer = HTTPResponse(sock)
        answer.begin()
        answer.body = answer.read()
    return answer, sent


def _send_until_readable(sock: socket.socket, body: Iterator[bytes]) -> int:
    sock.setblocking(False)
    sent = 0
    for piece in body:
        view = memoryview(piece)
        while view:
            readable, writable, _ = select.select([sock], [sock], [], ANSWER_TIMEOUT)
            if readable or not writable:
                return sent
            try:
                count = sock.send(view)
            except (BrokenPipeError, ConnectionResetError):
                return sent
            view, sent = view[count:], sent + count
    return sent


def pieces(total: int, size: int = 1 << 16, chunk_framing: bool = False) -> Iterator[bytes]:
    """``total`` bytes of spaces, in pieces; as HTTP/1.1 chunks with ``chunk_framing``."""
    piece = b" " * size
    for _ in range(total // size):
        yield b"%x\r\n%s\r\n" % (size, piece) if chunk_framing else piece
    if chunk_framing:
        yield b"0\r\n\r\n"


def request_head(port: int, token: str, length_header: str) -> bytes:
    return (
        f"POST /api/v1/schedule HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Token {token}\r\nContent-Type: application/json\r\n"
        f"{length_header}\r\n\r\n"
    ).encode()


@pytest.mark.parametrize("how", ["content-length", "chunked"])
def test_gunicorn_answers_413_to_a_100_mb_body_without_reading_it(served, how):
    server, token = served
    if how == "chunked":
        head = request_head(server.port, token, "Transfer-Encoding: chunked")
        body = pieces(HUGE, chunk_framing=True)
    else:
        head = request_head(server.port, token, f"Content-Length: {HUGE}")
        body = pieces(HUGE)
    answer, sent = send_until_answered(server.port, head, body)
    assert answer.status == 413, answer.body[:300]
    error = json.loads(answer.body)
    assert error["errors"] == {"body": f"larger than the limit of {LIMIT} bytes (1 MiB)"}
    # The answer came while most of the body was still to be sent: the socket
    # buffers hold a few MB at most, so the API stopped reading near the limit.
    assert sent < HUGE / 4
    # and the API goes on
    assert server.answer("/status", token).status_code == 200


# --- the database unreachable ------------------------------------------------------------


def outage_file(settings: Settings) -> Path:
    return settings.home / OUTAGE_FILE


def assert_unreachable(response, settings: Settings) -> str:
    """A 503 saying since when the database is unreachable, as the outage file says;
    the since."""
    assert response.status_code == 503, (response.status_code, response.get_data(True)[:300])
    assert int(response.headers["Retry-After"]) > 0
    body = response.get_json()
    recorded = json.loads(outage_file(settings).read_text())
    since = format_utc(datetime.datetime.fromisoformat(recorded["since"]))
    assert body == {
        "message": f"the database is unreachable since {since}; the sensor retries",
        "errors": {"database": f"unreachable since {since}"},
    }
    return since


@pytest.mark.parametrize("db_backend", ["postgresql"])
def test_postgresql_stopped_answers_503_until_it_is_back(api, postgres, caplog):
    assert api.get(STATUS).status_code == 200
    postgres.halt()
    try:
        with caplog.at_level(logging.WARNING):
            since = assert_unreachable(api.get(STATUS), api.settings)
            assert_unreachable(api.get(STATUS, user="alice"), api.settings)
            assert_unreachable(api.post(SCHEDULE, ENTRY), api.settings)
            assert_unreachable(
                api.get(STATUS, headers={"Authorization": "Token nope"}), api.settings
            )
        # The driver's message (host, port) goes to the log, once, without traceback.
        assert str(postgres.port) not in api.get(STATUS).get_data(True)
        logged = [record for record in caplog.records if record.levelno >= logging.ERROR]
        assert len(logged) == 1, [record.getMessage() for record in logged]
        assert since in logged[0].getMessage() and str(postgres.port) in logged[0].getMessage()
        assert logged[0].exc_info is None
        # Without credentials the answer is still 401: nothing is said about the sensor.
        assert api.get(STATUS, user=None).status_code == 401
    finally:
        postgres.resume()
    response = api.get(STATUS)
    assert response.status_code == 200, response.get_data(True)
    assert not outage_file(api.settings).exists()
    assert api.post(SCHEDULE, ENTRY).status_code == 201


def test_an_api_started_while_postgresql_is_stopped_serves_once_it_is_back(
    postgres, tmp_path, api_config
):
    """gunicorn recycles workers: one that starts during an outage must start, answer
    503, and do its start-up work (migration, location) once the database is back."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    settings = Settings(
        home=tmp_path,
        database_url=postgres.create_database(name),  # empty: not migrated
        data_dir=tmp_path / "data",
        config_dir=api_config,
    )
    try:
        postgres.halt()
        try:
            app = create_app(settings)
            client = app.test_client()
            bogus = {"Authorization": "Token nope"}
            assert_unreachable(client.get(STATUS, headers=bogus), settings)
        finally:
            postgres.resume()
        # migrated by the first request: the users table exists, the token is unknown
        assert client.get(STATUS, headers=bogus).status_code == 401
        database = app.extensions["scos"].database
        with database.session() as db:
            _, token = users.create_user(db, "admin", is_admin=True)
        response = client.get(STATUS, headers={"Authorization": f"Token {token}"})
        assert response.status_code == 200, response.get_data(True)
        location = settings.config().location
        assert response.json["location"]["description"] == location["description"]
        assert not outage_file(settings).exists()
        database.dispose()
    finally:
        postgres.drop_database(name)


@pytest.fixture
def impatient_sqlite(tmp_path, api_config) -> Iterator[Api]:
    """An API on SQLite whose writers wait only 0.2 s for another's write lock."""
    settings = Settings(
        home=tmp_path,
        database_url=f"sqlite:///{tmp_path / 'scos.sqlite3'}",
        data_dir=tmp_path / "data",
        config_dir=api_config,
    )
    database = Database(settings.database_url, settings.data_dir, busy_timeout_ms=200)
    api = Api(create_app(settings, database), settings, database)
    with database.session() as db:
        _, api.tokens["admin"] = users.create_user(db, "admin", is_admin=True)
    yield api
    database.dispose()


def test_sqlite_locked_past_the_busy_timeout_answers_503_to_writes(impatient_sqlite):
    api = impatient_sqlite
    holding, release = threading.Event(), threading.Event()

    def hold_the_write_lock():
        with api.database.session() as db:
            db.execute(text("UPDATE location SET description = 'held'"))
            holding.set()
            release.wait(60)

    holder = threading.Thread(target=hold_the_write_lock)
    holder.start()
    try:
        assert holding.wait(10)
        assert_unreachable(api.post(SCHEDULE, ENTRY), api.settings)
        # WAL: readers do not wait for the writer
        assert api.get(STATUS).status_code == 200
    finally:
        release.set()
        holder.join()
    response = api.post(SCHEDULE, ENTRY)
    assert response.status_code == 201, response.get_data(True)
    assert not outage_file(api.settings).exists()


def test_gunicorn_workers_start_while_postgresql_is_stopped(postgres, tmp_path):
    """gunicorn stops when a worker fails to boot: a worker started (or recycled)
    during an outage boots, answers 503, and serves once the database is back."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    url = postgres.create_database(name)
    try:
        token = sensor_home(tmp_path, url)
        postgres.halt()
        halted = True
        try:
            with gunicorn(tmp_path, SCOS_DATABASE_URL=url) as server:
                response = server.answer("/status", token)
                assert response.status_code == 503, response.text
                assert response.json()["errors"]["database"].startswith("unreachable since ")
                postgres.resume()
                halted = False
                response = server.answer("/status", token)
                assert response.status_code == 200, response.text
                assert server.process.poll() is None
        finally:
            if halted:
                postgres.resume()
    finally:
        postgres.drop_database(name)
