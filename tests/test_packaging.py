"""The distribution installs only grscos and gnuradio.scos, plus the gr-scos command."""

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_wheel_installs_only_namespaced_packages(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            tmp_path,
            REPO,
        ],
        check=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("gr_scos-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {
        name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")
    }
    assert top_level == {"grscos", "gnuradio"}
    for module in ("gnuradio/scos/m4s_detector.py", "grscos/cli.py", "grscos/storage/__init__.py"):
        assert module in names
    assert not any(
        name.startswith("gnuradio/") and not name.startswith("gnuradio/scos/") for name in names
    )
    entry_points = next(name for name in names if name.endswith("entry_points.txt"))
    assert "gr-scos = grscos.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
