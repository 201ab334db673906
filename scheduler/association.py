"""Manager association (Table 1): tell the manager at ``SCOS_MANAGER_URL`` that this
sensor exists, at start-up, until it accepts.

The scheduler starts an :class:`Associator` thread when a manager URL is set. It
POSTs the sensor association request to ``<SCOS_MANAGER_URL>/sensors`` (the
manager's endpoint of Table 29, 8.2.2.1) and reads the answer as Table 2 over
HTTP: a 2xx status is accepted, and so is 409 (the manager knows the sensor
already). Anything else (an error status, a refused connection, a timeout, a TLS
failure) is logged with the manager's ``detail`` and retried after a backoff of
1 s, 2 s, 4 s, ... at most 5 min, for as long as the sensor runs: a manager that is
down at boot, or refuses the sensor until its owner registers it, is tried again.

Credentials: ``Authorization: Bearer`` from the OAuth2 client-credentials grant
when ``SCOS_OAUTH_*`` is configured, else ``Authorization: Token
<SCOS_MANAGER_TOKEN>`` when set, else none. The manager's URL is the operator's
setting: trusted, its address is not checked (``outbound.py``). TLS certificates are
verified as ``SCOS_CALLBACK_VERIFY`` says; redirects are not followed.
"""

import logging
import threading

import requests

from ..settings import Settings
from .backoff import Backoff
from .callbacks import DeliveryError, OAuthClient, describe_answer, describe_error, tls_verify
from .outbound import http_session

logger = logging.getLogger(__name__)

TIMEOUT_SECONDS = 10.0
ALREADY_KNOWN = 409


def association_request(sensor_id: str, name: str) -> dict:
    """The sensor association request (Table 1). Over HTTP the manager is the URL's
    and the operation the POST's, but message_type is sent anyway for managers that
    route on it."""
    return {
        "sensor_id": sensor_id,
        "name": name,
        "sensor_type": "sensor",
        "protocol": "HTTP",
        "message_type": "add_sensor",
    }


class Associator:
    """Sends the association request from a thread until the manager accepts it.
    ``state`` is ``pending`` or ``associated``; ``attempts`` and ``last_error``
    say how it went; ``backoff`` spaces the attempts."""

    backoff = Backoff(1.0, 300.0)

    def __init__(self, settings: Settings, sensor_id: str, name: str | None = None):
        self.url = settings.manager_url.rstrip("/") + "/sensors"
        self.request = association_request(sensor_id, name or sensor_id)
        self.token = settings.manager_token
        self.verify = tls_verify(settings)
        self.http = http_session()
        self.oauth = (
            OAuthClient(settings, self.http, TIMEOUT_SECONDS) if settings.oauth_configured else None
        )
        self.state = "pending"
        self.attempts = 0
        self.last_error = ""
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="association", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(TIMEOUT_SECONDS + 1)
        self.http.close()

    def _run(self) -> None:
        while not self._stopping.is_set():
            self.attempts += 1
            try:
                self._associate()
            except DeliveryError as error:
                self.last_error = str(error)
                wait = self.backoff.delay(self.attempts)
                logger.warning(
                    "manager association with %s failed (attempt %d): %s; next in %g s",
                    self.url,
                    self.attempts,
                    error,
                    wait,
                )
                self._stopping.wait(wait)
                continue
            self.state = "associated"
            logger.info("associated with the manager at %s", self.url)
            return

    def _associate(self) -> None:
        headers = {"Accept": "application/json"}
        if self.oauth is not None:
            headers["Authorization"] = f"Bearer {self.oauth.token()}"
        elif self.token:
            headers["Authorization"] = f"Token {self.token}"
        try:
            response = self.http.post(
                self.url,
                json=self.request,
                headers=headers,
                timeout=TIMEOUT_SECONDS,
                verify=self.verify,
                allow_redirects=False,
            )
        except requests.RequestException as error:
            raise DeliveryError(describe_error(error)) from error
        if 200 <= response.status_code < 300 or response.status_code == ALREADY_KNOWN:
            return
        if response.status_code == 401 and self.oauth is not None:
            self.oauth.forget()  # the next attempt asks for a fresh access token
        raise DeliveryError(describe_answer(response))
