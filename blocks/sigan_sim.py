"""Simulated signal analyzer: calibrated thermal noise, tones and bursts."""

import math
import threading

import numpy as np
from gnuradio import gr

from . import tags
from .items import use_large_buffers
from .sample_clock import SampleClock

BOLTZMANN = 1.380649e-23  # J/K
# Samples without clipping after which an overload is over.
OVERLOAD_HOLD = 1024
REFERENCE_TEMPERATURE = 290.0  # K, the T0 of the noise-figure definition
# Samples per work() call at most (~2 ms at 14 MS/s, ~10 ms of computing them).
MAX_ITEMS_PER_CALL = 1 << 15


def dbm_to_watts(dbm: float) -> float:
    return 10.0 ** ((dbm - 30.0) / 10.0)


class _Emitter:
    """A carrier at a frequency offset, optionally gated into periodic bursts."""

    BLOCK = 1 << 20

    def __init__(self, spec: dict, kind: str, index: int, sample_rate: float, load_ohms: float):
        where = f"{kind}[{index}]"
        required = {"frequency_offset", "power"} | (
            {"period", "duration"} if kind == "bursts" else set()
        )
        allowed = required | ({"start"} if kind == "bursts" else set())
        if not isinstance(spec, dict):
            raise ValueError(f"{where}: expected a dict with {', '.join(sorted(required))}")
        missing, unknown = required - set(spec), set(spec) - allowed
        if missing or unknown:
            raise ValueError(
                f"{where}: missing {sorted(missing)}, unknown {sorted(unknown)}; "
                f"expected keys {sorted(allowed)}"
            )
        for key, value in spec.items():
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
            ):
                raise ValueError(f"{where}: {key} must be a finite number, got {value!r}")
        self.offset = float(spec["frequency_offset"])
        # Outside +/- half the sample rate the analyzer's anti-alias filter removes it.
        self.in_band = abs(self.offset) < sample_rate / 2
        # A complex exponential of amplitude A carries A^2 / (2 R) watts.
        self.amplitude = math.sqrt(2.0 * load_ohms * dbm_to_watts(spec["power"]))
        self.cycles_per_sample = self.offset / sample_rate
        # Cycles advanced per 2**20 samples, modulo 1 (exact: a power-of-two multiple).
        self.cycles_per_block = (self.cycles_per_sample * self.BLOCK) % 1.0
        self.period = self.duration = self.start = None
        if kind == "bursts":
            self.period, self.duration = float(spec["period"]), float(spec["duration"])
            self.start = float(spec.get("start", 0.0))
            if self.period <= 0 or not 0 < self.duration <= self.period:
                raise ValueError(f"{where}: need period > 0 and 0 < duration <= period")

    def add_to(self, out: np.ndarray, first_sample: int, sample_rate: float) -> None:
        count = len(out)
        # The phase is a function of the sample index alone, so that the samples do
        # not depend on how the scheduler splits the stream into work() calls.
        blocks, within = np.divmod(first_sample + np.arange(count, dtype=np.int64), self.BLOCK)
        cycles = blocks * self.cycles_per_block + within * self.cycles_per_sample
        wave = self.amplitude * np.exp(2j * np.pi * (cycles % 1.0))
        if self.period is not None:
            # Gate in samples, taking an edge within a thousandth of a sample of a
            # sample instant as on it, so that decimal times that fall on whole
            # samples (1.5e-4 s at 1 MS/s) switch at exactly that sample.
            slack = 1e-3
            position = first_sample + np.arange(count) - self.start * sample_rate
            period = self.period * sample_rate
            into = position - period * np.floor((position + slack) / period)
            wave[(position < -slack) | (into >= self.duration * sample_rate - slack)] = 0
        out += wave.astype(np.complex64)


def check_signals(tones=(), bursts=()) -> None:
    """ValueError naming the entry (``tones[0]: ...``) unless every tone and burst is
    well formed; whether it falls in the band depends on each acquisition's rate."""
    for kind, specs in (("tones", tones), ("bursts", bursts)):
        for index, spec in enumerate(specs):
            _Emitter(spec, kind, index, sample_rate=1.0, load_ohms=50.0)


class sigan_sim(gr.sync_block):
    """A signal analyzer that needs no hardware, with known, calibrated signals.

    Output: complex64 volts at the signal-analyzer output, i.e. the reference-point
    signal amplified by ``gain`` dB (use the calibration gain so that the calibrate
    block reads the configured powers back). The reference-point signal is:

    * thermal noise of k * ``temperature`` * ``sample_rate`` watts raised by
      ``noise_figure`` dB (complex Gaussian; off when ``noise`` is False);
    * ``tones``: dicts ``{"frequency_offset": Hz, "power": dBm}``, continuous carriers
      of exactly that power (P = |x|^2 / (2 * ``load_ohms``)) and offset from the
      centre ``frequency``; one outside +/- ``sample_rate`` / 2 is filtered out, as
      by a real analyzer;
    * ``bursts``: dicts ``{"frequency_offset", "power", "period", "duration",
      "start"}`` (s), carriers on for ``duration`` of every ``period`` from ``start``.

    With ``max_input_power`` (dBm at the reference point) set, samples above it are
    clipped like an ADC and the span is tagged ``scos_sensor`` ``overload_sigan``.
    Tags like a radio: ``rx_time`` (from ``start_time``, Unix seconds, or the wall
    clock when the flowgraph starts), ``rx_freq`` and ``rx_rate`` at the first sample and after every retune.
    Identical parameters and ``seed`` give identical samples. With ``paced`` the
    block emits at ``sample_rate`` in real time; otherwise as fast as it can.
    """

    def __init__(
        self,
        frequency: float = 700e6,
        sample_rate: float = 14e6,
        noise_figure: float = 5.0,
        gain: float = 0.0,
        tones=(),
        bursts=(),
        seed: int = 0,
        noise: bool = True,
        max_input_power: float | None = None,
        temperature: float = REFERENCE_TEMPERATURE,
        start_time: float | None = None,
        paced: bool = False,
        load_ohms: float = 50.0,
    ):
        gr.sync_block.__init__(self, name="scos_sigan_sim", in_sig=None, out_sig=[np.complex64])
        use_large_buffers(self, gr.sizeof_gr_complex)
        # Large buffers, but not one huge first call: a short acquisition would wait
        # for (and the sim compute) hundreds of thousands of samples it never uses.
        self.set_max_noutput_items(MAX_ITEMS_PER_CALL)
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate!r}")
        if temperature <= 0:
            raise ValueError(f"temperature must be positive kelvin, got {temperature!r}")
        # Held by work() and every setter; hold it to change several settings at once.
        self.settings_lock = threading.RLock()
        self.sample_rate = float(sample_rate)
        self.frequency = float(frequency)
        self.gain = float(gain)
        self.load_ohms = float(load_ohms)
        self.noise = bool(noise)
        self.temperature = float(temperature)
        self.set_noise_figure(noise_figure)
        self._signals = (("tones", tuple(tones)), ("bursts", tuple(bursts)))
        self._emitters = self._make_emitters(self.sample_rate)
        self._pending_rate: float | None = None
        self.set_max_input_power(max_input_power)
        self._rng = np.random.Generator(np.random.PCG64(seed))
        # rx_time of sample ``_anchor_item``; samples after it follow at ``sample_rate``.
        # Without ``start_time``, the wall clock at the first work() call: a flowgraph
        # may be built well before it starts.
        self._anchor_time = (
            None
            if start_time is None
            else tags.RadioTime(int(start_time), start_time - int(start_time))
        )
        self._anchor_item = 0
        self._clock = SampleClock(self.sample_rate) if paced else None
        self._retag = True
        self._overloaded = False
        self._last_clip = 0  # sample index of the last clipped sample
        self._announce_sensor = True

    def _make_emitters(self, sample_rate: float) -> list[_Emitter]:
        emitters = [
            _Emitter(spec, kind, index, sample_rate, self.load_ohms)
            for kind, specs in self._signals
            for index, spec in enumerate(specs)
        ]
        return [emitter for emitter in emitters if emitter.in_band]

    def set_noise_figure(self, noise_figure: float) -> None:
        """Thermal noise of k * temperature * sample_rate raised by ``noise_figure`` dB."""
        with self.settings_lock:
            self.noise_figure = float(noise_figure)
            noise_watts = (
                BOLTZMANN * self.temperature * self.sample_rate * 10.0 ** (noise_figure / 10.0)
            )
            # E|n|^2 = 2 R P, split evenly between I and Q.
            self._noise_sigma = math.sqrt(2.0 * self.load_ohms * noise_watts / 2.0)

    def set_max_input_power(self, max_input_power: float | None) -> None:
        """Clip above ``max_input_power`` dBm at the reference point (None: never)."""
        with self.settings_lock:
            self._clip_amplitude = (
                None
                if max_input_power is None
                else math.sqrt(2.0 * self.load_ohms * dbm_to_watts(max_input_power))
            )

    def set_frequency(self, frequency: float) -> None:
        """Retune; the next sample is tagged with the new ``rx_freq`` and its ``rx_time``."""
        with self.settings_lock:
            self.frequency = float(frequency)
            self._retag = True

    def restate_tags(self) -> None:
        """Tag the next sample with ``rx_time``, ``rx_freq`` and ``rx_rate`` again."""
        with self.settings_lock:
            self._retag = True

    def set_gain(self, gain: float) -> None:
        """Change the gain from the next sample on, which restates the radio tags."""
        with self.settings_lock:
            self.gain = float(gain)
            self._announce_sensor = True
            self._retag = True

    def set_sample_rate(self, sample_rate: float) -> None:
        """Change the rate from the next sample on, which is tagged with the new
        ``rx_rate``, ``rx_freq`` and its ``rx_time``. The noise follows the rate;
        signals outside the new band are not seen (ValueError for a bad rate)."""
        with self.settings_lock:
            sample_rate = float(sample_rate)
            if not sample_rate > 0:
                raise ValueError(f"sample_rate must be positive, got {sample_rate!r}")
            self._pending_rate = sample_rate

    def _apply_rate(self, first: int) -> None:
        # Called from work(), so that the samples already emitted keep the old rate.
        rate, self._pending_rate = self._pending_rate, None
        if rate == self.sample_rate:
            return
        self._anchor_time = self._anchor_time.plus((first - self._anchor_item) / self.sample_rate)
        self._anchor_item = first
        self.sample_rate = rate
        self._emitters = self._make_emitters(rate)
        self.set_noise_figure(self.noise_figure)
        if self._clock is not None:
            self._clock.restart(rate)
        self._retag = True

    def work(self, input_items, output_items):
        # Settings change between work() calls, never within one: a retune tags the
        # first sample made with the new settings.
        with self.settings_lock:
            out = output_items[0]
            first = self.nitems_written(0)
            if self._anchor_time is None:
                self._anchor_time = tags.RadioTime.now()
            if self._pending_rate is not None:
                self._apply_rate(first)
            count = len(out) if self._clock is None else self._clock.allowance(len(out))
            out = out[:count]
            if self._retag:
                self._retag = False
                time = self._anchor_time.plus((first - self._anchor_item) / self.sample_rate)
                tags.add_radio_tags(self, first, time, self.frequency, self.sample_rate)
            if self.noise:
                gaussian = self._rng.standard_normal(2 * count, dtype=np.float32)
                out[:] = gaussian.view(np.complex64) * np.float32(self._noise_sigma)
            else:
                out[:] = 0
            for emitter in self._emitters:
                emitter.add_to(out, first, self.sample_rate)
            self._clip(out, first)
            if self.gain:
                out *= np.float32(10.0 ** (self.gain / 20.0))
            if self._clock is not None:
                self._clock.emitted(count)
            return count

    def _clip(self, out: np.ndarray, first: int) -> None:
        """Clip like an ADC and tag each change of the overload state at its sample.

        An overload lasts from a clipped sample until ``OVERLOAD_HOLD`` samples pass
        without clipping, so that a signal hovering at the limit is one span, not one
        per sample; it is tagged as ending just after its last clipped sample.
        """
        clipped = np.empty(0, dtype=np.int64)
        if self._clip_amplitude is not None:
            magnitude = np.abs(out)
            over = magnitude > self._clip_amplitude
            if over.any():
                out[over] *= (self._clip_amplitude / magnitude[over]).astype(np.float32)
                clipped = first + np.flatnonzero(over)
        state = self._overloaded
        events = [(first, state)] if self._announce_sensor else []
        if clipped.size:
            previous = np.concatenate(
                ([self._last_clip if state else -2 * OVERLOAD_HOLD], clipped[:-1])
            )
            for start in np.flatnonzero(clipped - previous > OVERLOAD_HOLD):
                if state:
                    events.append((max(int(previous[start]) + 1, first), False))
                events.append((int(clipped[start]), True))
                state = True
            self._last_clip = int(clipped[-1])
        if state and first + len(out) - 1 - self._last_clip >= OVERLOAD_HOLD:
            events.append((max(self._last_clip + 1, first), False))
            state = False
        self._overloaded, self._announce_sensor = state, False
        announced: dict[int, bool] = {}
        for offset, overloaded in events:  # a later event at the same sample wins
            announced[offset] = overloaded
        for offset, overloaded in announced.items():
            sensor_state = {"overload_sigan": overloaded, "gain_setting_sigan": self.gain}
            self.add_item_tag(0, offset, tags.SENSOR, tags.dict_to_pmt(sensor_state))
