"""Signal-analyzer source: one block for the simulator, a SigMF replay, a USRP or an osmosdr device."""

import json
import logging
import math
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pmt
from gnuradio import gr

from . import tags
from .calibration import CalibrationTable
from .items import use_large_buffers
from .sigan_sim import sigan_sim
from .sigmf_source import SigMFReplayError, sigmf_source

logger = logging.getLogger(__name__)

SPEC_FORMS = (
    "sim",
    "replay:<path to .sigmf-meta>",
    "uhd:<device args>",
    "osmosdr:<device args>",
)

# Longest wait, in seconds, for a USRP or osmosdr device to open in the probe process.
# Absent devices fail within about a second; this only bounds devices that hang (an
# rtl_tcp or SoapyRemote server that does not answer, a wedged USB device). Some USRPs
# (N3xx) take tens of seconds to initialise, hence the generous default.
PROBE_TIMEOUT = 45.0
# The probe also checks that an opened device delivers samples within this many seconds.
PROBE_SAMPLE_WAIT = 5.0

COMMAND_PORT = "command"

_PROBE_SCRIPT = (
    "import importlib, sys; "
    "importlib.import_module(sys.argv[1])._probe_child(sys.argv[2], int(sys.argv[3]))"
)
_PROBE_ANSWER = "SIGAN_PROBE_ANSWER "
_PROBE_FAILURE = "SIGAN_PROBE_FAILURE "
_probed: dict[tuple[str, str, int], dict] = {}  # successful hardware probes of this process
_stuck: list = []  # flowgraphs of a probe process whose device never streamed

_SIM_RANGES = {
    "frequency": (0.0, math.inf),
    "sample_rate": (0.0, math.inf),
    "gain": (-math.inf, math.inf),
    "antennas": [],
}
_SIM_NOISE_FIGURE = 5.0  # dB, the simulator's noise figure without a calibration file


class SiganError(ValueError):
    """A signal analyzer that cannot be used as asked; the message says which and why."""


# --- device specs, ranges and their checks -------------------------------------------


def parse_device(device: str) -> tuple[str, str]:
    """``(kind, args)`` of a device spec: kind is sim, replay, uhd or osmosdr."""
    forms = ", ".join(repr(form) for form in SPEC_FORMS)
    if not isinstance(device, str):
        raise SiganError(f"device must be a string, one of {forms}; got {device!r}")
    kind, _, args = device.strip().partition(":")
    kind, args = kind.strip(), args.strip()
    if kind == "sim" and not args:
        return kind, args
    if kind == "replay" and args:
        return kind, args
    if kind in ("uhd", "osmosdr"):
        return kind, args
    if kind == "sim":
        raise SiganError(f"device {device!r}: the simulator takes no arguments; use 'sim'")
    if kind == "replay":
        raise SiganError(f"device {device!r}: replay needs a recording, 'replay:<path>'")
    raise SiganError(f"unknown signal analyzer {device!r}; valid forms are {forms}")


def _hz(value: float | None) -> str:
    if value is None:
        return "an unrecorded frequency"
    for scale, unit in ((1e9, "GHz"), (1e6, "MHz"), (1e3, "kHz")):
        if abs(value) >= scale:
            return f"{value / scale:.10g} {unit}"
    return f"{value:.10g} Hz"


def _rate(value: float) -> str:
    for scale, unit in ((1e6, "MS/s"), (1e3, "kS/s")):
        if abs(value) >= scale:
            return f"{value / scale:.10g} {unit}"
    return f"{value:.10g} S/s"


def _number(where: str, name: str, value) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SiganError(f"{where}: {name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise SiganError(f"{where}: {name} must be finite, got {value!r}")
    return number


def _inside(value: float, low: float, high: float) -> bool:
    """``low <= value <= high``, forgiving rounding (6e9 vs 6.000000000001e9)."""
    slack = 1e-9 * max(abs(x) for x in (low, high, value) if math.isfinite(x))
    return low - slack <= value <= high + slack


def check_settings(
    ranges: dict,
    frequency: float | None = None,
    sample_rate: float | None = None,
    gain: float | None = None,
    where: str = "signal analyzer",
) -> None:
    """Raise SiganError unless the given settings lie within ``ranges`` (see ``probe``).

    ``None`` skips a setting. The action layer can call this with the ranges of
    ``probe`` to reject a configuration before it builds a flowgraph.
    """
    if frequency is not None:
        frequency = _number(where, "frequency", frequency)
        span = ranges.get("frequency")
        if span is not None and not _inside(frequency, *span):
            raise SiganError(
                f"{where}: frequency {_hz(frequency)} is outside the device's range "
                f"{_hz(span[0])} .. {_hz(span[1])}"
            )
    if sample_rate is not None:
        sample_rate = _number(where, "sample_rate", sample_rate)
        if sample_rate <= 0:
            raise SiganError(f"{where}: sample_rate must be positive, got {sample_rate!r}")
        allowed = ranges.get("sample_rate")
        if isinstance(allowed, list):
            if not any(math.isclose(sample_rate, rate, rel_tol=1e-6) for rate in allowed):
                raise SiganError(
                    f"{where}: sample_rate {_rate(sample_rate)} is not one of the device's "
                    f"rates {', '.join(_rate(rate) for rate in allowed)}"
                )
        elif allowed is not None and not _inside(sample_rate, *allowed):
            raise SiganError(
                f"{where}: sample_rate {_rate(sample_rate)} is outside the device's range "
                f"{_rate(allowed[0])} .. {_rate(allowed[1])}"
            )
    if gain is not None:
        gain = _number(where, "gain", gain)
        low, high = ranges.get("gain", (-math.inf, math.inf))
        if not _inside(gain, low, high):
            if low == high:
                raise SiganError(
                    f"{where}: gain {gain:g} dB requested, but the gain is fixed at {low:g} dB"
                )
            raise SiganError(
                f"{where}: gain {gain:g} dB is outside the device's range {low:g} .. {high:g} dB"
            )


def probe(device: str, channel: int = 0, timeout: float | None = None) -> dict:
    """What ``device`` is and what it accepts, without building a flowgraph.

    Returns ``{"description": str, "frequency": (min, max) Hz, "sample_rate": (min, max)
    or a list of discrete rates in S/s, "gain": (min, max) dB, "antennas": [names]}``.
    The simulator accepts any positive frequency and rate and any gain (the sensor
    definition sets the real limits); a replay accepts only its recording's frequency
    and rate. A USRP or osmosdr device is opened in a separate process that is given
    ``timeout`` seconds (default ``PROBE_TIMEOUT``), so a device that hangs cannot hang
    the caller; an absent device or one that fails to open raises SiganError.
    """
    kind, args = parse_device(device)
    if kind == "sim":
        return {"description": "simulated signal analyzer", **_copy(_SIM_RANGES)}
    if kind == "replay":
        replay = _open_replay(args, paced=False)
        return {"description": _replay_description(replay), **_replay_ranges(replay)}
    channel = int(channel)
    key = (kind, args, channel)
    if key not in _probed:
        _probed[key] = _probe_in_subprocess(device, channel, timeout)
    return _copy(_probed[key])


def _copy(facts: dict) -> dict:
    return {key: list(value) if isinstance(value, list) else value for key, value in facts.items()}


def _probe_in_subprocess(device: str, channel: int, timeout: float | None) -> dict:
    timeout = PROBE_TIMEOUT if timeout is None else float(timeout)
    path = [entry for entry in sys.path if entry]
    if os.environ.get("PYTHONPATH"):
        path.append(os.environ["PYTHONPATH"])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(path))
    command = [sys.executable, "-c", _PROBE_SCRIPT, __name__, device, str(channel)]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, env=env, check=False
        )
    except subprocess.TimeoutExpired:
        raise SiganError(
            f"device '{device}' did not answer within {timeout:g} s "
            "(is it connected, powered and not in use?)"
        ) from None
    except OSError as error:
        raise SiganError(f"device '{device}': cannot start the probe process: {error}") from None
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(_PROBE_ANSWER):
            return _decode(json.loads(line[len(_PROBE_ANSWER) :]))
        if line.startswith(_PROBE_FAILURE):
            raise SiganError(line[len(_PROBE_FAILURE) :])
    last = [line for line in done.stderr.splitlines() if line.strip()][-1:]
    raise SiganError(
        f"device '{device}': the probe process ended with status {done.returncode} without an answer"
        + (f": {last[0].strip()}" if last else "")
    )


def _probe_child(device: str, channel: int) -> None:
    """Entry point of the probe process: open the device, see it stream, print its facts."""
    try:
        kind, args = parse_device(device)
        opener = _open_uhd if kind == "uhd" else _open_osmosdr
        source, facts = opener(args, channel)
        streams = _streams(source, 0 if kind == "uhd" else channel)
    except SiganError as error:
        print(_PROBE_FAILURE + _one_line(error), flush=True)
        sys.exit(1)
    except Exception as error:  # anything a driver throws is a reason to report
        print(_PROBE_FAILURE + f"device '{device}': {_one_line(error)}", flush=True)
        sys.exit(1)
    if not streams:
        print(
            _PROBE_FAILURE + f"device '{device}' opened but delivered no samples within "
            f"{PROBE_SAMPLE_WAIT:g} s (is the server or device really there?)",
            flush=True,
        )
        os._exit(1)  # the driver may be stuck in a read: do not wait for it
    print(_PROBE_ANSWER + json.dumps(_encode(facts)), flush=True)


def _other_ports(source, port: int) -> list[int]:
    """The outputs of a multi-channel source besides ``port``: GNU Radio wants them connected."""
    return [other for other in range(source.output_signature().max_streams()) if other != port]


def _streams(source, port: int) -> bool:
    """Whether ``source`` delivers samples within PROBE_SAMPLE_WAIT seconds.

    Some drivers "open" without a device: osmosdr's rtl_tcp gives a source with
    default ranges when a TCP server accepts the connection but never answers.
    """
    from gnuradio import blocks

    top = gr.top_block()
    head = blocks.head(gr.sizeof_gr_complex, 1024)
    top.connect((source, port), head, blocks.null_sink(gr.sizeof_gr_complex))
    for other in _other_ports(source, port):
        top.connect((source, other), blocks.null_sink(gr.sizeof_gr_complex))
    top.start()
    deadline = time.monotonic() + PROBE_SAMPLE_WAIT
    while head.nitems_written(0) == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    if head.nitems_written(0) == 0:
        # Destroying a running flowgraph stops it and waits for the stuck driver:
        # keep it alive until the process exits.
        _stuck.append(top)
        return False
    top.stop()
    top.wait()
    return True


def _encode(facts: dict) -> dict:
    encoded = dict(facts)
    rates = facts["sample_rate"]
    encoded["sample_rate"] = {"values" if isinstance(rates, list) else "range": list(rates)}
    return encoded


def _decode(encoded: dict) -> dict:
    facts = dict(encoded)
    rates = encoded["sample_rate"]
    facts["sample_rate"] = list(rates["values"]) if "values" in rates else tuple(rates["range"])
    for key in ("frequency", "gain"):
        facts[key] = tuple(encoded[key])
    return facts


def _one_line(error: BaseException) -> str:
    """The message of ``error`` on one line (UHD's span several, with arrows)."""
    words = [word for word in str(error).split() if word != "----->"]
    return " ".join(words) or type(error).__name__


# --- the devices ---------------------------------------------------------------------


def _open_replay(path: str, paced: bool) -> sigmf_source:
    try:
        return sigmf_source(path, "complex", paced=bool(paced))
    except SigMFReplayError as error:
        raise SiganError(f"replay: {error}") from None


def _replay_description(replay: sigmf_source) -> str:
    return f"SigMF replay of {replay.recording.meta_path}"


def _replay_ranges(replay: sigmf_source) -> dict:
    recording = replay.recording
    frequency = recording.captures[0][1]
    return {
        "frequency": None if frequency is None else (frequency, frequency),
        "sample_rate": [recording.sample_rate],
        "gain": (-math.inf, math.inf),
        "antennas": [],
    }


def _open_uhd(args: str, channel: int):
    """(usrp_source, facts) of a USRP, or SiganError with UHD's reason."""
    where = f"device 'uhd:{args}'"
    try:
        from gnuradio import uhd
    except ImportError as error:
        raise SiganError(f"{where}: gr-uhd is not installed ({error})") from None
    try:
        source = uhd.usrp_source(
            args, uhd.stream_args(cpu_format="fc32", args="", channels=[int(channel)])
        )
        frequencies = source.get_freq_range(0)
        rates = source.get_samp_rates()
        gains = source.get_gain_range(0)
        antennas = [str(name) for name in source.get_antennas(0)]
    except (RuntimeError, ValueError, IndexError, KeyError) as error:
        raise SiganError(f"{where}: cannot open the USRP: {_one_line(error)}") from None
    facts = {
        "description": _uhd_description(source, args),
        "frequency": (frequencies.start(), frequencies.stop()),
        "sample_rate": (rates.start(), rates.stop()),
        "gain": (gains.start(), gains.stop()),
        "antennas": antennas,
    }
    return source, facts


def _uhd_description(source, args: str) -> str:
    try:
        info = dict(source.get_usrp_info(0))
    except Exception:  # the description is a courtesy; the device works without it
        info = {}
    model = info.get("mboard_id") or "USRP"
    if not model.upper().startswith("USRP"):
        model = f"USRP {model}"
    serial = info.get("mboard_serial")
    frontend = info.get("rx_subdev_name") or info.get("rx_id")
    return " ".join(
        part
        for part in (
            model,
            f"serial {serial}" if serial else "",
            f"({frontend})" if frontend else "",
            "" if serial else f"args '{args}'",
        )
        if part
    )


def _open_osmosdr(args: str, channel: int):
    """(osmosdr source, facts) of an osmosdr device, or SiganError with its reason."""
    where = f"device 'osmosdr:{args}'"
    try:
        import osmosdr
    except ImportError as error:
        raise SiganError(f"{where}: gr-osmosdr is not installed ({error})") from None
    try:
        source = osmosdr.source(args)
    except (RuntimeError, ValueError, TypeError) as error:
        raise SiganError(f"{where}: cannot open the device: {_one_line(error)}") from None
    channel = int(channel)
    if not 0 <= channel < source.get_num_channels():
        raise SiganError(
            f"{where}: channel {channel} does not exist; the device has "
            f"{source.get_num_channels()} channel(s)"
        )
    try:
        frequencies = _osmosdr_ranges(source.get_freq_range(channel))
        rates = _osmosdr_ranges(source.get_sample_rates())
        gains = _osmosdr_ranges(source.get_gain_range(channel))
        antennas = [str(name) for name in source.get_antennas(channel)]
    except (RuntimeError, ValueError, TypeError) as error:
        raise SiganError(f"{where}: cannot read the device's ranges: {_one_line(error)}") from None
    if not frequencies or not rates:
        raise SiganError(f"{where}: the device reports no frequency or sample-rate range")
    if all(start == stop for start, stop, _ in rates):
        sample_rate = sorted({start for start, _, _ in rates})
    else:
        sample_rate = (min(r[0] for r in rates), max(r[1] for r in rates))
    facts = {
        "description": f"osmosdr device '{args}'" if args else "osmosdr device (first found)",
        "frequency": (min(r[0] for r in frequencies), max(r[1] for r in frequencies)),
        "sample_rate": sample_rate,
        # A device without gain control (an IQ file) has a fixed gain of 0 dB.
        "gain": (min(r[0] for r in gains), max(r[1] for r in gains)) if gains else (0.0, 0.0),
        "antennas": antennas,
    }
    return source, facts


def _osmosdr_ranges(meta) -> list[tuple[float, float, float]]:
    """The (start, stop, step) entries of an osmosdr meta_range_t.

    Its Python binding cannot list the entries, only print them, "(start[, stop][, step])"
    per line with six significant digits; ``clip`` snaps each printed number back
    to the exact value the driver holds.
    """
    entries = []
    for line in meta.to_pp_string().splitlines():
        text = line.strip().strip("()")
        if not text:
            continue
        numbers = [float(item) for item in text.split(",")]
        start, stop = numbers[0], numbers[1] if len(numbers) > 1 else numbers[0]
        step = numbers[2] if len(numbers) > 2 else 0.0
        entries.append((meta.clip(start, False), meta.clip(stop, False), step))
    return entries


class _host_clock_tagger(gr.sync_block):
    """Pass-through that tags an untagged device stream like UHD does.

    ``rx_time`` is the host clock at the first sample (the time of the first
    ``work`` call less the duration of the samples it was given), then advances by
    samples / rate, so it is as good as the host clock and blind to dropped samples.
    ``rx_time``, ``rx_freq`` and ``rx_rate`` go on the first sample and on the first
    sample of the ``work`` call after each ``retune``. Upstream tags are dropped.
    """

    def __init__(self, frequency: float, sample_rate: float, clock=tags.RadioTime.now):
        gr.sync_block.__init__(
            self, name="scos_host_clock_tagger", in_sig=[np.complex64], out_sig=[np.complex64]
        )
        self.set_tag_propagation_policy(gr.TPP_DONT)
        self._lock = threading.Lock()
        self._frequency = float(frequency)
        self._rate = float(sample_rate)
        self._clock = clock
        self._pending = True
        self._anchor: tuple[int, tags.RadioTime, float] | None = None  # offset, time, rate

    def retune(self, frequency: float | None = None, sample_rate: float | None = None) -> None:
        """Tag the next samples with this frequency and/or rate (and their rx_time)."""
        with self._lock:
            if frequency is not None:
                self._frequency = float(frequency)
            if sample_rate is not None:
                self._rate = float(sample_rate)
            self._pending = True

    def work(self, input_items, output_items):
        samples = input_items[0]
        count = len(samples)
        output_items[0][:count] = samples
        first = self.nitems_written(0)
        with self._lock:
            pending, frequency, rate = self._pending, self._frequency, self._rate
            self._pending = False
        if self._anchor is None:
            self._anchor = (first, self._clock().plus(-count / rate), rate)
        if pending:
            offset, stamp, anchor_rate = self._anchor
            stamp = stamp.plus((first - offset) / anchor_rate)
            if rate != anchor_rate:
                self._anchor = (first, stamp, rate)
            tags.add_radio_tags(self, first, stamp, frequency, rate)
        return count


# --- the block -------------------------------------------------------------------------


class _command_port(gr.basic_block):
    """The ``command`` message input of a sigan_source (a hier block has no message
    handler of its own). A command that fails is logged and kept in ``errors``."""

    def __init__(self, apply):
        gr.basic_block.__init__(self, name="scos_sigan_command", in_sig=None, out_sig=None)
        self._apply = apply
        self.errors: list[str] = []
        self.message_port_register_in(pmt.intern(COMMAND_PORT))
        self.set_msg_handler(pmt.intern(COMMAND_PORT), self._handle)

    def _handle(self, message) -> None:
        try:
            self._apply(tags.pmt_to_dict(message))
        except (ValueError, RuntimeError) as error:
            logger.error("signal analyzer command failed: %s", _one_line(error))
            self.errors.append(_one_line(error))


class sigan_source(gr.hier_block2):
    """The signal analyzer of a flowgraph, whichever device it is.

    No input. Output: complex64 volts at the signal-analyzer output (P = |x|^2 /
    (2 * 50 ohm)), tagged like UHD: ``rx_time`` (uint64 seconds, double fraction since
    the Unix epoch), ``rx_freq`` (Hz) and ``rx_rate`` (S/s) at the first sample and
    after every retune.

    ``device`` says which signal analyzer it is:

    * ``"sim"``: the simulator (``sigan_sim``): thermal noise, ``sim_tones`` and
      ``sim_bursts`` (dicts as for ``sigan_sim``, powers in dBm at the reference
      point), ``seed``. It models a device whose samples are the reference-point
      signal amplified by the calibration gain: with ``calibration_file`` the gain,
      noise figure and compression point (``1db_compression_point_sigan`` less
      ``gain_preselector``; clipping is tagged ``overload_sigan``) come from the
      table at the current frequency and sample rate and follow retunes, and ``gain``
      is only recorded; without one the gain is ``gain`` and the noise figure 5 dB.
      ``rx_time`` is the wall clock at construction.
    * ``"replay:<path>"``: a SigMF recording (``sigmf_source``) whose samples are
      already calibrated volts. The recording decides frequency and sample rate:
      ``frequency`` / ``sample_rate`` of 0 accept it, any other value must match
      its first capture; ``gain`` is ignored. Ends at the end of the recording.
    * ``"uhd:<device args>"``: a USRP through gr-uhd (``channel``, ``antenna``).
      UHD tags the stream itself, and after an overflow it tags ``rx_time`` again:
      the SigMF sink turns that into a capture break and counts it. The device
      clock is set to the host clock when it has not been set (GPSDO, PPS) already.
    * ``"osmosdr:<device args>"``: an RTL-SDR, HackRF, Airspy, ... through gr-osmosdr
      (``channel``, ``antenna``). osmosdr does not tag, so the block adds the tags
      with the host clock (see ``_host_clock_tagger``); osmosdr reports no
      overflows, so dropped samples go unnoticed and ``rx_time`` falls behind.

    Message input ``command``: a dict with any of ``freq`` (Hz), ``rate`` (S/s) and
    ``gain`` (dB), as for gr-uhd's command port, applied like the setters (rate, gain,
    then frequency); used by ``step_tuner`` to retune while the flowgraph runs.

    ``paced`` makes the simulator and the replay keep to the sample rate in real time.
    ``calibration_file`` only affects the simulator: for other devices the
    ``calibrate`` block downstream applies it.

    Frequency, sample rate and gain are checked against the device's ranges
    (``self.ranges``, also available without a flowgraph from ``probe``) in the
    constructor and in the setters; a bad value, a bad device spec or a device that
    is absent or fails to open raises ``SiganError`` (a ``ValueError``) naming the
    device and the reason. ``self.description`` says what the device is;
    ``self.frequency``, ``self.sample_rate`` and ``self.gain`` hold the settings in
    use (for hardware, as the device set them).
    """

    probe = staticmethod(probe)

    def __init__(
        self,
        device: str = "sim",
        frequency: float = 700e6,
        sample_rate: float = 14e6,
        gain: float = 0.0,
        calibration_file: str = "",
        sim_tones=(),
        sim_bursts=(),
        seed: int = 0,
        paced: bool = False,
        channel: int = 0,
        antenna: str = "",
    ):
        gr.hier_block2.__init__(
            self,
            "scos_sigan_source",
            gr.io_signature(0, 0, 0),
            gr.io_signature(1, 1, gr.sizeof_gr_complex),
        )
        self.kind, self.args = parse_device(device)
        self.device = device.strip()
        self._where = self.kind if self.kind in ("sim", "replay") else f"device '{self.device}'"
        self.channel = int(channel)
        self.antenna = str(antenna or "")
        frequency = _number(self._where, "frequency", frequency)
        sample_rate = _number(self._where, "sample_rate", sample_rate)
        gain = _number(self._where, "gain", gain)
        if self.channel < 0:
            raise SiganError(f"{self._where}: channel must be >= 0, got {channel!r}")
        if self.kind == "sim":
            self._build_sim(
                frequency, sample_rate, gain, calibration_file, sim_tones, sim_bursts, seed, paced
            )
        elif self.kind == "replay":
            self._build_replay(frequency, sample_rate, gain, paced)
        else:
            self._build_hardware(frequency, sample_rate, gain)
        self.message_port_register_hier_in(COMMAND_PORT)
        self._commands = _command_port(self.command)
        self.msg_connect(self, COMMAND_PORT, self._commands, COMMAND_PORT)

    def command(self, settings: dict) -> None:
        """Apply a ``command`` message: ``rate``, ``gain`` and ``freq``, each optional.

        The next samples carry ``rx_freq``, ``rx_rate`` and ``rx_time`` again, so that
        ``step_tuner`` sees when it took effect: the simulator and osmosdr devices
        restate them for any command, UHD for every tune (``freq``).
        """
        unknown = set(settings) - {"freq", "rate", "gain"}
        if unknown:
            raise SiganError(f"{self._where}: unknown command key(s) {', '.join(sorted(unknown))}")
        if "rate" in settings:
            self.set_sample_rate(settings["rate"])
        if "gain" in settings:
            self.set_gain(settings["gain"])
        if "freq" in settings:
            self.set_frequency(settings["freq"])

    @property
    def command_errors(self) -> list[str]:
        """Why ``command`` messages failed, oldest first."""
        return list(self._commands.errors)

    # --- simulator ---------------------------------------------------------------------

    def _build_sim(
        self, frequency, sample_rate, gain, calibration_file, tones, bursts, seed, paced
    ):
        self._calibration = None
        self.description = "simulated signal analyzer"
        if calibration_file:
            try:
                self._calibration = CalibrationTable.from_file(calibration_file)
            except ValueError as error:
                raise SiganError(f"sim: {error}") from None
            self.description += f" calibrated by {calibration_file}"
        self.ranges = _copy(_SIM_RANGES)
        self._check_sim(frequency, sample_rate, gain)
        self.frequency, self.sample_rate, self.gain = frequency, sample_rate, gain
        self._sim_options = {
            "tones": tones,
            "bursts": bursts,
            "seed": int(seed),
            "paced": bool(paced),
        }
        self._sim = self._make_sim()
        self.connect(self._sim, self)

    def _check_sim(self, frequency=None, sample_rate=None, gain=None) -> None:
        if frequency is not None and not _number("sim", "frequency", frequency) > 0:
            raise SiganError(f"sim: frequency must be positive, got {_hz(frequency)}")
        check_settings(self.ranges, frequency, sample_rate, gain, where="sim")

    def _sim_device(self) -> tuple[float, float, float | None]:
        """Gain (dB), noise figure (dB) and max input power (dBm) of the simulated device."""
        if self._calibration is None:
            return self.gain, _SIM_NOISE_FIGURE, None
        try:
            table = self._calibration
            values = table.lookup(self.frequency, self.sample_rate)
            gain = table.gain(self.frequency, self.sample_rate)
            noise_figure = table.noise_figure(self.frequency, self.sample_rate)
        except ValueError as error:
            raise SiganError(f"sim: {error}") from None
        compression = values.get("1db_compression_point_sigan")
        if compression is not None:
            compression -= values.get("gain_preselector", 0.0)
        return gain, noise_figure, compression

    def _make_sim(self) -> sigan_sim:
        gain, noise_figure, max_input_power = self._sim_device()
        try:
            return sigan_sim(
                frequency=self.frequency,
                sample_rate=self.sample_rate,
                noise_figure=noise_figure,
                gain=gain,
                max_input_power=max_input_power,
                **self._sim_options,
            )
        except ValueError as error:
            raise SiganError(f"sim: {error}") from None

    def _recalibrate_sim(self) -> None:
        if self._calibration is None:
            return
        gain, noise_figure, max_input_power = self._sim_device()
        self._sim.set_noise_figure(noise_figure)
        self._sim.set_max_input_power(max_input_power)
        if gain != self._sim.gain:
            self._sim.set_gain(gain)

    # --- replay ------------------------------------------------------------------------

    def _build_replay(self, frequency, sample_rate, gain, paced):
        self._replay = _open_replay(self.args, paced)
        self.description = _replay_description(self._replay)
        self.ranges = _replay_ranges(self._replay)
        recording = self._replay.recording
        recorded_frequency = recording.captures[0][1]
        self.frequency, self.sample_rate, self.gain = (
            recorded_frequency,
            recording.sample_rate,
            gain,
        )
        self._check_replay(frequency, sample_rate)
        self.connect(self._replay, self)

    def _check_replay(self, frequency: float, sample_rate: float) -> None:
        path = self._replay.recording.meta_path
        if frequency and (
            self.frequency is None or not math.isclose(frequency, self.frequency, rel_tol=1e-9)
        ):
            raise SiganError(
                f"replay: recording {path} was made at {_hz(self.frequency)}, "
                f"not the requested {_hz(frequency)}"
            )
        if sample_rate and not math.isclose(sample_rate, self.sample_rate, rel_tol=1e-9):
            raise SiganError(
                f"replay: recording {path} was made at {_rate(self.sample_rate)}, "
                f"not the requested {_rate(sample_rate)}"
            )

    def _refuse_replay_change(self, name: str, old, new) -> None:
        raise SiganError(
            f"replay: cannot change the {name} of recording {self._replay.recording.meta_path} "
            f"({old} requested as {new})"
        )

    # --- USRP and osmosdr ------------------------------------------------------------

    def _build_hardware(self, frequency, sample_rate, gain):
        facts = probe(self.device, self.channel)
        self.description = facts.pop("description")
        self.ranges = facts
        check_settings(self.ranges, frequency, sample_rate, gain, where=self._where)
        if self.antenna and self.antenna not in self.ranges["antennas"]:
            raise SiganError(
                f"{self._where}: antenna {self.antenna!r} is not one of "
                f"{', '.join(self.ranges['antennas']) or 'none'}"
            )
        opener = _open_uhd if self.kind == "uhd" else _open_osmosdr
        self._radio = opener(self.args, self.channel)[0]
        # The Python blocks downstream keep up with the device only in large chunks.
        port = 0 if self.kind == "uhd" else self.channel  # UHD streams only that channel
        use_large_buffers(self._radio, gr.sizeof_gr_complex, port)
        try:
            if self.kind == "uhd":
                self._setup_uhd(frequency, sample_rate, gain)
            else:
                self._setup_osmosdr(frequency, sample_rate, gain)
        except RuntimeError as error:
            raise SiganError(f"{self._where}: {_one_line(error)}") from None

    def _setup_uhd(self, frequency, sample_rate, gain):
        from gnuradio import uhd

        radio = self._radio
        if self.antenna:
            radio.set_antenna(self.antenna, 0)
        self._set_rate(sample_rate)
        self._set_frequency(frequency)
        self._set_gain(gain)
        # rx_time counts from the device clock: make it Unix time unless a GPSDO or a
        # PPS setup has done so already (a device clock starts at 0 on power-up).
        if radio.get_time_now().get_real_secs() < 1e9:
            now = tags.RadioTime.now()
            radio.set_time_now(uhd.time_spec(now.seconds, now.fraction), uhd.ALL_MBOARDS)
        self.connect(radio, self)

    def _setup_osmosdr(self, frequency, sample_rate, gain):
        from gnuradio import blocks

        others = _other_ports(self._radio, self.channel)
        self._set_rate(sample_rate)
        self._set_frequency(frequency)
        if self.ranges["gain"][0] != self.ranges["gain"][1]:
            self._radio.set_gain_mode(False, self.channel)
        self._set_gain(gain)
        if self.antenna:
            self._radio.set_antenna(self.antenna, self.channel)
        self._tagger = _host_clock_tagger(self.frequency, self.sample_rate)
        use_large_buffers(self._tagger, gr.sizeof_gr_complex)
        self.connect((self._radio, self.channel), self._tagger, self)
        self._unused = [blocks.null_sink(gr.sizeof_gr_complex) for _ in range(len(others))]
        for other, sink in zip(others, self._unused, strict=True):
            self.connect((self._radio, other), sink)

    def _set_rate(self, sample_rate: float) -> None:
        radio = self._radio
        if self.kind == "uhd":
            radio.set_samp_rate(sample_rate)
            actual = radio.get_samp_rate()
        else:
            radio.set_sample_rate(sample_rate)
            actual = radio.get_sample_rate()
        if not math.isclose(actual, sample_rate, rel_tol=1e-6):
            logger.warning(
                "%s: asked for %s, the device runs at %s",
                self._where,
                _rate(sample_rate),
                _rate(actual),
            )
        self.sample_rate = actual

    def _set_frequency(self, frequency: float) -> None:
        radio = self._radio
        if self.kind == "uhd":
            from gnuradio import uhd

            radio.set_center_freq(uhd.tune_request(frequency), 0)
            actual = radio.get_center_freq(0)
        else:
            radio.set_center_freq(frequency, self.channel)
            actual = radio.get_center_freq(self.channel)
        if abs(actual - frequency) > 1.0:
            logger.warning(
                "%s: asked for %s, tuned to %s", self._where, _hz(frequency), _hz(actual)
            )
        self.frequency = actual

    def _set_gain(self, gain: float) -> None:
        if self.ranges["gain"][0] != self.ranges["gain"][1]:
            if self.kind == "uhd":
                self._radio.set_gain(gain, 0)
            else:
                self._radio.set_gain(gain, self.channel)
        self.gain = gain

    # --- GRC callbacks ------------------------------------------------------------------

    def set_frequency(self, frequency: float) -> None:
        """Retune; the next samples carry the new ``rx_freq`` and their ``rx_time``."""
        if self.kind == "replay":
            frequency = _number(self._where, "frequency", frequency)
            if frequency and (
                self.frequency is None or not math.isclose(frequency, self.frequency, rel_tol=1e-9)
            ):
                self._refuse_replay_change("frequency", _hz(self.frequency), _hz(frequency))
            return
        if self.kind == "sim":
            self._check_sim(frequency=frequency)
            with self._sim.settings_lock:  # no samples made with half the new settings
                self.frequency = float(frequency)
                self._recalibrate_sim()
                self._sim.set_frequency(self.frequency)
            return
        check_settings(self.ranges, frequency=frequency, where=self._where)
        self._set_frequency(float(frequency))
        if self.kind == "osmosdr":
            self._tagger.retune(frequency=self.frequency)

    def set_gain(self, gain: float) -> None:
        """Set the gain (dB); with a calibrated simulator it is only recorded."""
        if self.kind == "replay":
            gain = _number(self._where, "gain", gain)
            if gain != self.gain:
                self._refuse_replay_change("gain", f"{self.gain:g} dB", f"{gain:g} dB")
            return
        check_settings(self.ranges, gain=gain, where=self._where)
        if self.kind == "sim":
            self.gain = float(gain)
            if self._calibration is None:
                self._sim.set_gain(self.gain)
            else:
                self._sim.restate_tags()
            return
        self._set_gain(float(gain))
        if self.kind == "osmosdr":
            self._tagger.retune()

    def set_sample_rate(self, sample_rate: float) -> None:
        """Change the sample rate; the next samples carry the new ``rx_rate``. A replay
        cannot change it."""
        if self.kind == "replay":
            sample_rate = _number(self._where, "sample_rate", sample_rate)
            if sample_rate and not math.isclose(sample_rate, self.sample_rate, rel_tol=1e-9):
                self._refuse_replay_change(
                    "sample rate", _rate(self.sample_rate), _rate(sample_rate)
                )
            return
        check_settings(self.ranges, sample_rate=sample_rate, where=self._where)
        sample_rate = float(sample_rate)
        if self.kind == "sim":
            if sample_rate == self.sample_rate:
                return
            with self._sim.settings_lock:
                try:
                    self._sim.set_sample_rate(sample_rate)
                except ValueError as error:
                    raise SiganError(f"sim: {error}") from None
                self.sample_rate = sample_rate
                self._recalibrate_sim()
            return
        self._set_rate(sample_rate)
        if self.kind == "osmosdr":
            self._tagger.retune(sample_rate=self.sample_rate)
