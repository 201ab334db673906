"""Acquisition notifications (Table 13), POSTed to a schedule entry's callback_url
when one of its tasks finishes.

The scheduler queues a task's notification (:meth:`Notifier.queue`) in the
transaction that records its result, so the two exist together or not at all; the
JSON is fixed then (it holds the SigMF metadata of the recordings, Table 25, not
their data). A thread of the scheduler process, woken when that transaction
commits, delivers it; the scheduler never waits for a callback. A 2xx answer is
``delivered``; anything else (an error status, a refused connection, a timeout, a
TLS failure) counts an attempt and the next one is due after a backoff (1 s, 2 s,
4 s, ... at most 5 min), until ``SCOS_CALLBACK_RETRIES`` attempts have failed:
then it is ``failed`` and ``last_error`` says why. A destination the sensor must
not send to (``outbound.py``: a host that connects to a loopback, private, ...
address without being listed in ``SCOS_CALLBACK_HOSTS``) fails it at once.
Notifications live in the database, so those still ``pending`` are retried after a
restart; the thread sleeps until the earliest next attempt.

The database may be unreachable for a while (a restart, a failover): the thread
records the outage (``storage/outage.py``, shown by ``/status``), waits (1 s, 2 s,
... at most 5 s: ``DATABASE_RETRY``) and tries again. An attempt made just before
the database went away is kept in memory and recorded once it is back, so a
delivered notification is not sent again (unless the process ends before: delivery
is at least once).

Credentials (``outbound.py`` says where each may go): ``Authorization: Token
<token>``, the token that set the entry's callback_url, kept encrypted
(``storage/credentials.py``) and sent only to that URL, over https:// or to a listed
host; or, with ``SCOS_CALLBACK_AUTH=oauth`` or ``SCOS_AUTH=jwt``, ``Authorization:
Bearer <access token>`` from the OAuth2 client-credentials grant, cached until it
expires, to listed hosts only. Elsewhere the notification goes without credentials.
TLS certificates are verified as ``SCOS_CALLBACK_VERIFY`` says. Redirects are not
followed (a credential goes to the URL it was given for, and nowhere else).
"""

import datetime
import json
import logging
import threading
import time
from dataclasses import dataclass

import requests
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from ..settings import Settings
from ..storage import credentials, metrics
from ..storage.database import Database
from ..storage.models import (
    Notification,
    ScheduleEntry,
    TaskResult,
    format_duration,
    format_utc,
    utc_now,
)
from ..storage.outage import OutageRecord, describe, unreachable
from .backoff import DATABASE_RETRY, Backoff
from .outbound import DestinationError, OutboundPolicy, http_session, parse_url

logger = logging.getLogger(__name__)

MESSAGE_TYPE = "acquisition_notification"
# Where the sensor's API serves a task's SigMF archive (webapi/tasks.py), relative to
# the sensor's address: the locator Table 13 asks for when the data is not included.
ARCHIVE_PATH = "/api/v1/schedule/{schedule_id}/tasks/{task_id}/archive"
ERROR_LENGTH = 1000  # of last_error
BODY_EXCERPT = 200  # characters of an error answer's body kept in last_error
MAX_SLEEP_SECONDS = 60.0  # the thread looks at the database at least this often


def notification_payload(result: TaskResult, sensor: str = "") -> dict:
    """Table 13 for a finished task: its times, status and detail, and each
    recording's SigMF metadata (Table 25; the data stays on the sensor, at
    ``archive_id``)."""
    entry = result.schedule_entry
    finished = result.finished or utc_now()
    payload = {
        "message_type": MESSAGE_TYPE,
        "task_id": result.task_id,
        "schedule_id": entry.id,
        "started": format_utc(result.started),
        "finished": format_utc(finished),
        "duration": format_duration(finished - result.started),
        "status": result.status,
        "detail": result.detail or "",
        "recordings": [
            {"metadata": acquisition.sigmf_metadata} for acquisition in result.acquisitions
        ],
    }
    if sensor:
        payload["sensor_id"] = sensor
    if result.acquisitions:
        payload["archive_id"] = ARCHIVE_PATH.format(schedule_id=entry.id, task_id=result.task_id)
    return payload


class DeliveryError(Exception):
    """An attempt that failed; ``final`` when retrying cannot help."""

    def __init__(self, message: str, final: bool = False):
        super().__init__(message)
        self.final = final


def describe_error(error: Exception) -> str:
    return f"{type(error).__name__}: {error}"


def describe_answer(response: requests.Response) -> str:
    body = response.text[:BODY_EXCERPT].strip()
    reason = f"HTTP {response.status_code} {response.reason or ''}".rstrip()
    return f"{reason}: {body}" if body else reason


class OAuthClient:
    """Access tokens of the OAuth2 client-credentials grant (RFC 6749, 4.4): the
    client authenticates with HTTP Basic; a token is reused until shortly before it
    expires (or until a callback refuses it)."""

    default_lifetime = 3600.0  # seconds, when the server gives no expires_in

    def __init__(self, settings: Settings, http: requests.Session, timeout: float):
        self.url = settings.oauth_token_url
        self.client = (settings.oauth_client_id, settings.oauth_client_secret)
        self.verify = tls_verify(settings)
        self.http = http
        self.timeout = timeout
        self._token: str | None = None
        self._expires = 0.0
        self._lock = threading.Lock()

    def token(self) -> str:
        with self._lock:
            if self._token is not None and time.monotonic() < self._expires:
                return self._token
            try:
                response = self.http.post(
                    self.url,
                    data={"grant_type": "client_credentials"},
                    auth=self.client,
                    headers={"Accept": "application/json"},
                    timeout=self.timeout,
                    verify=self.verify,
                    allow_redirects=False,
                )
            except requests.RequestException as error:
                raise DeliveryError(f"OAuth2 token: {describe_error(error)}") from error
            if not 200 <= response.status_code < 300:
                raise DeliveryError(f"OAuth2 token: {describe_answer(response)}")
            try:
                body = response.json()
                token = body["access_token"]
                lifetime = float(body.get("expires_in") or self.default_lifetime)
            except (ValueError, KeyError, TypeError, AttributeError) as error:
                raise DeliveryError(
                    f"OAuth2 token: no access_token in the answer ({describe_error(error)})"
                ) from error
            if not isinstance(token, str) or not token:
                raise DeliveryError("OAuth2 token: the access_token is not a string")
            self._token = token
            self._expires = time.monotonic() + lifetime - min(30.0, lifetime / 10)
            return token

    def forget(self) -> None:
        with self._lock:
            self._token = None


def tls_verify(settings: Settings) -> bool | str:
    verify = settings.callback_verify
    return verify if isinstance(verify, bool) else str(verify)


@dataclass(frozen=True)
class _Due:
    id: int
    url: str
    payload: dict
    entry_url: str | None
    credential: str | None


@dataclass(frozen=True)
class _Attempt:
    """A delivery attempt, until it is recorded: when, and its error if it failed."""

    notification_id: int
    at: datetime.datetime
    error: DeliveryError | None


class Notifier:
    """Delivers the pending notifications of ``database`` from a thread
    (:meth:`start`, :meth:`stop`). ``backoff`` shapes the retries of a notification
    (attempt n failed: the next is due ``backoff.delay(n)`` later);
    ``outage_backoff`` the waits while the database is unreachable."""

    backoff = Backoff(1.0, 300.0)
    outage_backoff = DATABASE_RETRY
    timeout = 10.0  # seconds, of each HTTP request
    batch = 20  # notifications read per query

    def __init__(self, database: Database, settings: Settings, sensor: str = ""):
        self.database = database
        self.settings = settings
        self.sensor_id = sensor
        self.verify = tls_verify(settings)
        self.policy = OutboundPolicy(settings)
        self.http = http_session(self.policy)
        self.oauth = (
            # The token endpoint is the operator's setting: trusted, not checked.
            OAuthClient(settings, http_session(), self.timeout)
            if settings.callback_oauth and settings.oauth_configured
            else None
        )
        self.outages = OutageRecord(settings.home)
        self._unsettled: list[_Attempt] = []  # made, not yet recorded (thread only)
        self._wakeup = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._on_commit = lambda _session: self._wakeup.set()

    # --- queueing (any thread) ---------------------------------------------------------

    def queue(self, db: Session, result: TaskResult) -> Notification | None:
        """Add the notification of the finished ``result`` in ``db``'s transaction,
        if its entry has a callback_url; the thread wakes when that commits."""
        entry = result.schedule_entry
        if not entry.callback_url:
            return None
        notification = Notification(
            url=entry.callback_url,
            payload=notification_payload(result, self.sensor_id),
            state="pending",
            attempts=0,
            next_attempt=utc_now(),
        )
        result.notification = notification
        if not event.contains(db, "after_commit", self._on_commit):
            event.listen(db, "after_commit", self._on_commit)
        return notification

    def wake(self) -> None:
        self._wakeup.set()

    # --- the thread --------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        if self.settings.callback_oauth and self.oauth is None:
            logger.warning(
                "SCOS_AUTH is jwt and no OAuth2 client is configured (SCOS_OAUTH_TOKEN_URL, "
                "SCOS_OAUTH_CLIENT_ID, SCOS_OAUTH_CLIENT_SECRET): acquisition notifications "
                "are sent without credentials"
            )
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="notifier", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop the thread; a delivery under way may take up to ``timeout`` (default:
        the HTTP timeout) to end, after which the daemon thread is left to it."""
        thread, self._thread = self._thread, None
        self._stopping.set()
        self._wakeup.set()
        if thread is not None:
            thread.join(self.timeout + 1 if timeout is None else timeout)
            if thread.is_alive():
                logger.warning("a notification delivery was still under way at shutdown")

    def _run(self) -> None:
        outage_failures = 0  # in a row
        while not self._stopping.is_set():
            self._wakeup.clear()
            try:
                wait = self.deliver_due()
            except Exception as error:
                if not unreachable(error):
                    logger.exception("acquisition notifications: cannot read or update them")
                    wait = 5.0
                else:
                    outage_failures += 1
                    self.outages.failed(error)
                    wait = self.outage_backoff.delay(outage_failures)
                    if outage_failures == 1:
                        logger.warning(
                            "acquisition notifications wait for the database (%s); "
                            "trying again every %g s at most",
                            describe(error),
                            self.outage_backoff.cap,
                        )
            else:
                if outage_failures:
                    outage_failures = 0
                    self.outages.recovered()
            self._wakeup.wait(wait)
        if self._unsettled:
            logger.warning(
                "%d notification attempt(s) could not be recorded (the database is "
                "unreachable): they will be made again",
                len(self._unsettled),
            )

    def deliver_due(self) -> float:
        """Record the attempts kept from an outage, then try every notification that
        is due; the seconds until the next one is."""
        while not self._stopping.is_set():
            self._settle_kept()
            with self.database.sessions() as db:
                due = [
                    _Due(*row)
                    for row in db.execute(
                        select(
                            Notification.id,
                            Notification.url,
                            Notification.payload,
                            ScheduleEntry.callback_url,
                            ScheduleEntry.callback_credential,
                        )
                        .join(TaskResult, Notification.task_result_id == TaskResult.id)
                        .join(ScheduleEntry, TaskResult.schedule_entry_id == ScheduleEntry.id)
                        .where(
                            Notification.state == "pending",
                            Notification.next_attempt <= utc_now(),
                        )
                        .order_by(Notification.next_attempt, Notification.id)
                        .limit(self.batch)
                    )
                ]
                if not due:
                    following = db.scalar(
                        select(func.min(Notification.next_attempt)).where(
                            Notification.state == "pending"
                        )
                    )
                    if following is None:
                        return MAX_SLEEP_SECONDS
                    seconds = (following - utc_now()).total_seconds()
                    return min(max(seconds, 0.0), MAX_SLEEP_SECONDS)
            for notification in due:
                if self._stopping.is_set():
                    break
                self._deliver(notification)
        return 0.0

    def _deliver(self, notification: _Due) -> None:
        error = None
        try:
            self._post(notification)
        except DeliveryError as problem:
            error = problem
        except Exception as problem:  # a bug must not retry the same one forever
            logger.exception("notification %d", notification.id)
            error = DeliveryError(describe_error(problem))
        self._unsettled.append(_Attempt(notification.id, utc_now(), error))
        self._settle_kept()

    def _authorization(self, notification: _Due) -> str | None:
        """The Authorization header the notification may carry, if any."""
        if self.settings.callback_oauth:
            if self.oauth is None:
                return None
            if not self.policy.trusts(notification.url):
                logger.info(
                    "notification %d goes without the sensor's OAuth2 token: its host is "
                    "not listed in SCOS_CALLBACK_HOSTS",
                    notification.id,
                )
                return None
            return f"Bearer {self.oauth.token()}"
        # The credential was kept for the entry's current callback_url only.
        if not notification.credential or notification.entry_url != notification.url:
            return None
        if not self.policy.may_send_token(notification.url):
            logger.info(
                "notification %d goes without its token: plain http:// to a host not "
                "listed in SCOS_CALLBACK_HOSTS",
                notification.id,
            )
            return None
        try:
            token = credentials.decrypt(self.settings.secret_key_file, notification.credential)
        except credentials.CredentialError as problem:
            raise DeliveryError(str(problem), final=True) from problem
        return f"Token {token}"

    def _post(self, notification: _Due) -> None:
        headers = {"Content-Type": "application/json"}
        try:
            parse_url(notification.url)  # stored before the rules, perhaps
            authorization = self._authorization(notification)
            if authorization is not None:
                headers["Authorization"] = authorization
            response = self.http.post(
                notification.url,
                data=json.dumps(notification.payload),
                headers=headers,
                timeout=self.timeout,
                verify=self.verify,
                allow_redirects=False,
            )
        except DestinationError as refusal:  # retrying cannot help
            raise DeliveryError(f"not sent: {refusal}", final=True) from refusal
        except requests.RequestException as problem:
            raise DeliveryError(describe_error(problem)) from problem
        if not 200 <= response.status_code < 300:
            if response.status_code == 401 and self.oauth is not None:
                self.oauth.forget()  # perhaps revoked: get another next time
            raise DeliveryError(describe_answer(response))

    def _settle_kept(self) -> None:
        """Record the attempts made, oldest first; each stays kept while the database
        is unreachable."""
        while self._unsettled:
            attempt = self._unsettled[0]
            try:
                self._settle(attempt)
            except Exception as error:
                if unreachable(error):
                    raise
                # A bug: dropped, not retried forever (the notification stays pending).
                logger.exception(
                    "notification %d: its attempt cannot be recorded", attempt.notification_id
                )
            self._unsettled.pop(0)

    def _settle(self, attempt: _Attempt) -> None:
        error, now = attempt.error, attempt.at
        with self.database.session() as db:
            notification = db.get(Notification, attempt.notification_id)
            if notification is None or notification.state != "pending":
                return  # its task result was deleted meanwhile
            notification.attempts += 1
            task = notification.task_result
            fields = {"schedule_id": task.schedule_entry_id, "task_id": task.task_id}
            outcome = "error" if error else "delivered"
            metrics.count(db, metrics.NOTIFICATION_ATTEMPTS, outcome=outcome)
            if error is None:
                metrics.count(db, metrics.NOTIFICATIONS, state="delivered")
                notification.state = "delivered"
                notification.delivered = now
                notification.next_attempt = None
                logger.info(
                    "notification %d delivered to %s",
                    notification.id,
                    notification.url,
                    extra=fields,
                )
                return
            notification.last_error = str(error)[:ERROR_LENGTH]
            if error.final or notification.attempts >= self.settings.callback_retries:
                metrics.count(db, metrics.NOTIFICATIONS, state="failed")
                notification.state = "failed"
                notification.next_attempt = None
                logger.error(
                    "notification %d to %s failed after %d attempt(s): %s",
                    notification.id,
                    notification.url,
                    notification.attempts,
                    error,
                    extra=fields,
                )
                return
            delay = self.backoff.delay(notification.attempts)
            notification.next_attempt = now + datetime.timedelta(seconds=delay)
            logger.warning(
                "notification %d to %s, attempt %d: %s; next in %g s",
                notification.id,
                notification.url,
                notification.attempts,
                error,
                delay,
                extra=fields,
            )
