"""The gr-scos command line as an operator uses it."""

import json
import subprocess
import sys
from pathlib import Path

import sigmf

GR_SCOS = [str(Path(sys.executable).with_name("gr-scos"))]


def run(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([*GR_SCOS, *arguments], capture_output=True, text=True, timeout=120)


def test_selftest_passes_and_leaves_valid_recordings(tmp_path):
    result = run("selftest", "--out", str(tmp_path), "--nffts", "50")
    assert result.returncode == 0, result.stderr
    assert "selftest passed: 5 checks" in result.stdout
    metas = sorted(tmp_path.rglob("*.sigmf-meta"))
    assert [path.relative_to(tmp_path).as_posix() for path in metas] == [
        "noise/m4s.sigmf-meta",
        "noise/power_vs_time.sigmf-meta",
        "tone/m4s.sigmf-meta",
        "tone/power_vs_time.sigmf-meta",
    ]
    for meta in metas:
        sigmf.fromfile(str(meta)).validate()
        assert json.loads(meta.read_text())["global"]["core:recorder"] == "gr-scos"


def test_selftest_with_a_calibration_file(tmp_path):
    calibration = tmp_path / "cal.yaml"
    calibration.write_text(
        "points:\n  - {sample_rate: 14.0e6, frequency: 700.0e6, gain_sigan: 25.0, noise_figure_sensor: 3.0}\n"
    )
    result = run(
        "selftest",
        "--out",
        str(tmp_path / "out"),
        "--nffts",
        "50",
        "--calibration",
        str(calibration),
    )
    assert result.returncode == 0, result.stderr


def test_bad_input_gives_a_one_line_error_and_nonzero_exit(tmp_path):
    missing = run("selftest", "--out", str(tmp_path), "--calibration", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2
    assert missing.stderr.strip().count("\n") == 0
    assert "cannot read calibration file" in missing.stderr
    bad_size = run("selftest", "--out", str(tmp_path), "--fft-size", "0")
    assert bad_size.returncode == 2 and "fft_size must be a positive integer" in bad_size.stderr
    bad_window = run("selftest", "--window", "kaiser")
    assert bad_window.returncode == 2 and "invalid choice" in bad_window.stderr
