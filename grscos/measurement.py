"""The SCOS measurement chain of a signal-analyzer source, as one top block.

    source -+-> stream_to_vector -> window+FFT -> |X|^2 -> M4S -> dBm -> SigMF (m4s)
            +-> time-domain detector -> dBm -> SigMF (power_vs_time)
            +-> [calibrate IQ -> SigMF (iq)]           (with ``record_iq``)

``settings.samples`` samples are measured, or with ``until_end`` everything a
finite source (a replayed recording) gives. Used by ``gr-scos selftest`` and the
accuracy tests; the scheduled actions are GRC flowgraphs built from the same blocks.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gnuradio import blocks, fft, gr, scos
from gnuradio.scos import windows
from gnuradio.scos.items import positive_int


@dataclass(frozen=True)
class ChainSettings:
    frequency: float
    sample_rate: float
    fft_size: int = 1024
    nffts: int = 300
    window: str = "flattop"
    window_size: int = 1000
    nwindows: int = 10
    calibration_file: str = ""
    reference: str = "calibration reference point"

    def __post_init__(self):
        for name in ("fft_size", "nffts", "window_size", "nwindows"):
            positive_int(name, getattr(self, name))
        for name in ("frequency", "sample_rate"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        windows.taps(self.window, 1)  # rejects an unknown window name

    @property
    def samples(self) -> int:
        """Enough samples for one M4S record, rounded up to whole time-domain records."""
        m4s = self.fft_size * self.nffts
        per_record = self.window_size * self.nwindows
        return max(m4s, -(-m4s // per_record) * per_record)


class MeasurementChain(gr.top_block):
    """Measures ``settings.samples`` samples of ``source`` into SigMF recordings under ``out_dir``."""

    def __init__(
        self,
        source: gr.basic_block,
        out_dir: str | Path,
        settings: ChainSettings,
        record_iq: bool = False,
        until_end: bool = False,
    ):
        gr.top_block.__init__(self, "scos_measurement_chain")
        out_dir = Path(out_dir)
        s = settings
        self.source = source
        if until_end:
            self.head = blocks.copy(gr.sizeof_gr_complex)
        else:
            self.head = blocks.head(gr.sizeof_gr_complex, s.samples)
        self.to_vectors = blocks.stream_to_vector(gr.sizeof_gr_complex, s.fft_size)
        self.fft = fft.fft_vcc(s.fft_size, True, windows.taps(s.window, s.fft_size).tolist(), True)
        self.power = blocks.complex_to_mag_squared(s.fft_size)
        self.m4s = scos.m4s_detector(s.fft_size, s.nffts)
        self.m4s_dbm = scos.calibrate(
            "dbm",
            5 * s.fft_size,
            s.calibration_file,
            s.frequency,
            s.sample_rate,
            s.fft_size,
            s.window,
        )
        frequency_detection = {
            "domain": "frequency",
            "fft_size": s.fft_size,
            "nffts": s.nffts,
            "window": s.window,
            "reference": s.reference,
        }
        self.m4s_sink = scos.sigmf_sink(
            str(out_dir / "m4s"), "float", 5 * s.fft_size, frequency_detection
        )
        self.time_detector = scos.time_domain_detector(s.window_size, s.nwindows)
        self.time_dbm = scos.calibrate(
            "dbm", 5 * s.nwindows, s.calibration_file, s.frequency, s.sample_rate
        )
        time_detection = {
            "domain": "time",
            "window_size": s.window_size,
            "nwindows": s.nwindows,
            "reference": s.reference,
        }
        self.time_sink = scos.sigmf_sink(
            str(out_dir / "power_vs_time"), "float", 5 * s.nwindows, time_detection
        )
        self.connect(source, self.head)
        self.connect(
            self.head, self.to_vectors, self.fft, self.power, self.m4s, self.m4s_dbm, self.m4s_sink
        )
        self.connect(self.head, self.time_detector, self.time_dbm, self.time_sink)
        self.iq_sink = None
        if record_iq:
            self.iq_scale = scos.calibrate("iq", 1, s.calibration_file, s.frequency, s.sample_rate)
            self.iq_sink = scos.sigmf_sink(str(out_dir / "iq"), "complex")
            self.connect(self.head, self.iq_scale, self.iq_sink)
        self.settings = settings

    def m4s_dbm_values(self) -> np.ndarray:
        """The M4S recording as (records, 5 detectors, fft_size) dBm."""
        return _read(self.m4s_sink, (5, self.settings.fft_size))

    def time_dbm_values(self) -> np.ndarray:
        """The time-domain recording as (records, 5 detectors, nwindows) dBm."""
        return _read(self.time_sink, (5, self.settings.nwindows))


def _read(sink, shape: tuple[int, int]) -> np.ndarray:
    (meta,) = sink.recordings
    data = np.fromfile(meta.removesuffix(".sigmf-meta") + ".sigmf-data", dtype="<f4")
    return data.reshape(-1, *shape)
