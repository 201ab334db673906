"""Manager association (Table 1) against a real HTTP server standing in for the manager:
sent when the scheduler starts, retried while the manager is down or refuses, and
never again once accepted."""

import time
from pathlib import Path

import pytest

from grscos.scheduler.association import Associator
from grscos.scheduler.backoff import Backoff
from grscos.scheduler.scheduler import Scheduler
from grscos.settings import Settings, SettingsError
from tests.api.callback_receiver import Receiver
from tests.waiting import wait_for

BACKOFF = 0.1  # seconds, the associator's backoff in these tests


def settings_for(tmp_path: Path, manager: str, **extra) -> Settings:
    return Settings(
        home=tmp_path,
        database_url=f"sqlite:///{tmp_path / 'scos.sqlite3'}",
        data_dir=tmp_path / "data",
        manager_url=manager,
        **extra,
    )


@pytest.fixture
def manager():
    """The manager: first down (its port refuses connections)."""
    server = Receiver()
    server.start()
    server.stop()
    yield server
    server.stop()


@pytest.fixture
def fast_backoff(monkeypatch):
    monkeypatch.setattr(Associator, "backoff", Backoff(BACKOFF, BACKOFF))


@pytest.mark.usefixtures("fast_backoff")
def test_the_scheduler_associates_at_start_up_retrying_until_accepted(tmp_path, manager):
    settings = settings_for(tmp_path, manager.url("/api/v1/"), manager_token="manager-secret")
    scheduler = Scheduler(settings, device="sim")
    scheduler.start()
    try:
        associator = scheduler.associator
        wait_for(lambda: associator.attempts >= 2, 5, "two attempts while the manager is down")
        assert associator.state == "pending"
        assert "refused" in associator.last_error.lower(), associator.last_error
        manager.status = 503  # up, but not ready
        manager.start()
        # The manager records a request before it answers: wait for the answer's effect.
        wait_for(
            lambda: "HTTP 503" in associator.last_error,
            5,
            lambda: f"the 503 answer recorded; last_error: {associator.last_error}",
        )
        assert manager.requests
        assert associator.state == "pending"
        manager.status = 201
        wait_for(lambda: associator.state == "associated", 5, "the association accepted")
        accepted = len(manager.requests)
        time.sleep(5 * BACKOFF)
        assert len(manager.requests) == accepted, "sent again after it was accepted"
    finally:
        scheduler.close()
    request = manager.requests[-1]
    assert request.path == "/api/v1/sensors"
    assert request.headers["Authorization"] == "Token manager-secret"
    assert request.headers["Content-Type"] == "application/json"
    assert request.json == {
        "sensor_id": "gr-scos-sim",
        "name": "gr-scos-sim",
        "sensor_type": "sensor",
        "protocol": "HTTP",
        "message_type": "add_sensor",
    }


@pytest.mark.usefixtures("fast_backoff")
def test_a_manager_that_already_knows_the_sensor_counts_as_accepted(tmp_path, manager):
    manager.status = 409
    manager.start()
    associator = Associator(settings_for(tmp_path, manager.url("")), "sensor-1", "Sensor one")
    associator.start()
    try:
        wait_for(lambda: associator.state == "associated", 5, "associated")
    finally:
        associator.stop()
    (request,) = manager.requests
    assert "Authorization" not in request.headers
    assert request.json["name"] == "Sensor one"


def test_without_a_manager_url_nothing_is_sent(tmp_path):
    settings = Settings(
        home=tmp_path,
        database_url=f"sqlite:///{tmp_path / 'scos.sqlite3'}",
        data_dir=tmp_path / "data",
    )
    assert Scheduler(settings, device="sim").associator is None


@pytest.mark.parametrize("url", ["manager.example", "ftp://manager.example/", "https://"])
def test_a_bad_manager_url_is_refused_naming_the_variable(url):
    with pytest.raises(SettingsError, match=r"^SCOS_MANAGER_URL: must be an absolute http"):
        Settings.from_env({"SCOS_MANAGER_URL": url})
