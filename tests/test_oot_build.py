"""The GNU Radio out-of-tree CMake build: configure, build, install and ctest.

Configures the checkout with the interpreter running pytest (the venv's, so that
ctest's QA scripts see PyPI-only packages such as ``sigmf``), installs into a
scratch prefix and checks that

* the installed tree has every block module and every GRC YAML file,
* ``import gnuradio.scos`` with only the prefix on PYTHONPATH resolves to the prefix
  (not to the editable install that this venv also has),
* ctest registers one test per ``blocks/qa_*.py``, runs them with this interpreter
  against the build tree copy of the module, and they all pass.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BLOCKS = REPO / "blocks"
GRC = REPO / "grc"

CMAKE_TIMEOUT = 300
CTEST_TIMEOUT = 900

PROBE = "import gnuradio.scos, sys; print(gnuradio.scos.__file__)"


def block_files() -> list[str]:
    return sorted(p.name for p in BLOCKS.glob("*.py") if not p.name.startswith("qa_"))


def qa_files() -> list[str]:
    return sorted(p.name for p in BLOCKS.glob("qa_*.py"))


def grc_files() -> list[str]:
    return sorted(p.name for p in GRC.glob("*.yml"))


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without anything that could redirect imports."""
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME"}}
    env.update(extra)
    return env


def run(cmd: list[str], *, cwd: Path, timeout: float, env: dict[str, str] | None = None):
    proc = subprocess.run(
        cmd,
        cwd=cwd,
        env=clean_env() if env is None else env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, (
        f"{' '.join(map(str, cmd))} exited {proc.returncode}\n"
        f"--- stdout ---\n{proc.stdout[-8000:]}\n--- stderr ---\n{proc.stderr[-8000:]}"
    )
    return proc


@dataclass(frozen=True)
class OotBuild:
    build: Path
    prefix: Path
    blocks: list[str]
    qa: list[str]
    grc: list[str]


@pytest.fixture(scope="module")
def oot(tmp_path_factory: pytest.TempPathFactory) -> OotBuild:
    root = tmp_path_factory.mktemp("oot")
    build, prefix = root / "build", root / "prefix"
    # Snapshot the source lists before configuring, so that the counts match what
    # CMake's globs saw.
    blocks, qa, grc = block_files(), qa_files(), grc_files()
    run(
        [
            "cmake",
            "-S",
            str(REPO),
            "-B",
            str(build),
            f"-DCMAKE_INSTALL_PREFIX={prefix}",
            f"-DPYTHON_EXECUTABLE={sys.executable}",
        ],
        cwd=root,
        timeout=CMAKE_TIMEOUT,
    )
    run(
        ["cmake", "--build", str(build), "--parallel", str(os.cpu_count() or 2)],
        cwd=root,
        timeout=CMAKE_TIMEOUT,
    )
    run(["cmake", "--install", str(build)], cwd=root, timeout=CMAKE_TIMEOUT)
    return OotBuild(build=build, prefix=prefix, blocks=blocks, qa=qa, grc=grc)


def installed_module_dir(prefix: Path) -> Path:
    inits = sorted(prefix.glob("**/gnuradio/scos/__init__.py"))
    assert len(inits) == 1, f"expected one installed gnuradio/scos, found {inits}"
    return inits[0].parent


def test_install_tree_has_every_block_and_grc_file(oot: OotBuild):
    module_dir = installed_module_dir(oot.prefix)
    assert "__init__.py" in oot.blocks
    missing = [name for name in oot.blocks if not (module_dir / name).is_file()]
    assert not missing, f"not installed into {module_dir}: {missing}"
    assert not list(module_dir.glob("qa_*")), "QA scripts must not be installed"
    # GR_PYTHON_INSTALL byte-compiles what it installs.
    assert (module_dir / "__init__.pyc").is_file()

    assert oot.grc, "no grc/*.yml in the checkout"
    assert "scos.tree.yml" in oot.grc
    grc_dir = oot.prefix / "share" / "gnuradio" / "grc" / "blocks"
    missing = [name for name in oot.grc if not (grc_dir / name).is_file()]
    assert not missing, f"not installed into {grc_dir}: {missing}"


def test_installed_module_is_imported_from_the_prefix(oot: OotBuild, tmp_path: Path):
    python_dir = installed_module_dir(oot.prefix).parent.parent
    proc = run(
        [sys.executable, "-c", PROBE],
        cwd=tmp_path,
        timeout=120,
        env=clean_env(PYTHONPATH=str(python_dir)),
    )
    imported = Path(proc.stdout.strip().splitlines()[-1]).resolve()
    assert imported.is_relative_to(oot.prefix.resolve()), imported
    assert imported == (python_dir / "gnuradio" / "scos" / "__init__.py").resolve()


def ctest_tests(build: Path) -> list[dict]:
    proc = run(["ctest", "--show-only=json-v1"], cwd=build, timeout=120)
    return json.loads(proc.stdout)["tests"]


def ctest_environment(test: dict) -> tuple[dict[str, str], Path]:
    """The environment and working directory ctest gives ``test``."""
    props = {p["name"]: p["value"] for p in test.get("properties", [])}
    env = clean_env()
    for item in props.get("ENVIRONMENT", []):
        key, _, value = item.partition("=")
        env[key] = value
    for item in props.get("ENVIRONMENT_MODIFICATION", []):
        key, _, op_value = item.partition("=")
        op, _, value = op_value.partition(":")
        old = env.get(key)
        if op == "set":
            env[key] = value
        elif op == "path_list_prepend":
            env[key] = os.pathsep.join([value, old] if old else [value])
        elif op == "path_list_append":
            env[key] = os.pathsep.join([old, value] if old else [value])
        else:
            raise AssertionError(f"unhandled ENVIRONMENT_MODIFICATION {item!r}")
    return env, Path(props["WORKING_DIRECTORY"])


def test_ctest_runs_every_qa_script_against_the_build_tree(oot: OotBuild):
    assert oot.qa, "no blocks/qa_*.py in the checkout"
    tests = ctest_tests(oot.build)
    assert sorted(t["name"] for t in tests) == sorted(Path(q).stem for q in oot.qa)

    build_module = (oot.build / "python_modules" / "gnuradio" / "scos").resolve()
    for test in tests:
        command = test["command"]
        # The configured interpreter (this venv's), on the source QA script.
        assert command[0] == sys.executable, command
        assert Path(command[-1]) == BLOCKS / f"{test['name']}.py", command
        # Same interpreter, environment and cwd as the test: gnuradio.scos must be
        # the build tree copy, not blocks/ through the editable install.
        env, cwd = ctest_environment(test)
        proc = run([command[0], "-c", PROBE], cwd=cwd, timeout=120, env=env)
        imported = Path(proc.stdout.strip().splitlines()[-1]).resolve()
        assert imported == build_module / "__init__.py", (test["name"], imported)

    # As the README runs it, from the source tree.
    proc = subprocess.run(
        ["ctest", "--test-dir", str(oot.build), "--output-on-failure"],
        cwd=oot.build.parent,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=CTEST_TIMEOUT,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"ctest failed:\n{output[-20000:]}"
    summary = re.search(r"(\d+)% tests passed, (\d+) tests failed out of (\d+)", output)
    assert summary, f"no ctest summary in:\n{output[-4000:]}"
    passed_pct, failed, total = map(int, summary.groups())
    assert (passed_pct, failed) == (100, 0), summary.group(0)
    assert total == len(oot.qa), (summary.group(0), oot.qa)
