"""Fixtures shared by the test suites."""

import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from gnuradio import gr
from gnuradio.grc.core import Constants
from gnuradio.grc.core.platform import Platform

REPO = Path(__file__).resolve().parents[1]
# No settings file unless a test names one: an operator's /etc/gr-scos/gr-scos.conf
# on a developer's machine must not change what the tests (and their subprocesses) see.
os.environ["SCOS_SETTINGS_FILE"] = ""
GRC_DIR = REPO / "grc"
GRCC = "/usr/bin/grcc"


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture(scope="session")
def grc(tmp_path_factory):
    """GNU Radio Companion's own Platform with the repository's grc/ on its block
    path, and the warnings it logged while loading the blocks."""
    collect = _Collect()
    grc_logger = logging.getLogger("gnuradio.grc")
    grc_logger.addHandler(collect)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("GRC_BLOCKS_PATH", str(GRC_DIR))
            cache = tmp_path_factory.mktemp("grc-cache") / "cache.json"
            patch.setattr(Constants, "CACHE_FILE", str(cache))
            platform = Platform(
                name="gr-scos test",
                prefs=gr.prefs(),
                version=gr.version(),
                version_parts=(gr.major_version(), gr.api_version(), gr.minor_version()),
            )
            block_paths = platform.config.block_paths  # read from the environment
            platform.build_library()
    finally:
        grc_logger.removeHandler(collect)
    assert str(GRC_DIR) in block_paths
    return platform, [record.getMessage() for record in collect.records]


@pytest.fixture
def open_grc(grc):
    """Open a .grc file with GRC's loader; the test fails with GRC's errors unless it
    validates. Returns GRC's flowgraph."""
    platform, _ = grc

    def open_and_validate(path: Path):
        flowgraph = platform.make_flow_graph()
        flowgraph.grc_file_path = str(path)
        flowgraph.import_data(platform.parse_flow_graph(str(path)))
        flowgraph.rewrite()
        flowgraph.validate()
        errors = [f"{element}: {message}" for element, message in flowgraph.iter_error_messages()]
        assert flowgraph.is_valid(), "\n".join(errors)
        return flowgraph

    return open_and_validate


@pytest.fixture
def grcc(tmp_path) -> Callable[[Path, Path], Path]:
    """Compile a .grc with GNU Radio's grcc and the repository's block YAML; returns
    the generated Python file (the test fails with grcc's output if it cannot)."""

    def compile_flowgraph(grc: Path, out: Path) -> Path:
        env = dict(os.environ, GRC_BLOCKS_PATH=str(GRC_DIR), HOME=str(tmp_path / "home"))
        done = subprocess.run(
            [sys.executable, GRCC, "-o", str(out), str(grc)],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        generated = out / f"{grc.stem}.py"
        assert done.returncode == 0 and generated.is_file(), done.stdout + done.stderr
        return generated

    return compile_flowgraph
