"""One settings surface: ``SCOS_*`` variables from the environment and one settings
file (the format of systemd's EnvironmentFile and compose's env_file), checked at
start-up with errors that name the setting; ``gr-scos config`` and ``db``."""

import dataclasses
import ipaddress
import os
import subprocess
from pathlib import Path

import pytest

from grscos import settings as settings_module
from grscos.settings import VARIABLES, HostList, Settings, SettingsError, example_file

REPO = Path(__file__).resolve().parents[1]
GR_SCOS = REPO / ".venv" / "bin" / "gr-scos"
EXAMPLE = REPO / "deploy" / "gr-scos.conf.example"


def gr_scos(*arguments: str, **environment: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [GR_SCOS, *arguments],
        env=os.environ | environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_example_file_is_current_and_documents_every_setting():
    assert EXAMPLE.read_text() == example_file(), "regenerate: gr-scos config example"
    for name in VARIABLES:
        assert f"#{name}=" in EXAMPLE.read_text(), name


def test_every_default_in_the_example_is_a_valid_value(tmp_path):
    """Uncommented as it stands, the example file loads, and gives the defaults."""
    lines = [line[1:] for line in example_file().splitlines() if line.startswith("#SCOS_")]
    uncommented = tmp_path / "all.conf"
    uncommented.write_text("\n".join(line for line in lines if not line.endswith("=")) + "\n")
    loaded = Settings.load({}, uncommented)
    assert loaded.source == uncommented
    assert dataclasses.replace(loaded, source=None) == Settings.from_env({})


def test_the_environment_overrides_the_file_and_quotes_and_comments_are_read(tmp_path):
    file = tmp_path / "gr-scos.conf"
    file.write_text(
        "# a comment\n\n"
        f"SCOS_HOME={tmp_path / 'home'}\n"
        'SCOS_MAX_DISK_USAGE="70"\n'
        "SCOS_LOG_LEVEL='debug'\n"
        "SCOS_CALLBACK_RETRIES = 3\n"
    )
    loaded = Settings.load({"SCOS_MAX_DISK_USAGE": "60"}, file)
    assert loaded.home == tmp_path / "home"
    assert loaded.max_disk_usage == 60.0
    assert loaded.log_level == "DEBUG"
    assert loaded.callback_retries == 3
    assert Settings.load({settings_module.SETTINGS_FILE_ENV: str(file)}).max_disk_usage == 70.0


def test_the_default_file_is_read_when_it_exists_unless_disabled(tmp_path, monkeypatch):
    default = tmp_path / "etc.conf"
    default.write_text("SCOS_MAX_DISK_USAGE=42\n")
    monkeypatch.setattr(settings_module, "DEFAULT_SETTINGS_FILE", default)
    assert Settings.load({}).max_disk_usage == 42.0
    assert Settings.load({settings_module.SETTINGS_FILE_ENV: ""}).max_disk_usage == 85.0
    monkeypatch.setattr(settings_module, "DEFAULT_SETTINGS_FILE", tmp_path / "absent.conf")
    assert Settings.load({}).source is None


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("SCOS_MAX_DISK=5\n", r":1: SCOS_MAX_DISK is not a setting"),
        ("# ok\nexport SCOS_HOME=/x\n", r":2: export SCOS_HOME is not a setting"),
        ("SCOS_HOME\n", r":1: expected NAME=value, got 'SCOS_HOME'"),
        ("=5\n", r":1: expected NAME=value"),
        ("SCOS_MAX_DISK_USAGE=101\n", r"^SCOS_MAX_DISK_USAGE: must be above 0 and at most 100"),
    ],
)
def test_a_bad_settings_file_is_refused_naming_the_line(tmp_path, text, error):
    file = tmp_path / "bad.conf"
    file.write_text(text)
    with pytest.raises(SettingsError, match=error):
        Settings.load({}, file)


def test_an_unreadable_settings_file_is_refused(tmp_path):
    with pytest.raises(SettingsError, match=r"settings file .*absent.conf: cannot be read"):
        Settings.load({}, tmp_path / "absent.conf")


@pytest.mark.parametrize(
    ("name", "value", "error"),
    [
        ("SCOS_SIGAN", "hackrf", r"must be sim, replay:<file>, uhd:<args> or osmosdr:<args>"),
        ("SCOS_CONFIG", "/nonexistent", r"no such directory /nonexistent"),
        ("SCOS_SENSOR_FILE", "/nonexistent.yaml", r"no such file /nonexistent.yaml"),
        ("SCOS_ACTIONS_FILE", "/nonexistent.yaml", r"no such file"),
        ("SCOS_MAX_CONSECUTIVE_FAILURES", "-1", r"must be a whole number of at least 0"),
        ("SCOS_MAX_CONSECUTIVE_FAILURES", "many", r"must be a whole number of at least 0"),
        ("SCOS_CALLBACK_RETRIES", "0", r"must be a whole number of at least 1, got '0'"),
        ("SCOS_AUTH", "basic", r"must be one of token, jwt, got 'basic'"),
        ("SCOS_LOG_LEVEL", "verbose", r"must be one of DEBUG, INFO, WARNING, ERROR"),
        ("SCOS_LOG_FORMAT", "xml", r"must be one of text, json"),
        ("SCOS_API_BIND", "8000", r"must be address:port"),
        ("SCOS_API_BIND", "0.0.0.0:99999", r"must be address:port"),
        ("SCOS_API_WORKERS", "0", r"must be a whole number of at least 1"),
        ("SCOS_DATABASE_URL", "mysql://x", r"must be a sqlite:/// or postgresql\+psycopg://"),
        ("SCOS_MANAGER_URL", "manager", r"must be an absolute http"),
        (
            "SCOS_CALLBACK_HOSTS",
            "ok.example https://receiver.example",
            r"'https://receiver.example' is not a host name, IP address or CIDR network",
        ),
        ("SCOS_CALLBACK_HOSTS", "receiver.example:8443", r"'receiver.example:8443' is not a host"),
        ("SCOS_CALLBACK_HOSTS", "10.0.0.1/8", r"'10.0.0.1/8' is not a CIDR network: .*host bits"),
        ("SCOS_CALLBACK_HOSTS", "10.0.0.0/33", r"'10.0.0.0/33' is not a CIDR network"),
        ("SCOS_CALLBACK_HOSTS", "10.0.0", r"'10.0.0' is not a host name"),
        ("SCOS_CALLBACK_HOSTS", "bad_-.example", r"'bad_-.example' is not a host name"),
        ("SCOS_CALLBACK_HOSTS", "*", r"'\*' would trust every host"),
    ],
)
def test_every_bad_value_is_refused_naming_the_setting(name, value, error):
    with pytest.raises(SettingsError, match=rf"^{name}: {error}"):
        Settings.from_env({name: value})


def test_callback_hosts_are_names_domains_addresses_and_networks(tmp_path):
    file = tmp_path / "gr-scos.conf"
    file.write_text(
        'SCOS_CALLBACK_HOSTS="Receiver.Example., *.fleet.example  10.0.0.0/8,[fd00::1] 192.0.2.7"\n'
    )
    hosts = Settings.load({}, file).callback_hosts
    assert hosts == HostList(
        names=frozenset({"receiver.example"}),
        domains=frozenset({"fleet.example"}),
        networks=(
            ipaddress.ip_network("10.0.0.0/8"),
            ipaddress.ip_network("fd00::1/128"),
            ipaddress.ip_network("192.0.2.7/32"),
        ),
    )
    assert [hosts.lists(host) for host in ("RECEIVER.example", "a.b.fleet.example")] == [True] * 2
    assert [hosts.lists(host) for host in ("fleet.example", "receiver.example.org")] == [False] * 2
    assert [hosts.lists(host) for host in ("10.200.0.1", "[fd00::1]", "192.0.2.7")] == [True] * 3
    assert [hosts.lists(host) for host in ("11.0.0.1", "fd00::2", "192.0.2.8")] == [False] * 3
    assert Settings.from_env({}).callback_hosts == HostList()


def test_files_of_their_own_replace_those_of_the_configuration_directory(tmp_path):
    actions = tmp_path / "my-actions.yaml"
    actions.write_text(
        "actions:\n  - {name: only_iq, flowgraph: acquire_iq, summary: mine, max_run_time: 5}\n"
    )
    loaded = Settings.from_env({"SCOS_ACTIONS_FILE": str(actions)})
    assert loaded.config().file("actions.yaml") == actions
    assert loaded.config().file("sensor.yaml") == Settings.from_env({}).config().file("sensor.yaml")


def test_config_check_reports_what_the_services_will_use(tmp_path):
    file = tmp_path / "gr-scos.conf"
    file.write_text(f"SCOS_HOME={tmp_path / 'home'}\nSCOS_SIGAN=sim\n")
    checked = gr_scos("--settings", str(file), "config", "check")
    assert checked.returncode == 0, checked.stderr
    assert f"settings file: {file}" in checked.stdout
    assert f"state (SCOS_HOME): {tmp_path / 'home'}" in checked.stdout
    assert "signal analyzer (SCOS_SIGAN): sim" in checked.stdout
    assert checked.stdout.rstrip().endswith("configuration OK")


def test_config_check_fails_naming_the_bad_setting(tmp_path):
    file = tmp_path / "gr-scos.conf"
    file.write_text("SCOS_MAX_DISK_USAGE=lots\n")
    checked = gr_scos("config", "check", "--no-device", SCOS_SETTINGS_FILE=str(file))
    assert checked.returncode == 2
    assert checked.stderr.strip() == (
        "gr-scos config: error: SCOS_MAX_DISK_USAGE: must be a number of percent"
    )
    missing = gr_scos("config", "check", SCOS_SIGAN="replay:/nonexistent.sigmf-meta")
    assert missing.returncode == 2
    assert "nonexistent.sigmf-meta" in missing.stderr


def test_config_example_prints_the_example_file():
    printed = gr_scos("config", "example")
    assert printed.returncode == 0
    assert printed.stdout == EXAMPLE.read_text()


def test_db_upgrade_creates_then_reports_the_latest_revision(tmp_path):
    first = gr_scos("db", "upgrade", SCOS_HOME=str(tmp_path))
    assert first.returncode == 0, first.stderr
    assert "upgraded from empty to " in first.stdout
    latest = first.stdout.split()[-1]
    again = gr_scos("db", "upgrade", SCOS_HOME=str(tmp_path))
    assert again.stdout.strip().endswith(f"is at the latest revision {latest}")
    bad = gr_scos("db", "upgrade", SCOS_DATABASE_URL="postgresql+psycopg://x@127.0.0.1:1/none")
    assert bad.returncode == 2
    assert bad.stderr.startswith("gr-scos db: error: ")
