"""Calibration to the reference point: IQ scaling, or power to dBm."""

import numpy as np
import pmt
from gnuradio import gr

from . import tags, windows
from .calibration import CalibrationTable
from .items import item_type, positive_int, use_large_buffers

# Power below this many watts reads as the floor instead of -inf dBm.
POWER_FLOOR_WATTS = 1e-30
MODES = ("iq", "dbm")


class calibrate(gr.sync_block):
    """Moves samples from the signal-analyzer input to the calibration reference point.

    Mode ``"iq"``: complex64 volts in, complex64 volts out, divided by the amplitude
    gain of the calibration (``10 ** (gain_dB / 20)``).

    Mode ``"dbm"``: float32 vectors of ``vlen`` power values in V^2 (|x|^2, e.g. from
    the time-domain detector, or |FFT|^2 from the M4S detector when ``fft_size`` is
    set) in; float32 dBm at the reference point out, using the power convention
    P = |x|^2 / (2 * ``load_ohms``). With ``fft_size`` > 0 the input is taken to be an
    unnormalised FFT of ``fft_size`` points weighted by ``window``, and the window's
    amplitude correction is applied so that a bin-centred tone of P dBm reads P dBm
    and noise reads its density times the window's ENBW. Zero power reads
    10*log10(1e-30 W) = -270 dBm, never -inf or NaN.

    The gain comes from the calibration file (see ``calibration.py``) at the
    ``frequency`` and ``sample_rate`` given here, then at those of each ``rx_freq`` /
    ``rx_rate`` tag, so a retune picks up its own calibration. Without a file the
    gain is 0 dB. Each time the calibration in use changes, the block tags the output
    with ``scos_calibration`` (the Table 45 properties) for the SigMF sink. All input
    tags are passed through.
    """

    def __init__(
        self,
        mode: str = "dbm",
        vlen: int = 1,
        calibration_file: str = "",
        frequency: float = 0.0,
        sample_rate: float = 1.0,
        fft_size: int = 0,
        window: str = "flattop",
        load_ohms: float = 50.0,
    ):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        vlen = positive_int("vlen", vlen)
        if load_ohms <= 0:
            raise ValueError(f"load_ohms must be positive, got {load_ohms!r}")
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate!r}")
        self.mode = mode
        self.table = CalibrationTable.from_file(calibration_file) if calibration_file else None
        self.frequency = float(frequency)
        self.sample_rate = float(sample_rate)
        # Linear factor from the input's V^2 to watts, before calibration gain.
        self._watts_per_unit = 1.0 / (2.0 * load_ohms)
        if mode == "dbm" and fft_size:
            self._watts_per_unit *= windows.amplitude_correction(windows.taps(window, fft_size))
        item = np.complex64 if mode == "iq" else item_type(np.float32, vlen)
        gr.sync_block.__init__(self, name="scos_calibrate", in_sig=[item], out_sig=[item])
        use_large_buffers(
            self, np.dtype(np.complex64 if mode == "iq" else np.float32).itemsize * vlen
        )
        self._gain_db = 0.0
        self._announced: dict | None = None
        self._calibrated = False  # the calibration is looked up at the first sample

    def work(self, input_items, output_items):
        source, out = input_items[0], output_items[0]
        start = self.nitems_read(0)
        retunes: dict[int, dict[str, float]] = {}
        for tag in self.get_tags_in_range(0, start, start + len(source)):
            key = pmt.symbol_to_string(tag.key)
            if key in ("rx_freq", "rx_rate"):
                retunes.setdefault(tag.offset - start, {})[key] = pmt.to_double(tag.value)
        if not self._calibrated:
            retunes.setdefault(0, {})
        position = 0
        for offset in sorted(retunes):
            self._convert(source[position:offset], out[position:offset])
            self._retune(start + offset, **retunes[offset])
            position = offset
        self._convert(source[position:], out[position:])
        return len(source)

    def _retune(
        self, offset: int, rx_freq: float | None = None, rx_rate: float | None = None
    ) -> None:
        """Look the calibration up again for a new frequency or rate, from ``offset`` on."""
        self._calibrated = True
        if rx_freq is not None:
            self.frequency = rx_freq
        if rx_rate is not None:
            self.sample_rate = rx_rate
        if self.table is None:
            return
        properties = self.table.lookup(self.frequency, self.sample_rate)
        self._gain_db = properties.get("gain_preselector", 0.0) + properties.get("gain_sigan", 0.0)
        if properties != self._announced:
            self._announced = properties
            self.add_item_tag(0, offset, tags.CALIBRATION, tags.dict_to_pmt(properties))

    def _convert(self, source: np.ndarray, out: np.ndarray) -> None:
        if self.mode == "iq":
            np.multiply(source, np.float32(10.0 ** (-self._gain_db / 20.0)), out=out)
            return
        scale = self._watts_per_unit * 10.0 ** (-self._gain_db / 10.0)
        watts = np.multiply(source, scale, dtype=np.float64)
        np.fmax(watts, POWER_FLOOR_WATTS, out=watts)
        np.log10(watts, out=watts)
        np.multiply(watts, 10.0, out=watts)
        np.add(watts, 30.0, out=out, casting="unsafe")
