"""End-to-end accuracy: simulated signals of known power through the SCOS chain.

Expectations are computed here from first principles (kTB, the window's taps), not
taken from the code under test.
"""

import json
import math

import numpy as np
import pytest
from gnuradio import scos
from gnuradio.scos import windows

from grscos.measurement import ChainSettings, MeasurementChain

K_BOLTZMANN = 1.380649e-23
FREQUENCY, RATE = 700e6, 14e6


def ktb_dbm(bandwidth_hz: float, noise_figure_db: float) -> float:
    return 10 * math.log10(K_BOLTZMANN * 290 * bandwidth_hz * 1e3) + noise_figure_db


def enbw_hz(window: str, fft_size: int, rate: float) -> float:
    taps = windows.taps(window, fft_size)
    return rate / fft_size * fft_size * np.sum(taps**2) / np.sum(taps) ** 2


def mean_dbm(values: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(10 ** (values.astype(np.float64) / 10))))


def measure(
    tmp_path, settings: ChainSettings, *, tones=(), noise_figure=5.0, gain=0.0, record_iq=False
):
    source = scos.sigan_sim(
        FREQUENCY, RATE, noise_figure=noise_figure, gain=gain, tones=list(tones), seed=5
    )
    chain = MeasurementChain(source, tmp_path, settings, record_iq=record_iq)
    chain.run()
    return chain


@pytest.mark.parametrize("window", windows.WINDOW_NAMES)
@pytest.mark.parametrize("power", [-30.0, -75.0])
def test_tone_reads_its_power_on_the_mean_detector_peak_bin(tmp_path, window, power):
    settings = ChainSettings(FREQUENCY, RATE, fft_size=1024, nffts=100, window=window)
    tone_bin = -137
    chain = measure(
        tmp_path, settings, tones=[{"frequency_offset": tone_bin * RATE / 1024, "power": power}]
    )
    mean = chain.m4s_dbm_values()[0, 2]
    assert int(np.argmax(mean)) == 512 + tone_bin
    assert mean.max() == pytest.approx(power, abs=0.1)


@pytest.mark.parametrize("window", windows.WINDOW_NAMES)
def test_noise_floor_is_ktb_plus_nf_plus_enbw(tmp_path, window):
    settings = ChainSettings(FREQUENCY, RATE, fft_size=512, nffts=300, window=window)
    chain = measure(tmp_path, settings, noise_figure=7.0)
    detectors = chain.m4s_dbm_values()[0]
    expected = ktb_dbm(enbw_hz(window, 512, RATE), 7.0)
    assert mean_dbm(detectors[2]) == pytest.approx(expected, abs=0.5)
    # The other detectors order themselves around it bin by bin.
    assert np.all(detectors[0] <= detectors[3]) and np.all(detectors[3] <= detectors[1])
    assert np.all(detectors[0] <= detectors[2]) and np.all(detectors[2] <= detectors[1])
    assert np.all(np.isfinite(detectors))


def test_calibration_moves_readings_to_the_reference_point(tmp_path):
    calibration = tmp_path / "calibration.yaml"
    calibration.write_text(
        "calibration_datetime: '2026-10-01T00:00:00Z'\n"
        "points:\n"
        "  - {sample_rate: 14.0e6, frequency: 600.0e6, gain_sigan: 28.0, noise_figure_sensor: 4.0}\n"
        "  - {sample_rate: 14.0e6, frequency: 800.0e6, gain_sigan: 32.0, noise_figure_sensor: 6.0}\n"
    )
    # At 700 MHz the table gives 30 dB of gain and a 5 dB noise figure.
    settings = ChainSettings(
        FREQUENCY, RATE, fft_size=1024, nffts=100, calibration_file=str(calibration)
    )
    chain = measure(
        tmp_path,
        settings,
        tones=[{"frequency_offset": 50 * RATE / 1024, "power": -50.0}],
        noise_figure=5.0,
        gain=30.0,
    )
    mean = chain.m4s_dbm_values()[0, 2]
    assert mean.max() == pytest.approx(-50.0, abs=0.1)
    noise_bins = np.delete(mean, np.arange(512 + 50 - 8, 512 + 50 + 9))
    assert mean_dbm(noise_bins) == pytest.approx(
        ktb_dbm(enbw_hz("flattop", 1024, RATE), 5.0), abs=0.5
    )
    with open(chain.m4s_sink.recordings[0], encoding="utf-8") as meta:
        annotations = json.load(meta)["annotations"]
    (calibration_annotation,) = [
        a for a in annotations if a["scos-core:annotation_type"] == "CalibrationAnnotation"
    ]
    assert calibration_annotation["scos-sensor:gain_sigan"] == pytest.approx(30.0)
    assert calibration_annotation["scos-sensor:noise_figure_sensor"] == pytest.approx(5.0)


def test_time_domain_detectors_read_tone_and_noise_power(tmp_path):
    settings = ChainSettings(
        FREQUENCY, RATE, fft_size=1024, nffts=100, window_size=2000, nwindows=50
    )
    tone = measure(tmp_path / "tone", settings, tones=[{"frequency_offset": 1e6, "power": -40.0}])
    detectors = tone.time_dbm_values()[0]
    # A constant-envelope tone 57 dB above the noise: every detector reads its power.
    for detector in detectors:
        assert mean_dbm(detector) == pytest.approx(-40.0, abs=0.1)
    noise = measure(tmp_path / "noise", settings, noise_figure=3.0)
    mean_power = noise.time_dbm_values()[0, 2]
    assert mean_dbm(mean_power) == pytest.approx(ktb_dbm(RATE, 3.0), abs=0.5)
    assert np.all(np.isfinite(noise.time_dbm_values()))


def test_replayed_recording_gives_the_same_numbers_as_direct_detection(tmp_path):
    settings = ChainSettings(FREQUENCY, RATE, fft_size=256, nffts=50, window_size=500, nwindows=8)
    tones = [{"frequency_offset": 2e6, "power": -60.0}]
    direct = measure(tmp_path / "direct", settings, tones=tones, record_iq=True)
    (recording,) = direct.iq_sink.recordings
    replay = MeasurementChain(
        scos.sigmf_source(recording, "complex"), tmp_path / "replay", settings
    )
    replay.run()
    np.testing.assert_array_equal(replay.m4s_dbm_values(), direct.m4s_dbm_values())
    np.testing.assert_array_equal(replay.time_dbm_values(), direct.time_dbm_values())
    for direct_sink, replay_sink in (
        (direct.m4s_sink, replay.m4s_sink),
        (direct.time_sink, replay.time_sink),
    ):
        with open(direct_sink.recordings[0]) as first, open(replay_sink.recordings[0]) as second:
            original, replayed = json.load(first), json.load(second)
        assert replayed["captures"] == original["captures"]
        assert replayed["annotations"] == original["annotations"]
        assert replayed["global"]["core:sha512"] == original["global"]["core:sha512"]
