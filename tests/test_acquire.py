"""``gr-scos acquire`` and ``gr-scos actions`` end to end, as an operator runs them.

Every default action runs on the simulator and on a replay of a recording the
sensor made itself; every output validates (sigmf + the scos-* schemas) and carries
the metadata of the issue. A replayed tone reads its power on the M4S mean detector
at the right bin, and the frequency axis lands on that bin exactly. Bad
configuration and bad parameters fail with one clear line and exit status 2.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from grscos.sensor import load_sensor
from grscos.sigmf_validation import validate_recording

FREQUENCY, RATE, FFT_SIZE = 700e6, 14e6, 1024
TONE_BIN, TONE_DBM = 100, -60.0
TONE_OFFSET = TONE_BIN * RATE / FFT_SIZE  # bin-centred: 1.3671875 MHz
DEFAULT_ACTIONS = [
    "acquire_m4s",
    "acquire_iq",
    "acquire_stepped_iq",
    "acquire_power_vs_time",
    "acquire_m4s_700MHz",
]
CALIBRATION_DATETIME = "2026-01-01T00:00:00Z"  # grscos/defaults/calibration.yaml


def gr_scos(*arguments, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "grscos.cli", *map(str, arguments)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        check=False,
    )


def acquire(out: Path, action: str, *options) -> list[Path]:
    done = gr_scos("acquire", action, "--out", out, *options)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr  # one summary line, no noise
    return [Path(line) for line in done.stdout.split()]


def meta(path: Path) -> dict:
    return json.loads(path.read_text())


def data(path: Path, dtype) -> np.ndarray:
    return np.fromfile(str(path).removesuffix(".sigmf-meta") + ".sigmf-data", dtype=dtype)


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    """A configuration directory whose simulator has one bin-centred tone."""
    directory = tmp_path_factory.mktemp("config")
    (directory / "simulator.yaml").write_text(
        f"tones:\n  - {{frequency_offset: {TONE_OFFSET}, power: {TONE_DBM}}}\n"
    )
    return directory


@pytest.fixture(scope="module")
def recording(config, tmp_path_factory) -> Path:
    """230 ms of IQ the sensor wrote (calibrated), enough for every default action."""
    out = tmp_path_factory.mktemp("source")
    (path,) = acquire(out, "acquire_iq", "--config", config, "--set", "duration_ms=230")
    return path


def check_recording(path: Path, action: str) -> dict:
    validate_recording(path)  # sigmf package and the scos-* / ntia-core schemas
    document = meta(path)
    header = document["global"]
    assert header["scos-acquisition:action"] == action
    assert header["scos-acquisition:schedule_entry"]["action"] == action
    assert isinstance(header["scos-acquisition:task"], int)
    assert header["scos-acquisition:start_time"] <= header["scos-acquisition:end_time"]
    assert header["ntia-core:classification"] == "UNCLASSIFIED"
    assert header["scos-sensor:sensor"] == load_sensor()
    assert header["scos-sensor:calibration_datetime"] == CALIBRATION_DATETIME
    assert header["core:geolocation"]["type"] == "Point"
    for capture in document["captures"]:
        assert capture["core:frequency"] > 0
        assert capture["core:datetime"].endswith("Z")
    types = [a.get("scos-core:annotation_type") for a in document["annotations"]]
    # Calibrated by the sensor (sim) or carried over from the replayed recording.
    assert "CalibrationAnnotation" in types
    return document


@pytest.mark.parametrize("device", ["sim", "replay"])
@pytest.mark.parametrize("action", DEFAULT_ACTIONS)
def test_every_default_action_runs_and_writes_valid_scos_sigmf(
    config, recording, tmp_path, action, device
):
    sigan = "sim" if device == "sim" else f"replay:{recording}"
    paths = acquire(tmp_path, action, "--config", config, "--sigan", sigan)
    documents = [check_recording(path, action) for path in paths]
    frequencies = [c["core:frequency"] for d in documents for c in d["captures"]]
    if action == "acquire_stepped_iq":
        expected = [700e6, 1.5e9, 3.5e9] if device == "sim" else [FREQUENCY]
        assert frequencies == expected
        for path in paths:
            assert len(data(path, np.complex64)) == 140000  # 10 ms at 14 MS/s
        return
    (path,) = paths
    (document,) = documents
    assert frequencies == [FREQUENCY]
    assert document["global"]["core:sample_rate"] == RATE
    types = [a.get("scos-core:annotation_type") for a in document["annotations"]]
    if action.startswith("acquire_m4s"):
        records = 10 if action == "acquire_m4s_700MHz" else 1
        assert document["global"]["core:datatype"] == "rf32_le"
        assert len(data(path, np.float32)) == records * 5 * FFT_SIZE
        assert types.count("FrequencyDomainDetection") == records * 5
    elif action == "acquire_iq":
        assert document["global"]["core:datatype"] == "cf32_le"
        assert len(data(path, np.complex64)) == 140000
    else:
        assert document["global"]["core:datatype"] == "rf32_le"
        assert len(data(path, np.float32)) == 5 * 100
        assert types.count("TimeDomainDetection") == 5


def test_replayed_tone_reads_its_power_at_its_bin(recording, tmp_path):
    (path,) = acquire(tmp_path, "acquire_m4s", "--sigan", f"replay:{recording}")
    spectra = data(path, np.float32).reshape(5, FFT_SIZE)
    mean = spectra[2]
    peak = int(np.argmax(mean))
    assert peak == FFT_SIZE // 2 + TONE_BIN
    assert abs(mean[peak] - TONE_DBM) < 0.1, mean[peak]
    (annotation, *_) = [
        a for a in meta(path)["annotations"] if a.get("scos-algorithm:detector") == "fft_mean_power"
    ]
    start, step = (
        annotation["scos-algorithm:frequency_start"],
        annotation["scos-algorithm:frequency_step"],
    )
    assert step == RATE / FFT_SIZE
    assert start + peak * step == FREQUENCY + TONE_OFFSET
    assert annotation["scos-algorithm:frequency_stop"] == start + (FFT_SIZE - 1) * step


def test_replay_gives_back_the_recorded_samples_without_calibrating_twice(recording, tmp_path):
    (path,) = acquire(tmp_path, "acquire_iq", "--sigan", f"replay:{recording}")
    np.testing.assert_array_equal(data(path, np.complex64), data(recording, np.complex64)[:140000])
    recorded = [a for a in meta(recording)["annotations"] if "scos-sensor:gain_sigan" in a]
    replayed = [a for a in meta(path)["annotations"] if "scos-sensor:gain_sigan" in a]
    assert recorded[0]["scos-sensor:gain_sigan"] == replayed[0]["scos-sensor:gain_sigan"]


def test_overflow_in_the_stream_is_counted_and_recorded(recording, tmp_path):
    """A capture break in the replayed stream is what a USRP overflow looks like."""
    broken = tmp_path / "broken"
    os.link(str(recording).removesuffix(".sigmf-meta") + ".sigmf-data", f"{broken}.sigmf-data")
    document = meta(recording)
    first = document["captures"][0]
    seconds = first["core:datetime"]
    later = seconds[:17] + f"{float(seconds[17:-1]) + 0.5:012.9f}Z"  # 0.5 s later
    document["captures"].append(
        {"core:sample_start": 70000, "core:frequency": FREQUENCY, "core:datetime": later}
    )
    Path(f"{broken}.sigmf-meta").write_text(json.dumps(document))
    done = gr_scos(
        "acquire", "acquire_iq", "--out", tmp_path / "out", "--sigan", f"replay:{broken}.sigmf-meta"
    )
    assert done.returncode == 0, done.stderr
    assert "1 overflow(s)" in done.stderr
    (path,) = [Path(line) for line in done.stdout.split()]
    result = meta(path)
    assert [c["core:sample_start"] for c in result["captures"]] == [0, 70000]
    assert result["captures"][1]["core:datetime"] == later
    (event,) = [a for a in result["annotations"] if a.get("core:label") == "overflow"]
    assert event["core:sample_start"] == 70000


def test_simulated_overload_is_annotated(tmp_path):
    config = tmp_path / "config"
    config.mkdir()
    (config / "simulator.yaml").write_text("tones:\n  - {frequency_offset: 1.0e6, power: 0.0}\n")
    (path,) = acquire(tmp_path, "acquire_iq", "--config", config)
    sensor = [a for a in meta(path)["annotations"] if "scos-sensor:overload_sigan" in a]
    assert sensor and all(a["scos-sensor:overload_sigan"] for a in sensor)


def test_stepped_action_takes_per_frequency_lists(tmp_path):
    paths = acquire(
        tmp_path,
        "acquire_stepped_iq",
        "--set",
        "frequencies=[1e9, 2e9]",
        "--set",
        "sample_rates=[1e6, 2e6]",
        "--set",
        "durations_ms=[3, 1]",
    )
    rates = [meta(path)["global"]["core:sample_rate"] for path in paths]
    assert rates == [1e6, 2e6]
    assert [len(data(path, np.complex64)) for path in paths] == [3000, 2000]


def test_actions_lists_every_action_with_its_parameters():
    done = gr_scos("actions")
    assert done.returncode == 0, done.stderr
    for action in DEFAULT_ACTIONS:
        assert f"\n{action}: " in "\n" + done.stdout
    assert "window        flattop" in done.stdout
    assert "frequencies   [700e6, 1.5e9, 3.5e9] Hz" in done.stdout
    assert "nrecords      10 records               action" in done.stdout


OWNER_FLOWGRAPH = """
import numpy as np
from gnuradio import blocks, gr


class fails(gr.sync_block):
    def __init__(self):
        gr.sync_block.__init__(self, "fails", [np.complex64], None)

    def work(self, input_items, output_items):
        raise ValueError("the detector broke")


class acquire_broken(gr.top_block):
    def __init__(self, device="sim", output="x", global_extensions={}, duration_ms=1.0):
        gr.top_block.__init__(self, catch_exceptions=False)
        self.source = blocks.null_source(gr.sizeof_gr_complex)
        self.sink = fails()
        self.connect(self.source, self.sink)
"""


def write_config(directory: Path, actions: str, flowgraph: str | None = None) -> Path:
    directory.mkdir(exist_ok=True)
    (directory / "actions.yaml").write_text(actions)
    if flowgraph is not None:
        (directory / "flowgraphs").mkdir(exist_ok=True)
        (directory / "flowgraphs" / "acquire_broken.py").write_text(flowgraph)
    return directory


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["nope"], r"unknown action 'nope'; configured actions: acquire_iq, "),
        (
            ["acquire_m4s", "--set", "frequency=7e9"],
            r"parameter frequency: .*7 GHz is outside the device's range 1 MHz \.\. 6 GHz",
        ),
        (
            ["acquire_m4s", "--set", "fft_sise=512"],
            r"fft_sise: flowgraph acquire_m4s has no such parameter \(it takes fft_size, ",
        ),
        (["acquire_m4s", "--set", "nffts=0"], r"nffts: must be a whole number >= 1, got 0"),
        (["acquire_m4s", "--set", "window=triangle"], r"window: must be one of "),
        (["acquire_m4s", "--set", "nffts"], r"--set 'nffts': expected KEY=VALUE"),
        (
            ["acquire_stepped_iq", "--set", "gains=[1, 2]"],
            r"gains: has 2 values for 3 frequencies",
        ),
        (
            ["acquire_iq", "--sigan", "replay:/nonexistent/x.sigmf-meta"],
            r"replay: .*/nonexistent/x.sigmf-meta",
        ),
        (["acquire_iq", "--sigan", "usrp:serial=1"], r"unknown signal analyzer 'usrp:serial=1'"),
        (
            ["acquire_iq", "--config", "/nonexistent"],
            r"configuration directory /nonexistent does not exist",
        ),
    ],
)
def test_bad_parameters_fail_with_one_clear_line(tmp_path, arguments, message):
    done = gr_scos("acquire", *arguments, "--out", tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith("gr-scos acquire: error: ")
    assert done.stderr.count("\n") == 1, done.stderr
    assert re.search(message, done.stderr), done.stderr
    assert not list(tmp_path.glob("*.sigmf-*")), "nothing written on a refused request"


def test_replay_refuses_a_frequency_it_was_not_recorded_at(recording, tmp_path):
    done = gr_scos(
        "acquire",
        "acquire_iq",
        "--sigan",
        f"replay:{recording}",
        "--set",
        "frequency=1e9",
        "--out",
        tmp_path,
    )
    assert done.returncode == 2
    assert (
        "on replay of" in done.stderr
        and "1 GHz is outside the device's range 700 MHz" in done.stderr
    )


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"actions.yaml": "actions: [\n"}, r"actions.yaml: not valid YAML"),
        (
            {"actions.yaml": "actions:\n  - {name: x, flowgraph: nope, summary: s}\n"},
            r"flowgraph 'nope' does not exist",
        ),
        (
            {
                "actions.yaml": "actions:\n  - {name: x, flowgraph: acquire_iq, summary: s, parameters: {gain: loud}}\n"
            },
            r"action 'x': parameter gain: must be a finite number, got 'loud'",
        ),
        (
            {
                "actions.yaml": "actions:\n  - {name: x, flowgraph: acquire_iq, summary: s, parameters: {frequency: 9e9}}\n"
            },
            r"action 'x': parameter frequency: .*outside",
        ),
        ({"sensor.yaml": "sensor_spec: [\n"}, r"sensor.yaml: not valid YAML: line 2"),
        ({"sensor.yaml": "mobile: maybe\n"}, r"sensor.yaml: "),
        (
            {"location.yaml": "latitude: 91\nlongitude: 0\n"},
            r"location.yaml: latitude: must be <= 90",
        ),
        ({"calibration.yaml": "points: 3\n"}, r"calibration.yaml"),
        (
            {"simulator.yaml": "tones: [{power: -3}]\n"},
            r"simulator.yaml: tones\[0\]: missing \['frequency_offset'\]",
        ),
    ],
)
def test_broken_configuration_fails_at_start_with_the_file_named(tmp_path, files, message):
    config = tmp_path / "config"
    config.mkdir()
    for name, text in files.items():
        (config / name).write_text(text)
    for command in (["acquire", "acquire_iq", "--out", tmp_path], ["actions"]):
        done = gr_scos(*command, "--config", config)
        assert done.returncode == 2, done.stdout + done.stderr
        assert done.stderr.count("\n") == 1, done.stderr
        assert re.search(message, done.stderr), done.stderr


def test_a_flowgraph_that_fails_is_reported_with_its_reason(tmp_path):
    actions = "actions:\n  - {name: broken, flowgraph: acquire_broken, summary: fails}\n"
    config = write_config(tmp_path / "config", actions, OWNER_FLOWGRAPH)
    done = gr_scos("acquire", "broken", "--config", config, "--out", tmp_path)
    assert done.returncode == 2
    assert (
        done.stderr
        == "gr-scos acquire: error: the flowgraph failed: ValueError: the detector broke\n"
    )


def test_an_action_past_its_maximum_run_time_is_stopped(tmp_path):
    actions = (
        "actions:\n  - {name: long, flowgraph: acquire_iq, summary: too long, max_run_time: 1,"
        " parameters: {duration_ms: 1e6, sample_rate: 1e6}}\n"
    )
    config = write_config(tmp_path / "config", actions)
    done = gr_scos("acquire", "long", "--config", config, "--out", tmp_path)
    assert done.returncode == 2
    assert "stopped after the maximum run time of 1 s" in done.stderr
