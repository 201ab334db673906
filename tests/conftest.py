"""Fixtures shared by the test suites."""

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GRCC = "/usr/bin/grcc"


@pytest.fixture
def grcc(tmp_path) -> Callable[[Path, Path], Path]:
    """Compile a .grc with GNU Radio's grcc and the repository's block YAML; returns
    the generated Python file (the test fails with grcc's output if it cannot)."""

    def compile_flowgraph(grc: Path, out: Path) -> Path:
        env = dict(os.environ, GRC_BLOCKS_PATH=str(REPO / "grc"), HOME=str(tmp_path / "home"))
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
