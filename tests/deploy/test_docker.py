"""deploy/Dockerfile and deploy/compose.yaml, as far as they can be checked without a
docker daemon (none runs here, so the image is never built): the Dockerfile's
instructions, the packages its deploy/bootstrap.sh --runtime installs, the health
check's URL against the real API, and compose.yaml's keys (and ``docker compose
config`` where the compose plugin is installed)."""

import json
import os
import re
import shlex
import subprocess
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from grscos.cli import build_parser
from grscos.settings import Settings
from grscos.webapi.app import create_app

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "deploy" / "Dockerfile"
COMPOSE = REPO / "deploy" / "compose.yaml"
BOOTSTRAP = REPO / "deploy" / "bootstrap.sh"
STATE_DIR = "/var/lib/gr-scos"
# Packages of the tests, benchmarks and out-of-tree build, never in the image.
DEVELOPMENT_ONLY = {
    "gnuradio-dev",
    "postgresql",
    "wrk",
    "nginx-light",
    "chromium",
    "chromium-driver",
    "cmake",
    "g++",
    "git",
    "sudo",
}


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile's (INSTRUCTION, arguments), continuation lines joined."""
    result = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        whole = pending + stripped
        pending = ""
        keyword, _, arguments = whole.partition(" ")
        result.append((keyword.upper(), arguments.strip()))
    assert not pending, "the Dockerfile ends in a continuation line"
    return result


def arguments_of(keyword: str) -> list[str]:
    return [arguments for name, arguments in instructions() if name == keyword]


def test_base_is_debian_12():
    assert arguments_of("FROM") == ["debian:bookworm"]


def test_packages_come_from_the_bootstrap():
    runs = arguments_of("RUN")
    assert any(run.startswith("bash deploy/bootstrap.sh --runtime --packages-only") for run in runs)
    assert any(
        re.match(r"bash deploy/bootstrap\.sh --runtime(?! --packages-only)", run) for run in runs
    )
    assert not any("apt-get install" in run or "pip install" in run for run in runs)


def test_copies_the_distribution_and_nothing_else():
    """Every folder the distribution is built from, and no whole context: the host's
    .venv, var/ (database, secret.key) and .git stay out of the image."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    needed = {"deploy/bootstrap.sh", "pyproject.toml", project["project"]["readme"]}
    needed |= set(project["tool"]["setuptools"]["package-dir"].values())
    copied = set()
    for arguments in arguments_of("COPY"):
        *sources, _destination = shlex.split(arguments)
        copied |= {source.rstrip("/") for source in sources}
    assert copied == needed
    assert all((REPO / source).exists() for source in copied)


def test_runs_as_scos_with_its_state_in_a_volume():
    users = arguments_of("USER")
    assert users[-1] == "scos"
    assert any("useradd" in run and " scos" in run for run in arguments_of("RUN"))
    environment = " ".join(arguments_of("ENV")).split()
    assert f"SCOS_HOME={STATE_DIR}" in environment
    assert f"HOME={STATE_DIR}" in environment
    assert arguments_of("VOLUME") == [STATE_DIR]
    assert arguments_of("EXPOSE") == ["8000"]


def test_command_is_gr_scos_run_on_port_8000():
    (command,) = arguments_of("CMD")
    argv = json.loads(command)
    assert argv[0] == "gr-scos"
    parsed = build_parser().parse_args(argv[1:])
    assert (parsed.command, parsed.host, parsed.port) == ("run", "0.0.0.0", 8000)


def test_healthcheck_url_answers_without_credentials(tmp_path):
    (healthcheck,) = arguments_of("HEALTHCHECK")
    urls = re.findall(r"http://[^'\"]+", healthcheck)
    assert len(urls) == 1, healthcheck
    url = urlsplit(urls[0])
    assert (url.hostname, url.port) == ("127.0.0.1", 8000)
    settings = Settings.load(environ={"SCOS_HOME": str(tmp_path), "SCOS_SETTINGS_FILE": ""})
    client = create_app(settings).test_client()
    assert client.get(url.path).status_code == 200
    # Why not the API root: every resource needs a token.
    assert client.get("/api/v1/").status_code == 401


def bootstrap_packages(tmp_path: Path, *arguments: str) -> set[str]:
    """The Debian packages bootstrap.sh installs on a machine that has none, with
    stand-ins for dpkg-query (nothing installed) and apt-get (records its call)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    log = tmp_path / "apt-get.log"
    log.write_text("")
    (bin_dir / "dpkg-query").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "apt-get").write_text(f'#!/bin/sh\necho "$*" >> {log}\n')
    for stand_in in bin_dir.iterdir():
        stand_in.chmod(0o755)
    result = subprocess.run(
        ["bash", str(BOOTSTRAP), *arguments],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ | {"PATH": f"{bin_dir}:{os.environ['PATH']}"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Debian packages ready" in result.stdout
    calls = [line.split() for line in log.read_text().splitlines()]
    (install,) = [words for words in calls if words[0] == "install"]
    return {word for word in install[1:] if not word.startswith("-")}


def test_runtime_bootstrap_leaves_out_development_packages(tmp_path):
    runtime = bootstrap_packages(tmp_path, "--runtime", "--packages-only")
    assert {"gnuradio", "gr-osmosdr", "python3-uhd", "uhd-host", "python3-venv"} <= runtime
    assert not runtime & DEVELOPMENT_ONLY
    # Without --runtime (make test, make run) everything is installed, as before.
    everything = bootstrap_packages(tmp_path, "--packages-only")
    assert runtime | DEVELOPMENT_ONLY <= everything


def test_bootstrap_refuses_an_unknown_argument():
    result = subprocess.run(
        ["bash", str(BOOTSTRAP), "--production"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "unknown argument '--production'" in result.stderr


def test_compose_file_runs_the_image_on_the_loopback():
    compose = yaml.safe_load(COMPOSE.read_text())
    assert set(compose) == {"name", "services", "volumes"}
    (name,) = compose["services"]
    sensor = compose["services"][name]
    build = sensor["build"]
    context = (COMPOSE.parent / build["context"]).resolve()
    assert context == REPO
    assert (context / build["dockerfile"]).resolve() == DOCKERFILE
    assert sensor["ports"] == ["127.0.0.1:8000:8000"]
    # The settings file is optional, and the example it is copied from sits beside it.
    (env_file,) = sensor["env_file"]
    assert env_file["required"] is False
    settings = COMPOSE.parent / env_file["path"]
    assert settings.with_name(settings.name + ".example").is_file()
    mounts = dict(volume.split(":", 1) for volume in sensor["volumes"])
    state_volume = [source for source, target in mounts.items() if target == STATE_DIR]
    assert state_volume and state_volume[0] in compose["volumes"]
    # USB radios, hot-plugged included: the host's device nodes, and the cgroup rule
    # that lets the container open USB devices (character major 189).
    assert mounts["/dev/bus/usb"] == "/dev/bus/usb"
    assert sensor["device_cgroup_rules"] == ["c 189:* rmw"]
    assert sensor["init"] is True
    assert sensor["restart"] == "unless-stopped"
