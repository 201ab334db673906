"""``gr-scos selftest``: measure known simulated signals and check the readings.

The simulated signal analyzer produces a tone of known power in calibrated thermal
noise; the measurement chain must read the tone within 0.1 dB at the right FFT bin
and the noise floor within 0.5 dB of kTB + NF + 10 log10(ENBW).
"""

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gnuradio import scos
from gnuradio.scos import windows
from gnuradio.scos.calibration import CalibrationTable
from gnuradio.scos.sigan_sim import BOLTZMANN, REFERENCE_TEMPERATURE

from .measurement import ChainSettings, MeasurementChain

logger = logging.getLogger(__name__)

TONE_TOLERANCE_DB = 0.1
NOISE_TOLERANCE_DB = 0.5


@dataclass(frozen=True)
class Check:
    name: str
    measured: float
    expected: float
    tolerance: float
    unit: str = "dBm"

    @property
    def passed(self) -> bool:
        return abs(self.measured - self.expected) <= self.tolerance

    def __str__(self) -> str:
        verdict = "ok" if self.passed else "FAIL"
        return (
            f"{self.name:<44} {self.measured:10.3f} {self.unit}  expected {self.expected:10.3f} "
            f"+/- {self.tolerance:g}  {verdict}"
        )


def thermal_noise_dbm(bandwidth_hz: float, noise_figure_db: float) -> float:
    """kTB + NF in dBm for T = 290 K."""
    return 10 * math.log10(BOLTZMANN * REFERENCE_TEMPERATURE * bandwidth_hz) + 30 + noise_figure_db


def run(
    out_dir: Path, settings: ChainSettings, tone_power: float, tone_bin: int, noise_figure: float
) -> list[Check]:
    """Measure a tone ``tone_bin`` bins above the centre, then noise alone; return the checks."""
    gain, sensor_noise_figure = 0.0, noise_figure
    if settings.calibration_file:
        table = CalibrationTable.from_file(settings.calibration_file)
        gain = table.gain(settings.frequency, settings.sample_rate)
        sensor_noise_figure = table.noise_figure(settings.frequency, settings.sample_rate)
    offset = tone_bin * settings.sample_rate / settings.fft_size
    checks = []
    for label, tones in (
        ("tone", [{"frequency_offset": offset, "power": tone_power}]),
        ("noise", []),
    ):
        source = scos.sigan_sim(
            settings.frequency,
            settings.sample_rate,
            noise_figure=sensor_noise_figure,
            gain=gain,
            tones=tones,
            seed=1,
        )
        chain = MeasurementChain(source, out_dir / label, settings)
        chain.run()
        spectrum = chain.m4s_dbm_values()[0, 2]  # fft_mean_power of the first record
        time_mean = chain.time_dbm_values()[0, 2]  # mean_power of the first record's windows
        logger.info(
            "%s recordings: %s", label, chain.m4s_sink.recordings + chain.time_sink.recordings
        )
        if tones:
            peak = int(np.argmax(spectrum))
            checks.append(
                Check(
                    "M4S mean detector, tone peak bin",
                    peak,
                    settings.fft_size // 2 + tone_bin,
                    0,
                    "bin",
                )
            )
            checks.append(
                Check(
                    "M4S mean detector, tone power",
                    float(spectrum[peak]),
                    tone_power,
                    TONE_TOLERANCE_DB,
                )
            )
            tone_and_noise = 10 * math.log10(
                10 ** (tone_power / 10)
                + 10 ** (thermal_noise_dbm(settings.sample_rate, sensor_noise_figure) / 10)
            )
            checks.append(
                Check(
                    "time-domain mean detector, tone + noise",
                    _mean_dbm(time_mean),
                    tone_and_noise,
                    TONE_TOLERANCE_DB,
                )
            )
        else:
            enbw = windows.enbw_hz(settings.window, settings.fft_size, settings.sample_rate)
            checks.append(
                Check(
                    "M4S mean detector, noise floor per bin",
                    _mean_dbm(spectrum),
                    thermal_noise_dbm(enbw, sensor_noise_figure),
                    NOISE_TOLERANCE_DB,
                )
            )
            checks.append(
                Check(
                    "time-domain mean detector, noise power",
                    _mean_dbm(time_mean),
                    thermal_noise_dbm(settings.sample_rate, sensor_noise_figure),
                    NOISE_TOLERANCE_DB,
                )
            )
    return checks


def _mean_dbm(values_dbm: np.ndarray) -> float:
    """The dBm of the mean linear power of ``values_dbm``."""
    return float(10 * np.log10(np.mean(10 ** (values_dbm.astype(np.float64) / 10))))
