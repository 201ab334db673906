"""deploy/install-service.sh and the systemd units it installs.

The units are rendered into a temporary root (``--root``) for this checkout's
``.venv``, so that ``systemd-analyze verify`` finds their executables. It does not
look up ``User=`` (systemd resolves it only when a service starts), so the user
``scos`` need not exist for it. The script's real installation (the user, the
ownership of /etc/gr-scos and /var/lib/gr-scos, systemctl) runs once in a private
mount namespace, on copies of /etc and /var/lib: nothing of this machine changes.
"""

import os
import re
import shlex
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from grscos.settings import Settings

REPO = Path(__file__).resolve().parents[2]
INSTALL = REPO / "deploy" / "install-service.sh"
TEMPLATES = REPO / "deploy" / "systemd"
EXAMPLE = REPO / "deploy" / "gr-scos.conf.example"
VENV = REPO / ".venv"
TARGET = "gr-scos.target"
API = "gr-scos-api.service"
SCHEDULER = "gr-scos-scheduler.service"
UNITS = (TARGET, API, SCHEDULER)
SERVICES = (API, SCHEDULER)
UNIT_DIR = Path("etc/systemd/system")
SETTINGS_FILE = Path("etc/gr-scos/gr-scos.conf")
STATE_DIR = "/var/lib/gr-scos"
# What the script must never run when it installs under --root.
SYSTEM_COMMANDS = ("useradd", "groupadd", "usermod", "chgrp", "chown", "systemctl")


@dataclass
class Guard:
    """An environment whose PATH starts with stand-ins for the commands that change
    the system; each records its call in ``log``."""

    env: dict[str, str]
    log: Path


@pytest.fixture(scope="module")
def guard(tmp_path_factory) -> Guard:
    bin_dir = tmp_path_factory.mktemp("guard-bin")
    log = bin_dir / "calls.log"
    log.touch()
    for command in SYSTEM_COMMANDS:
        stand_in = bin_dir / command
        stand_in.write_text(f'#!/bin/sh\necho "{command} $*" >> {log}\n')
        stand_in.chmod(0o755)
    return Guard(os.environ | {"PATH": f"{bin_dir}:{os.environ['PATH']}"}, log)


def install(*arguments: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(INSTALL), *arguments],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd="/",
    )


def install_into(root: Path, guard: Guard) -> subprocess.CompletedProcess:
    """Install under root; the script must not have run any system command."""
    result = install("--root", str(root), "--prefix", str(VENV), env=guard.env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert guard.log.read_text() == ""
    return result


@pytest.fixture(scope="module")
def root(tmp_path_factory, guard) -> Path:
    """A root the units and the settings file were installed into, once."""
    root = tmp_path_factory.mktemp("root")
    install_into(root, guard)
    return root


def directives(path: Path) -> dict[str, dict[str, list[str]]]:
    """section -> key -> every value it is given, in order."""
    sections: dict[str, dict[str, list[str]]] = {}
    section = None
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        assert not line.endswith("\\"), f"{path}: continuation lines are not expected: {line}"
        if line.startswith("["):
            section = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        assert section is not None, f"{path}: {line} outside a section"
        section.setdefault(key.strip(), []).append(value.strip())
    return sections


def snapshot(root: Path) -> dict[str, tuple]:
    """Every file and directory under root: mode, owner, mtime and content."""
    state = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        content = path.read_bytes() if stat.S_ISREG(info.st_mode) else None
        state[str(path.relative_to(root))] = (
            info.st_mode,
            info.st_uid,
            info.st_gid,
            info.st_mtime_ns,
            content,
        )
    return state


def systemd_analyze() -> str:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze is missing: install Debian's systemd package")
    return analyze


def verify(*units: Path) -> tuple[int, list[str]]:
    """systemd-analyze verify's status for the units, and the lines it printed about
    them. Other units it loads (dependencies, this machine's own) are not ours to
    fix: --recursive-errors=no keeps them out of the status, and their lines are
    dropped."""
    result = subprocess.run(
        [systemd_analyze(), "verify", "--man=no", "--recursive-errors=no", *map(str, units)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    names = [unit.name for unit in units] + [str(unit.parent) for unit in units]
    lines = (result.stdout + result.stderr).splitlines()
    return result.returncode, [line for line in lines if any(name in line for name in names)]


def test_systemd_analyze_verify_passes(root):
    status, complaints = verify(*(root / UNIT_DIR / unit for unit in UNITS))
    assert complaints == []
    assert status == 0


def test_verify_catches_a_broken_unit(root, tmp_path):
    """The check above would pass vacuously if systemd-analyze ignored the files."""
    broken = tmp_path / API
    text = (root / UNIT_DIR / API).read_text()
    text = text.replace("[Service]\n", "[Service]\nNoSuchDirective=yes\n")
    broken.write_text(text.replace(str(VENV), str(tmp_path / "no-venv")))
    status, complaints = verify(broken)
    assert status != 0
    assert any("NoSuchDirective" in line for line in complaints), complaints
    assert any("not executable" in line for line in complaints), complaints


def test_templates_render_for_the_venv(root):
    for unit in SERVICES:
        assert "@PREFIX@" in (TEMPLATES / unit).read_text()
        rendered = (root / UNIT_DIR / unit).read_text()
        assert re.search(r"@[A-Z_]+@", rendered) is None
        assert f"ExecStart={VENV}/bin/" in rendered
        assert (root / UNIT_DIR / unit).stat().st_mode & 0o777 == 0o644
    assert (root / UNIT_DIR / TARGET).read_text() == (TEMPLATES / TARGET).read_text()


def test_services_run_as_scos_with_the_settings_file(root):
    for unit in SERVICES:
        sections = directives(root / UNIT_DIR / unit)
        service = sections["Service"]
        assert service["User"] == ["scos"], unit
        assert service["Group"] == ["scos"], unit
        assert service["EnvironmentFile"] == ["-/etc/gr-scos/gr-scos.conf"], unit
        environment = " ".join(service["Environment"]).split()
        assert f"SCOS_HOME={STATE_DIR}" in environment, unit
        assert f"HOME={STATE_DIR}" in environment, unit
        assert service["StateDirectory"] == ["gr-scos"], unit
        assert service["WorkingDirectory"] == [STATE_DIR], unit
        assert service["Restart"] == ["on-failure"], unit
        assert service["KillMode"] == ["mixed"], unit
        assert service["TimeoutStopSec"], unit
        for key, value in {
            "NoNewPrivileges": "yes",
            "ProtectSystem": "strict",
            "ProtectHome": "yes",
            "PrivateTmp": "yes",
        }.items():
            assert service[key] == [value], f"{unit}: {key}"
        assert sections["Unit"]["PartOf"] == [TARGET], unit
        assert sections["Install"]["WantedBy"] == [TARGET], unit
    assert directives(root / UNIT_DIR / TARGET)["Install"]["WantedBy"] == ["multi-user.target"]


def test_scheduler_keeps_the_radios_and_restarts_within_limits(root):
    unit = directives(root / UNIT_DIR / SCHEDULER)
    service = unit["Service"]
    assert service["SupplementaryGroups"] == ["plugdev"]
    for key in ("PrivateDevices", "DevicePolicy", "DeviceAllow", "ProtectClock"):
        assert key not in service, f"{key} would hide USB radios from the scheduler"
    assert "AF_NETLINK" in service["RestrictAddressFamilies"][0].split()
    assert service["TimeoutStopSec"] == ["30s"]
    assert unit["Unit"]["StartLimitBurst"] and unit["Unit"]["StartLimitIntervalSec"]
    assert directives(root / UNIT_DIR / API)["Service"]["PrivateDevices"] == ["yes"]


def test_sdr_group_is_the_one_the_udev_rules_grant(root):
    """Debian's RTL-SDR and HackRF rules give their devices to a group, which the
    scheduler joins; USRPs are world-accessible (uhd-host)."""
    rules = [
        path
        for directory in (Path("/lib/udev/rules.d"), Path("/usr/lib/udev/rules.d"))
        for path in directory.glob("*.rules")
        if "rtlsdr" in path.name or "hackrf" in path.name
    ]
    assert rules, "no RTL-SDR or HackRF udev rules: deploy/bootstrap.sh installs gr-osmosdr"
    groups = {
        field.split("=", 1)[1].strip('"')
        for path in rules
        for line in path.read_text().splitlines()
        if not line.lstrip().startswith("#")
        for field in line.replace(" ", "").split(",")
        if field.startswith("GROUP=")
    }
    assert [*groups] == directives(root / UNIT_DIR / SCHEDULER)["Service"]["SupplementaryGroups"]
    uhd = Path("/usr/lib/udev/rules.d/60-uhd-host.rules").read_text().splitlines()
    assert not any("GROUP=" in line for line in uhd if not line.startswith("#"))


def test_exec_start_runs_from_the_venv(root, tmp_path):
    commands = {}
    for unit in SERVICES:
        (exec_start,) = directives(root / UNIT_DIR / unit)["Service"]["ExecStart"]
        argv = shlex.split(exec_start)
        executable = Path(argv[0])
        assert executable.parent == VENV / "bin", unit
        assert os.access(executable, os.X_OK), unit
        commands[unit] = argv
    env = os.environ | {"SCOS_HOME": str(tmp_path / "home")}
    # gunicorn loads the configuration and the application, then exits.
    api = subprocess.run(
        [*commands[API], "--check-config"], capture_output=True, text=True, timeout=120, env=env
    )
    assert api.returncode == 0, api.stdout + api.stderr
    scheduler = subprocess.run(
        [*commands[SCHEDULER], "--help"], capture_output=True, text=True, timeout=120, env=env
    )
    assert scheduler.returncode == 0, scheduler.stderr
    assert "--sigan" in scheduler.stdout


def test_settings_file_is_the_example_with_the_state_directory(root):
    settings = root / SETTINGS_FILE
    text = settings.read_text()
    assert text.startswith(EXAMPLE.read_text())
    assert text.rstrip().endswith(f"SCOS_HOME={STATE_DIR}")
    assert settings.stat().st_mode & 0o777 == 0o640
    assert settings.parent.stat().st_mode & 0o777 == 0o750
    # gr-scos reads it as the services do: the state is the services'.
    assert Settings.load(environ={}, file=settings).home == Path(STATE_DIR)


def test_second_run_changes_nothing(root, guard):
    before = snapshot(root)
    result = install_into(root, guard)
    assert snapshot(root) == before
    assert "installed /" not in result.stdout
    assert "keeping" in result.stdout


def test_operator_settings_file_is_never_replaced(tmp_path, guard):
    settings = tmp_path / SETTINGS_FILE
    settings.parent.mkdir(parents=True)
    settings.write_text("SCOS_SIGAN=uhd:serial=31F0A2C\n")
    settings.chmod(0o600)
    for _ in range(2):
        install_into(tmp_path, guard)
        assert settings.read_text() == "SCOS_SIGAN=uhd:serial=31F0A2C\n"
        assert settings.stat().st_mode & 0o777 == 0o600


def test_bad_arguments_fail_with_a_reason(tmp_path, guard):
    empty = tmp_path / "empty-venv"
    empty.mkdir()
    cases = {
        ("--root", str(tmp_path), "--prefix", str(empty)): "bin/python is missing",
        ("--root", str(tmp_path), "--prefix", str(tmp_path / "absent")): "no virtual environment",
        ("--root", str(tmp_path / "absent")): "is not a directory",
        ("--bogus",): "unknown argument",
        ("--prefix",): "needs a directory",
    }
    for arguments, reason in cases.items():
        result = install(*arguments, env=guard.env)
        assert result.returncode != 0, arguments
        assert "install-service: error:" in result.stderr, arguments
        assert reason in result.stderr, (arguments, result.stderr)
    assert not (tmp_path / "etc").exists()
    assert guard.log.read_text() == ""


def test_make_target_runs_the_script():
    result = subprocess.run(
        ["make", "-n", "-C", str(REPO), "install-service"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "bash deploy/install-service.sh" in result.stdout


NAMESPACE_DRIVER = r"""
set -euo pipefail
mount --bind "$WORK/etc" /etc
mount --bind "$WORK/var-lib" /var/lib
mount -t tmpfs tmpfs /run
mkdir -p /run/systemd/system
mount -t tmpfs tmpfs /home
unset SCOS_SETTINGS_FILE
cd /
# The copy of /etc is this machine's: start without the account, as on a new host.
if getent passwd scos > /dev/null; then userdel scos; fi
if getent group scos > /dev/null; then groupdel scos; fi
PATH="$WORK/bin:$PATH"
bash "$INSTALL" > "$WORK/first.out"
bash "$INSTALL" > "$WORK/second.out"
getent passwd scos > "$WORK/passwd"
id -nG scos > "$WORK/groups"
stat -c '%n %U:%G %a' /var/lib/gr-scos /etc/gr-scos /etc/gr-scos/gr-scos.conf \
    /etc/systemd/system/gr-scos.target /etc/systemd/system/gr-scos-api.service \
    /etc/systemd/system/gr-scos-scheduler.service > "$WORK/stat"
runuser -u scos -- "$VENV/bin/gr-scos" config check --no-device > "$WORK/check"
mkdir -p /home/sensor/venv
if bash "$INSTALL" --prefix /home/sensor/venv 2> "$WORK/home.err"; then
    echo "a virtual environment under /home was accepted" >&2
    exit 1
fi
"""


def test_real_install_in_a_private_namespace(tmp_path):
    """The installation as root: user, groups, ownership, systemctl (a stand-in that
    records its calls, with /run/systemd/system present as under systemd)."""
    if os.geteuid() != 0:
        pytest.fail("this test installs as root in a private namespace; run the suite as root")
    probe = subprocess.run(["unshare", "--mount", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"no private mount namespace here ({probe.stderr.strip()})")
    accounts = {name: Path("/etc", name).read_bytes() for name in ("passwd", "group", "shadow")}
    subprocess.run(["cp", "-a", "/etc", str(tmp_path / "etc")], check=True)
    (tmp_path / "var-lib").mkdir()
    (tmp_path / "bin").mkdir()
    systemctl = tmp_path / "bin" / "systemctl"
    systemctl.write_text(
        f'#!/bin/sh\necho "$*" >> {tmp_path}/systemctl.log\n'
        # is-active: nothing runs in this namespace.
        'case "$1" in --quiet) exit 3 ;; esac\n'
    )
    systemctl.chmod(0o755)
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "bash", "-c", NAMESPACE_DRIVER],
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ | {"WORK": str(tmp_path), "INSTALL": str(INSTALL), "VENV": str(VENV)},
    )
    assert result.returncode == 0, result.stdout + result.stderr

    def read(name: str) -> str:
        return (tmp_path / name).read_text()

    first, second = read("first.out"), read("second.out")
    assert "created the system user scos" in first
    assert "created" not in second and "installed /" not in second and "added" not in second
    name, _, _, _, _, home, shell = read("passwd").strip().split(":")
    assert (name, home, shell) == ("scos", STATE_DIR, "/usr/sbin/nologin")
    assert set(read("groups").split()) == {"scos", "plugdev"}
    modes = dict(line.split(" ", 1) for line in read("stat").splitlines())
    assert modes == {
        STATE_DIR: "scos:scos 750",
        "/etc/gr-scos": "root:scos 750",
        "/etc/gr-scos/gr-scos.conf": "root:scos 640",
        "/etc/systemd/system/gr-scos.target": "root:root 644",
        "/etc/systemd/system/gr-scos-api.service": "root:root 644",
        "/etc/systemd/system/gr-scos-scheduler.service": "root:root 644",
    }
    # gr-scos run by hand as scos reads the settings file and finds the services' state.
    assert f"state (SCOS_HOME): {STATE_DIR}" in read("check")
    enable = f"enable {' '.join(UNITS)}"
    # The first run changed the units: it asks whether they run, to say so.
    assert read("systemctl.log").splitlines() == [
        "daemon-reload",
        enable,
        f"--quiet is-active {TARGET}",
        "daemon-reload",
        enable,
    ]
    assert "ProtectHome" in read("home.err")
    # Nothing of this machine changed.
    assert accounts == {name: Path("/etc", name).read_bytes() for name in accounts}
