"""A sensor API per test, on SQLite and on a real PostgreSQL server (``db_backend``).

``api`` is the running app with three users (an admin, alice and bob) and helpers
to call it as one of them; its settings are the defaults with ``api_settings``
(a fixture a test module may override). ``recordings`` holds real SigMF recordings
made once per session by the simulated sensor, which ``api.add_task`` attaches to
task results.
"""

import datetime
import shutil
import sqlite3
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from grscos.acquire import acquire
from grscos.config import Config
from grscos.settings import HostList, Settings
from grscos.storage import users
from grscos.storage.database import Database
from grscos.storage.models import ScheduleEntry, TaskResult, utc_now
from grscos.storage.results import add_recordings
from grscos.webapi import create_app
from tests.pg_server import PostgresServer

# The tests' callback receivers (callback_receiver.py) listen there.
RECEIVER_HOSTS = HostList.parse("127.0.0.1")
DEFAULT_ACTIONS = Path(__file__).resolve().parents[2] / "actions" / "actions.yaml"
ADMIN_ACTION = """
  - name: admin_calibrate
    flowgraph: acquire_iq
    summary: Admin-only maintenance capture.
    admin_only: true
    max_run_time: 30
"""


@pytest.fixture(scope="session")
def api_config(tmp_path_factory) -> Path:
    """The shipped defaults plus an admin-only action."""
    directory = tmp_path_factory.mktemp("api-config")
    (directory / "actions.yaml").write_text(DEFAULT_ACTIONS.read_text() + ADMIN_ACTION)
    return directory


@pytest.fixture(scope="session")
def postgres(tmp_path_factory) -> Iterator[PostgresServer]:
    server = PostgresServer(tmp_path_factory.mktemp("pg"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def migrated_templates() -> dict:
    """A migrated empty database per backend, copied for each test (migrating each
    time would cost seconds)."""
    return {}


def _fresh_database(backend: str, tmp_path: Path, request, templates: dict) -> str:
    if backend == "sqlite":
        if "sqlite" not in templates:
            template = tmp_path.parent / f"template-{uuid.uuid4().hex}.sqlite3"
            Database(f"sqlite:///{template}", tmp_path).upgrade()
            templates["sqlite"] = template
        target = tmp_path / "scos.sqlite3"
        source = sqlite3.connect(templates["sqlite"])
        destination = sqlite3.connect(target)
        source.backup(destination)
        source.close()
        destination.close()
        return f"sqlite:///{target}"
    server: PostgresServer = request.getfixturevalue("postgres")
    if "postgresql" not in templates:
        url = server.create_database("scos_template")
        database = Database(url, tmp_path)
        database.upgrade()
        database.dispose()
        templates["postgresql"] = "scos_template"
    name = f"test_{uuid.uuid4().hex[:12]}"
    url = server.create_database(name, template="scos_template")
    request.addfinalizer(lambda: server.drop_database(name))
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_backend(request) -> str:
    return request.param


@dataclass
class Api:
    """The app under test and its users' tokens."""

    app: object
    settings: Settings
    database: Database
    tokens: dict[str, str] = field(default_factory=dict)
    user_ids: dict[str, int] = field(default_factory=dict)

    @property
    def client(self):
        return self.app.test_client()

    def headers(self, user: str | None) -> dict:
        return {"Authorization": f"Token {self.tokens[user]}"} if user else {}

    def call(self, method: str, url: str, user: str | None = "admin", **kwargs):
        headers = self.headers(user) | kwargs.pop("headers", {})
        return self.client.open(url, method=method, headers=headers, **kwargs)

    def get(self, url: str, user: str | None = "admin", **kwargs):
        return self.call("GET", url, user, **kwargs)

    def post(self, url: str, json=None, user: str | None = "admin", **kwargs):
        return self.call("POST", url, user, json=json, **kwargs)

    def put(self, url: str, json=None, user: str | None = "admin", **kwargs):
        return self.call("PUT", url, user, json=json, **kwargs)

    def patch(self, url: str, json=None, user: str | None = "admin", **kwargs):
        return self.call("PATCH", url, user, json=json, **kwargs)

    def delete(self, url: str, user: str | None = "admin", **kwargs):
        return self.call("DELETE", url, user, **kwargs)

    def schedule(self, user: str = "admin", **entry) -> dict:
        """Create an entry (a one-shot acquire_iq unless told otherwise); its JSON."""
        body = {"name": f"entry {uuid.uuid4().hex[:8]}", "action": "acquire_iq"} | entry
        response = self.post("/api/v1/schedule", body, user=user)
        assert response.status_code == 201, response.json
        return response.json

    def add_task(
        self,
        schedule_id: str,
        recordings: list[Path] = (),
        status: str = "success",
        detail: str = "",
        started: datetime.datetime | None = None,
    ) -> int:
        """A task result of the entry, as the scheduler records it, with copies of
        ``recordings`` (SigMF meta paths) in the data directory; its task_id."""
        started = started or utc_now()
        with self.database.session() as db:
            entry = db.get(ScheduleEntry, schedule_id)
            task_id = entry.next_task_id
            entry.next_task_id += 1
            finished = (
                None if status == "in-progress" else started + datetime.timedelta(seconds=1.5)
            )
            result = TaskResult(
                task_id=task_id,
                scheduled=started,
                started=started,
                finished=finished,
                status=status,
                detail=detail,
            )
            entry.task_results.append(result)
            folder = self.settings.data_dir / schedule_id / str(task_id)
            folder.mkdir(parents=True, exist_ok=True)
            copies = []
            for meta in recordings:
                for suffix in (".sigmf-meta", ".sigmf-data"):
                    shutil.copy(meta.with_suffix(suffix), folder / meta.with_suffix(suffix).name)
                copies.append(folder / meta.name)
            add_recordings(result, copies, self.settings.data_dir)
        return task_id


def make_api(
    tmp_path: Path, database_url: str, config_dir: Path, auth: str = "token", **settings_fields
) -> Api:
    """An app on ``database_url`` with ``settings_fields`` (Settings fields) set, and,
    with token auth, its three users."""
    settings = Settings(
        home=tmp_path,
        database_url=database_url,
        data_dir=tmp_path / "data",
        config_dir=config_dir,
        auth=auth,
        **settings_fields,
    )
    app = create_app(settings)
    sensor = app.extensions["scos"]
    api = Api(app, settings, sensor.database)
    if auth == "token":
        with sensor.database.session() as db:
            for name, admin in (("admin", True), ("alice", False), ("bob", False)):
                user, token = users.create_user(db, name, admin)
                db.flush()
                api.tokens[name] = token
                api.user_ids[name] = user.id
    return api


@pytest.fixture
def database_url(db_backend, tmp_path, request, migrated_templates) -> str:
    return _fresh_database(db_backend, tmp_path, request, migrated_templates)


@pytest.fixture
def api_settings() -> dict:
    """Settings fields of ``api``: the callback receivers' address listed in
    SCOS_CALLBACK_HOSTS (a module that tests other settings overrides this)."""
    return {"callback_hosts": RECEIVER_HOSTS}


@pytest.fixture
def api(tmp_path, database_url, api_config, api_settings) -> Iterator[Api]:
    sensor = make_api(tmp_path, database_url, api_config, **api_settings)
    yield sensor
    sensor.database.dispose()


@pytest.fixture(scope="session")
def recordings(tmp_path_factory) -> dict[str, list[Path]]:
    """Real recordings of the simulated sensor: one of acquire_iq, three of
    acquire_stepped_iq (meta paths)."""
    out = tmp_path_factory.mktemp("recordings")
    config = Config.load(None)
    made = {}
    for action in ("acquire_iq", "acquire_stepped_iq"):
        result = acquire(config, action, {}, "sim", out / action)
        made[action] = [Path(path) for path in result.recordings]
    return made
