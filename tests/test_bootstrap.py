"""deploy/bootstrap.sh sets up a checkout for a normal user, directly or under sudo."""

import os
import pwd
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
USER = "scos-bootstrap-test"


@pytest.fixture(scope="module")
def checkout():
    """A copy of this tree owned by an unprivileged user created for the test."""
    assert os.geteuid() == 0, "this test creates a user account; run the suite as root (CI does)"
    try:
        pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", USER], check=True)
    home = Path(pwd.getpwnam(USER).pw_dir)
    tree = home / "gr-scos"
    shutil.rmtree(tree, ignore_errors=True)
    shutil.copytree(
        REPO,
        tree,
        ignore=shutil.ignore_patterns(".venv", ".git", "__pycache__", "*.egg-info", "var", "build"),
    )
    subprocess.run(["chown", "-R", f"{USER}:{USER}", tree], check=True)
    yield tree
    shutil.rmtree(tree, ignore_errors=True)


def bootstrap(tree: Path, *prefix: str, env=None) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [*prefix, "bash", str(tree / "deploy/bootstrap.sh")],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd="/",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def owners(tree: Path) -> set[str]:
    return {pwd.getpwuid(path.lstat().st_uid).pw_name for path in (tree / ".venv").rglob("*")}


def test_normal_user_then_sudo_rerun(checkout):
    first = bootstrap(checkout, "runuser", "-u", USER, "--")
    assert "creating" in first.stdout
    venv_python = checkout / ".venv/bin/python"
    probe = subprocess.run(
        [
            "runuser",
            "-u",
            USER,
            "--",
            venv_python,
            "-c",
            "import gnuradio.scos, numpy; print(gnuradio.scos.__file__, numpy.__file__)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    scos_file, numpy_file = probe.stdout.split()
    assert scos_file == str(checkout / "blocks/__init__.py")
    assert numpy_file.startswith("/usr/lib/python3/dist-packages/")
    assert owners(checkout) == {USER}

    # `sudo bash deploy/bootstrap.sh` from that user: root with SUDO_USER set. The
    # venv is kept (idempotent) and nothing in it becomes root's.
    second = bootstrap(
        checkout, env={**os.environ, "SUDO_USER": USER, "SUDO_UID": "", "SUDO_GID": ""}
    )
    assert "creating" not in second.stdout
    assert "installing Debian packages" not in second.stdout
    assert owners(checkout) == {USER}
    assert (checkout / ".venv/.bootstrapped").exists()
