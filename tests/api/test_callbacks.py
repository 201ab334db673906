"""Acquisition notifications (Table 13) delivered to a real callback receiver, on both
database backends.

The receiver (``callback_receiver.py``) is an HTTP server on 127.0.0.1 in a thread
of the test process, optionally HTTPS with a certificate of a test CA. The
:class:`Notifier` is driven directly (its backoff shrunk to tenths of a second);
the scheduler's hook and the API (``notification`` of a task, the encrypted
credential of an entry) are checked through their own calls. ``test_scheduler.py``
covers a notification through the running scheduler.
"""

import base64
import dataclasses
import datetime
import ipaddress
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from sqlalchemy import select

from grscos.scheduler.backoff import Backoff
from grscos.scheduler.callbacks import Notifier
from grscos.scheduler.journal import Finished
from grscos.scheduler.scheduler import Scheduler
from grscos.settings import HostList, Settings, SettingsError
from grscos.storage import credentials
from grscos.storage.database import Database
from grscos.storage.models import Notification, ScheduleEntry, TaskResult, utc_now
from grscos.storage.outage import OutageRecord
from tests.api.callback_receiver import Receiver
from tests.api.conftest import Api, make_api
from tests.waiting import wait_for

SCHEDULE = "/api/v1/schedule"
BASE, CAP = 0.1, 0.4  # the notifier's backoff in these tests, seconds
SENSOR = "sensor-under-test"


# --- the receiver ------------------------------------------------------------------------


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory) -> dict[str, Path]:
    """A test CA and a certificate it signed for 127.0.0.1 (PEM files)."""
    folder = tmp_path_factory.mktemp("tls")
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gr-scos test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = {name: folder / f"{name}.pem" for name in ("ca", "cert", "key")}
    files["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files["cert"].write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    files["key"].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return files


@pytest.fixture
def tls_receiver(tls_files) -> Iterator[Receiver]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls_files["cert"], tls_files["key"])
    server = Receiver(tls=context)
    server.start()
    yield server
    server.stop()


# --- notifiers and helpers ---------------------------------------------------------------


@pytest.fixture
def notifiers(api) -> Iterator[Callable[..., Notifier]]:
    """Make notifiers on the api's database (or ``database``) with settings changed
    by ``overrides`` and a short backoff; all are stopped at the end."""
    made = []

    def make(database: Database | None = None, **overrides) -> Notifier:
        settings = dataclasses.replace(api.settings, **overrides)
        notifier = Notifier(database or api.database, settings, SENSOR)
        notifier.backoff = notifier.outage_backoff = Backoff(BASE, CAP)
        made.append(notifier)
        return notifier

    yield make
    for notifier in made:
        notifier.stop()


def queue(api: Api, notifier: Notifier, schedule_id: str, task_id: int) -> None:
    with api.database.session() as db:
        result = db.scalar(
            select(TaskResult).where(
                TaskResult.schedule_entry_id == schedule_id, TaskResult.task_id == task_id
            )
        )
        assert notifier.queue(db, result) is not None


def task(api: Api, schedule_id: str, task_id: int, user: str = "admin") -> dict:
    response = api.get(f"{SCHEDULE}/{schedule_id}/tasks/{task_id}", user=user)
    assert response.status_code == 200, response.json
    return response.json


def notification(api: Api, schedule_id: str, task_id: int) -> dict | None:
    return task(api, schedule_id, task_id).get("notification")


def in_state(api: Api, schedule_id: str, task_id: int, state: str, attempts: int = 0):
    def check():
        shown = notification(api, schedule_id, task_id)
        return shown if shown["state"] == state and shown["attempts"] >= attempts else None

    return check


def stored_credential(api: Api, schedule_id: str) -> str | None:
    with api.database.sessions() as db:
        return db.get(ScheduleEntry, schedule_id).callback_credential


# --- delivery ----------------------------------------------------------------------------


def test_delivers_table_13_with_the_token_that_made_the_entry(api, notifiers, receiver, recordings):
    entry = api.schedule("alice", callback_url=receiver.url())
    task_id = api.add_task(entry["id"], recordings["acquire_stepped_iq"])
    notifier = notifiers()
    notifier.start()
    queue(api, notifier, entry["id"], task_id)

    shown = wait_for(in_state(api, entry["id"], task_id, "delivered"))
    assert shown["attempts"] == 1
    assert "last_error" not in shown and "next_attempt" not in shown
    assert len(receiver.requests) == 1
    request = receiver.requests[0]
    assert request.path == "/callback"
    assert request.headers["Authorization"] == f"Token {api.tokens['alice']}"
    assert request.headers["Content-Type"] == "application/json"
    body = request.json
    listed = task(api, entry["id"], task_id)
    assert body["message_type"] == "acquisition_notification"
    assert body["schedule_id"] == entry["id"]
    assert body["task_id"] == task_id
    assert body["sensor_id"] == SENSOR
    assert body["status"] == "success"
    assert body["detail"] == ""
    assert body["started"] == listed["started"] and body["finished"] == listed["finished"]
    assert body["duration"] == listed["duration"] == "00:00:01.500000"
    assert body["archive_id"] == f"/api/v1/schedule/{entry['id']}/tasks/{task_id}/archive"
    # Table 25: the SigMF metadata of each recording, without its data.
    assert body["recordings"] == [
        {"metadata": recording["metadata"]} for recording in listed["recording_metadata"]
    ]
    assert len(body["recordings"]) == 3
    assert {"global", "captures", "annotations"} <= set(body["recordings"][0]["metadata"])
    delivered = datetime.datetime.fromisoformat(shown["delivered"].replace("Z", "+00:00"))
    assert abs(delivered - datetime.datetime.now(datetime.UTC)) < datetime.timedelta(minutes=1)


def test_a_failed_task_is_notified_too_and_the_api_lists_it(api, notifiers, receiver):
    entry = api.schedule("bob", callback_url=receiver.url("/cb?sensor=1"))
    plain = api.schedule("bob")
    failed = api.add_task(entry["id"], status="fail", detail="flowgraph raised")
    unnotified = api.add_task(plain["id"])
    notifier = notifiers()
    notifier.start()
    queue(api, notifier, entry["id"], failed)
    with api.database.session() as db:
        result = db.scalar(select(TaskResult).where(TaskResult.schedule_entry_id == plain["id"]))
        assert notifier.queue(db, result) is None  # no callback_url: nothing to send

    wait_for(in_state(api, entry["id"], failed, "delivered"))
    body = receiver.requests[0].json
    assert receiver.requests[0].path == "/cb?sensor=1"
    assert receiver.requests[0].headers["Authorization"] == f"Token {api.tokens['bob']}"
    assert (body["status"], body["detail"], body["recordings"]) == ("fail", "flowgraph raised", [])
    assert "archive_id" not in body
    assert "notification" not in task(api, plain["id"], unnotified)
    listed = api.get(f"{SCHEDULE}/{entry['id']}/tasks").json["results"]
    assert listed[0]["notification"]["state"] == "delivered"
    # The notification goes with its task result.
    assert api.delete(f"{SCHEDULE}/{entry['id']}/tasks/{failed}").status_code == 204
    with api.database.sessions() as db:
        assert db.scalars(select(Notification)).all() == []


def test_down_receiver_is_retried_with_backoff_until_it_is_back(api, notifiers, receiver):
    entry = api.schedule("alice", callback_url=receiver.url())
    task_id = api.add_task(entry["id"])
    receiver.stop()
    notifier = notifiers()
    notifier.start()
    queue(api, notifier, entry["id"], task_id)

    pending = wait_for(in_state(api, entry["id"], task_id, "pending", attempts=3))
    assert "Connection" in pending["last_error"]
    assert "next_attempt" in pending and "delivered" not in pending
    receiver.start()  # same port
    shown = wait_for(in_state(api, entry["id"], task_id, "delivered"))
    assert shown["attempts"] >= 4
    assert "Connection" in shown["last_error"]  # why it took several attempts
    assert len(receiver.requests) == 1
    assert receiver.requests[0].headers["Authorization"] == f"Token {api.tokens['alice']}"


def test_error_answers_back_off_and_the_retry_limit_fails_it(api, notifiers, receiver):
    entry = api.schedule(callback_url=receiver.url())
    task_id = api.add_task(entry["id"])
    receiver.status = 500
    notifier = notifiers(callback_retries=5)
    assert [notifier.backoff.delay(n) for n in range(1, 6)] == [BASE, 2 * BASE, 4 * BASE, CAP, CAP]
    notifier.start()
    queue(api, notifier, entry["id"], task_id)

    shown = wait_for(in_state(api, entry["id"], task_id, "failed"))
    assert shown["attempts"] == 5
    assert shown["last_error"].startswith("HTTP 500")
    assert "boom" in shown["last_error"]
    assert "next_attempt" not in shown and "delivered" not in shown
    time.sleep(3 * CAP)
    assert len(receiver.requests) == 5  # and no more
    gaps = [
        later.at - earlier.at
        for earlier, later in zip(receiver.requests, receiver.requests[1:], strict=False)
    ]
    for gap, delay in zip(gaps, [BASE, 2 * BASE, 4 * BASE, CAP], strict=True):
        assert gap >= delay * 0.95, gaps


def test_pending_notification_survives_a_restart(api, notifiers, receiver):
    entry = api.schedule("alice", callback_url=receiver.url())
    task_id = api.add_task(entry["id"])
    receiver.stop()
    first = notifiers()
    first.start()
    queue(api, first, entry["id"], task_id)
    wait_for(in_state(api, entry["id"], task_id, "pending", attempts=1))
    first.stop()
    receiver.start()

    # A new process: its own Database; nothing is queued, the pending one is found.
    database = Database(api.settings.database_url, api.settings.data_dir)
    try:
        second = notifiers(database=database)
        second.start()
        shown = wait_for(in_state(api, entry["id"], task_id, "delivered"))
    finally:
        second.stop()
        database.dispose()
    assert shown["attempts"] >= 2
    assert len(receiver.requests) == 1
    assert receiver.requests[0].headers["Authorization"] == f"Token {api.tokens['alice']}"


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
@pytest.mark.parametrize("verify", ["true", "false", "ca"])
def test_tls_verification_follows_the_setting(api, notifiers, tls_receiver, tls_files, verify):
    entry = api.schedule(callback_url=tls_receiver.url())
    task_id = api.add_task(entry["id"])
    setting = {"true": True, "false": False, "ca": tls_files["ca"]}[verify]
    notifier = notifiers(callback_verify=setting, callback_retries=1)
    notifier.start()
    queue(api, notifier, entry["id"], task_id)

    if verify == "true":
        shown = wait_for(in_state(api, entry["id"], task_id, "failed"))
        assert "SSLError" in shown["last_error"]
        assert "CERTIFICATE_VERIFY_FAILED" in shown["last_error"]
        assert tls_receiver.requests == []
    else:
        wait_for(in_state(api, entry["id"], task_id, "delivered"))
        assert tls_receiver.requests[0].headers["Authorization"] == f"Token {api.tokens['admin']}"


@pytest.mark.parametrize("mode", ["oauth", "jwt"])
def test_oauth_client_credentials_give_a_bearer_token(api, notifiers, receiver, mode):
    entry = api.schedule("alice", callback_url=receiver.url())
    first, second = api.add_task(entry["id"]), api.add_task(entry["id"])
    oauth = {
        "oauth_token_url": receiver.url("/token"),
        "oauth_client_id": "sensor-7",
        "oauth_client_secret": "s3cret:with colon",
    }
    mode_settings = {"callback_auth": "oauth"} if mode == "oauth" else {"auth": "jwt"}
    notifier = notifiers(**oauth, **mode_settings)
    notifier.start()
    queue(api, notifier, entry["id"], first)
    wait_for(in_state(api, entry["id"], first, "delivered"))
    queue(api, notifier, entry["id"], second)
    wait_for(in_state(api, entry["id"], second, "delivered"))

    assert [request.headers["Authorization"] for request in receiver.requests] == [
        "Bearer access-1",
        "Bearer access-1",  # cached until it expires
    ]
    assert len(receiver.token_requests) == 1
    token_request = receiver.token_requests[0]
    scheme, _, encoded = token_request.headers["Authorization"].partition(" ")
    assert scheme == "Basic"
    assert base64.b64decode(encoded).decode() == "sensor-7:s3cret:with colon"
    assert parse_qs(token_request.body.decode()) == {"grant_type": ["client_credentials"]}


# --- where notifications go, and with which credentials (scheduler/outbound.py) --------

# The receivers' loopback network listed in SCOS_CALLBACK_HOSTS: a URL may name a
# receiver by address (127.0.0.1, in a listed network: listed) or by name
# (localhost: allowed, as it resolves into a listed network, but not listed itself).
LOOPBACK_NETWORK = {"callback_hosts": HostList.parse("127.0.0.0/8 ::1")}
OAUTH = {
    "callback_auth": "oauth",
    "oauth_client_id": "sensor-7",
    "oauth_client_secret": "s3cret",
}
UNLISTED = "; not allowed unless listed in SCOS_CALLBACK_HOSTS"


def deliver_all(api: Api, notifier: Notifier, entries: list[dict]) -> None:
    """Queue a task of each entry with ``notifier`` and wait until all are delivered."""
    tasks = [(entry["id"], api.add_task(entry["id"])) for entry in entries]
    notifier.start()
    for schedule_id, task_id in tasks:
        queue(api, notifier, schedule_id, task_id)
    for schedule_id, task_id in tasks:
        wait_for(in_state(api, schedule_id, task_id, "delivered"))


@pytest.mark.parametrize(
    ("api_settings", "sent"),
    [
        pytest.param(LOOPBACK_NETWORK, {"/address": "Bearer access-1", "/name": None}, id="net"),
        pytest.param(
            {"callback_hosts": HostList.parse("localhost 127.0.0.1")},
            {"/address": "Bearer access-1", "/name": "Bearer access-1"},
            id="name-and-address",
        ),
    ],
)
def test_the_sensors_oauth_token_goes_only_to_listed_hosts(api, notifiers, receiver, sent):
    entries = [
        api.schedule("alice", callback_url=receiver.url("/address")),
        api.schedule("alice", callback_url=receiver.url("/name", host="localhost")),
    ]
    deliver_all(api, notifiers(oauth_token_url=receiver.url("/token"), **OAUTH), entries)
    assert {r.path: r.headers.get("Authorization") for r in receiver.requests} == sent
    assert len(receiver.token_requests) == 1


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
@pytest.mark.parametrize("api_settings", [LOOPBACK_NETWORK], ids=["loopback-listed"])
def test_a_users_token_goes_over_plain_http_only_to_a_listed_host(
    api, notifiers, receiver, tls_receiver
):
    entries = [
        api.schedule("alice", callback_url=receiver.url("/listed")),
        api.schedule("bob", callback_url=receiver.url("/unlisted", host="localhost")),
        # The certificate names 127.0.0.1 only: not verified here.
        api.schedule("bob", callback_url=tls_receiver.url("/https", host="localhost")),
    ]
    deliver_all(api, notifiers(callback_verify=False), entries)
    assert {r.path: r.headers.get("Authorization") for r in receiver.requests} == {
        "/listed": f"Token {api.tokens['alice']}",
        "/unlisted": None,
    }
    (secure,) = tls_receiver.requests
    assert secure.headers["Authorization"] == f"Token {api.tokens['bob']}"


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        pytest.param("127.0.0.1", f"127.0.0.1 is a loopback address{UNLISTED}", id="address"),
        pytest.param(
            "localhost", f"localhost is at 127.0.0.1, a loopback address{UNLISTED}", id="name"
        ),
    ],
)
@pytest.mark.parametrize("api_settings", [LOOPBACK_NETWORK], ids=["loopback-listed"])
def test_an_address_allowed_when_set_but_not_when_delivered_is_refused_then(
    api, notifiers, receiver, host, reason
):
    """The address the connection reaches is checked, not only the one the API saw
    (DNS rebinding): here the operator stops listing the loopback network."""
    entry = api.schedule("alice", callback_url=receiver.url(host=host))
    task_id = api.add_task(entry["id"])
    notifier = notifiers(callback_hosts=HostList())
    notifier.start()
    queue(api, notifier, entry["id"], task_id)

    shown = wait_for(in_state(api, entry["id"], task_id, "failed"))
    assert shown["attempts"] == 1  # final: retrying cannot help
    assert shown["last_error"] == f"not sent: {reason}"
    assert receiver.requests == []


# --- database outages ----------------------------------------------------------------------


@pytest.mark.parametrize("db_backend", ["postgresql"])
def test_a_database_outage_is_recorded_and_ridden_through(api, notifiers, receiver, postgres):
    entry = api.schedule("alice", callback_url=receiver.url())
    task_id = api.add_task(entry["id"])
    receiver.stop()
    notifier = notifiers()
    notifier.start()
    queue(api, notifier, entry["id"], task_id)
    wait_for(in_state(api, entry["id"], task_id, "pending", attempts=1))
    outages = OutageRecord(api.settings.home)

    postgres.halt()
    try:
        outage = wait_for(outages.current, 30, "the outage recorded by the notifier")
        receiver.start()  # nothing can be read: nothing is sent yet
    finally:
        postgres.resume()
    assert outage.error, outage  # the driver's reason
    shown = wait_for(in_state(api, entry["id"], task_id, "delivered"), 30)
    assert len(receiver.requests) == 1
    assert receiver.requests[0].headers["Authorization"] == f"Token {api.tokens['alice']}"
    assert shown["attempts"] >= 2
    wait_for(lambda: outages.current() is None, 30, "the outage record removed")


@pytest.mark.parametrize("db_backend", ["postgresql"])
def test_a_notification_delivered_as_the_database_goes_down_is_not_sent_again(
    api, notifiers, receiver, postgres
):
    entry = api.schedule("alice", callback_url=receiver.url())
    task_id = api.add_task(entry["id"])
    receiver.answering.clear()
    notifier = notifiers()
    notifier.timeout = 120.0  # the answer waits for the database to stop
    notifier.start()
    outages = OutageRecord(api.settings.home)
    try:
        queue(api, notifier, entry["id"], task_id)
        wait_for(lambda: receiver.requests, 30, "the notification received")
        postgres.halt()
        try:
            receiver.answering.set()  # accepted while its delivery cannot be recorded
            wait_for(outages.current, 30, "the outage recorded by the notifier")
        finally:
            postgres.resume()
    finally:
        receiver.answering.set()
    shown = wait_for(in_state(api, entry["id"], task_id, "delivered"), 30)
    assert shown["attempts"] == 1
    assert len(receiver.requests) == 1
    wait_for(lambda: outages.current() is None, 30, "the outage record removed")


# --- the stored credential ---------------------------------------------------------------


def test_the_credential_is_stored_encrypted_for_whoever_set_the_url(api, receiver):
    entry = api.schedule("alice", callback_url=receiver.url())
    schedule_id = entry["id"]
    key_file = api.settings.secret_key_file
    assert key_file.stat().st_mode & 0o777 == 0o600
    stored = stored_credential(api, schedule_id)
    assert stored is not None
    assert api.tokens["alice"] not in stored
    assert credentials.decrypt(key_file, stored) == api.tokens["alice"]
    assert "callback_credential" not in api.get(f"{SCHEDULE}/{schedule_id}").json

    # An admin changing another field leaves the owner's token ...
    assert api.patch(f"{SCHEDULE}/{schedule_id}", {"priority": 3}).status_code == 200
    assert (
        credentials.decrypt(key_file, stored_credential(api, schedule_id)) == (api.tokens["alice"])
    )
    # ... one setting the URL sends their own to it.
    url = {"callback_url": receiver.url("/admin")}
    assert api.patch(f"{SCHEDULE}/{schedule_id}", url).status_code == 200
    assert (
        credentials.decrypt(key_file, stored_credential(api, schedule_id)) == (api.tokens["admin"])
    )
    # Validating changes nothing; an entry without callback_url keeps no credential.
    body = {"name": "n", "action": "acquire_iq", "validate_only": True}
    assert api.put(f"{SCHEDULE}/{schedule_id}", body, user="alice").status_code == 200
    assert (
        credentials.decrypt(key_file, stored_credential(api, schedule_id)) == (api.tokens["admin"])
    )
    body = {"name": "n", "action": "acquire_iq"}
    assert api.put(f"{SCHEDULE}/{schedule_id}", body, user="alice").status_code == 200
    assert stored_credential(api, schedule_id) is None
    assert stored_credential(api, api.schedule("bob")["id"]) is None
    # The key is made once, and kept.
    assert credentials.load_key(key_file) == credentials.load_key(key_file)


def test_oauth_sensors_store_no_token(database_url, tmp_path, api_config):
    api = make_api(
        tmp_path,
        database_url,
        api_config,
        callback_auth="oauth",
        oauth_token_url="https://auth.example/token",
        oauth_client_id="sensor",
        oauth_client_secret="secret",
        callback_hosts=HostList.parse("manager.example"),
    )
    try:
        entry = api.schedule("alice", callback_url="https://manager.example/cb")
        assert stored_credential(api, entry["id"]) is None
        assert not api.settings.secret_key_file.exists()
    finally:
        api.database.dispose()


def test_a_lost_key_fails_the_notification_at_once(api, notifiers, receiver):
    entry = api.schedule("alice", callback_url=receiver.url())
    task_id = api.add_task(entry["id"])
    api.settings.secret_key_file.write_bytes(credentials.Fernet.generate_key())
    notifier = notifiers()
    notifier.start()
    queue(api, notifier, entry["id"], task_id)
    shown = wait_for(in_state(api, entry["id"], task_id, "failed"))
    assert shown["attempts"] == 1
    assert "cannot be decrypted" in shown["last_error"]
    assert receiver.requests == []


# --- the scheduler's hook ----------------------------------------------------------------


def test_the_scheduler_queues_a_notification_with_the_result(api, receiver, tmp_path):
    entry = api.schedule("alice", callback_url=receiver.url())
    succeeded = api.add_task(entry["id"], status="in-progress")
    failed = api.add_task(entry["id"], status="in-progress")
    scheduler = Scheduler(api.settings, device="sim")
    try:
        with api.database.sessions() as db:
            ids = dict(
                db.execute(
                    select(TaskResult.task_id, TaskResult.id).where(
                        TaskResult.schedule_entry_id == entry["id"]
                    )
                ).all()
            )

        def finished(task_id: int, detail: str | None) -> Finished:
            return Finished(
                result_id=ids[task_id],
                schedule_id=entry["id"],
                task_id=task_id,
                action="acquire_iq",
                folder=str(tmp_path / "none"),
                finished=utc_now(),
                started=None,
                detail=detail,
            )

        scheduler._record(finished(succeeded, None))
        assert scheduler.notifier._wakeup.is_set()  # woken by the commit
        scheduler._record(finished(failed, "it broke"))
        with api.database.sessions() as db:
            rows = db.scalars(select(Notification).order_by(Notification.id)).all()
        assert [(row.state, row.attempts, row.url) for row in rows] == [
            ("pending", 0, receiver.url())
        ] * 2
        assert [row.payload["status"] for row in rows] == ["success", "fail"]
        assert rows[1].payload["detail"] == "it broke"
        assert [row.payload["task_id"] for row in rows] == [succeeded, failed]
        # The thread, once started, delivers them.
        scheduler.notifier.start()
        wait_for(in_state(api, entry["id"], failed, "delivered"))
        wait_for(in_state(api, entry["id"], succeeded, "delivered"))
    finally:
        scheduler.notifier.stop()
        scheduler.database.dispose()
    assert len(receiver.requests) == 2


# --- settings ----------------------------------------------------------------------------


def test_callback_settings_from_the_environment(tmp_path):
    home = {"SCOS_HOME": str(tmp_path)}
    default = Settings.from_env(home)
    assert (default.callback_auth, default.callback_verify, default.callback_retries) == (
        "token",
        True,
        10,
    )
    assert default.secret_key_file == tmp_path / "secret.key"
    assert not default.callback_oauth
    bundle = tmp_path / "ca.pem"
    bundle.write_text("")
    chosen = Settings.from_env(
        home
        | {
            "SCOS_CALLBACK_AUTH": "OAuth",
            "SCOS_OAUTH_TOKEN_URL": "https://auth.example/token",
            "SCOS_OAUTH_CLIENT_ID": "sensor",
            "SCOS_OAUTH_CLIENT_SECRET": "hunter2",
            "SCOS_CALLBACK_VERIFY": str(bundle),
            "SCOS_CALLBACK_RETRIES": "3",
        }
    )
    assert chosen.callback_oauth and chosen.oauth_configured
    assert (chosen.callback_verify, chosen.callback_retries) == (bundle, 3)
    assert chosen.oauth_client_secret == "hunter2" and "hunter2" not in repr(chosen)
    assert Settings.from_env(home | {"SCOS_CALLBACK_VERIFY": "False"}).callback_verify is False
    assert default.callback_hosts == HostList()
    listed = Settings.from_env(home | {"SCOS_CALLBACK_HOSTS": "Receiver.Example., 10.1.0.0/16"})
    assert listed.callback_hosts.lists("receiver.example")
    assert listed.callback_hosts.lists("10.1.2.3") and not listed.callback_hosts.lists("10.2.0.1")


@pytest.mark.parametrize(
    ("environment", "variable"),
    [
        ({"SCOS_CALLBACK_AUTH": "basic"}, "SCOS_CALLBACK_AUTH"),
        ({"SCOS_CALLBACK_AUTH": "oauth"}, "SCOS_OAUTH_TOKEN_URL"),
        (
            {"SCOS_OAUTH_TOKEN_URL": "https://a/t", "SCOS_OAUTH_CLIENT_ID": "x"},
            "SCOS_OAUTH_CLIENT_SECRET",
        ),
        (
            {
                "SCOS_OAUTH_TOKEN_URL": "auth.example/token",
                "SCOS_OAUTH_CLIENT_ID": "x",
                "SCOS_OAUTH_CLIENT_SECRET": "y",
            },
            "SCOS_OAUTH_TOKEN_URL",
        ),
        ({"SCOS_CALLBACK_VERIFY": "/no/such/bundle.pem"}, "SCOS_CALLBACK_VERIFY"),
        ({"SCOS_CALLBACK_RETRIES": "many"}, "SCOS_CALLBACK_RETRIES"),
        ({"SCOS_CALLBACK_RETRIES": "0"}, "SCOS_CALLBACK_RETRIES"),
        ({"SCOS_CALLBACK_HOSTS": "https://receiver.example"}, "SCOS_CALLBACK_HOSTS"),
    ],
)
def test_bad_callback_settings_name_the_variable(tmp_path, environment, variable):
    with pytest.raises(SettingsError, match=f"^{variable}:"):
        Settings.from_env({"SCOS_HOME": str(tmp_path)} | environment)
