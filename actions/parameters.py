"""The parameters clients and owners may give an action, and their checks.

Every action parameter has a rule here; a flowgraph parameter without one is
plumbing the runner fills in (device, calibration file, output path, metadata)
and cannot be set by an action. Values come from YAML (action files) or from
``--set KEY=VALUE`` (parsed as YAML too, so ``3.5e9`` and ``[1e9, 2e9]`` work).
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import yaml
from gnuradio.scos.calibration import load_yaml
from gnuradio.scos.windows import WINDOW_NAMES

# Flowgraph parameters the runner sets for every task; never part of an action.
RUNTIME_PARAMETERS = (
    "device",
    "calibration_file",
    "reference",
    "output",
    "global_extensions",
    "sim_tones",
    "sim_bursts",
)
# Action parameters whose flowgraph parameter has another name: GRC reserves
# ``window`` (the gnuradio.fft.window module every FFT flowgraph imports).
FLOWGRAPH_NAMES = {"window": "fft_window"}
ACTION_NAMES = {flowgraph: action for action, flowgraph in FLOWGRAPH_NAMES.items()}
# Per-frequency lists of a stepped action; empty means "the scalar for every step".
PER_FREQUENCY = {"sample_rates": "sample_rate", "gains": "gain", "durations_ms": "duration_ms"}


class ParameterError(ValueError):
    """A parameter value that cannot be used, with the parameter named."""


def _number(value) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ParameterError(f"must be a finite number, got {value!r}")
    return float(value)


def _positive(value) -> float:
    number = _number(value)
    if number <= 0:
        raise ParameterError(f"must be positive, got {value!r}")
    return number


def _count(minimum: int) -> Callable[[object], int]:
    def check(value) -> int:
        number = _number(value)
        if number != int(number) or number < minimum:
            raise ParameterError(f"must be a whole number >= {minimum}, got {value!r}")
        return int(number)

    return check


def _window(value) -> str:
    if value not in WINDOW_NAMES:
        raise ParameterError(f"must be one of {', '.join(WINDOW_NAMES)}, got {value!r}")
    return value


def _list_of(item: Callable[[object], float], what: str, empty: bool) -> Callable:
    def check(value) -> list[float]:
        if not isinstance(value, list | tuple) or (not value and not empty):
            raise ParameterError(
                f"must be a {'' if empty else 'non-empty '}list of {what}, got {value!r}"
            )
        return [item(element) for element in value]

    return check


def _classification(value) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ParameterError(f"must be a non-empty string, got {value!r}")
    return value


@dataclass(frozen=True)
class Rule:
    check: Callable[[object], object]
    unit: str
    description: str


RULES: dict[str, Rule] = {
    "frequency": Rule(_positive, "Hz", "centre frequency"),
    "frequencies": Rule(
        _list_of(_positive, "frequencies in Hz", empty=False),
        "Hz",
        "centre frequencies, one recording each",
    ),
    "sample_rates": Rule(
        _list_of(_positive, "sample rates in S/s", empty=True), "S/s", "sample rate per frequency"
    ),
    "gains": Rule(_list_of(_number, "gains in dB", empty=True), "dB", "gain per frequency"),
    "durations_ms": Rule(
        _list_of(_positive, "durations in ms", empty=True), "ms", "acquisition length per frequency"
    ),
    "nrecords": Rule(_count(1), "records", "detections, one after another"),
    "sample_rate": Rule(_positive, "S/s", "sample rate"),
    "gain": Rule(_number, "dB", "signal-analyzer gain setting"),
    "nskip": Rule(_count(0), "samples", "samples dropped after each tune while the radio settles"),
    "fft_size": Rule(_count(1), "samples", "FFT length"),
    "nffts": Rule(_count(1), "FFTs", "FFTs per M4S detection"),
    "window": Rule(_window, "", "FFT window"),
    "duration_ms": Rule(_positive, "ms", "acquisition length"),
    "window_size": Rule(_count(1), "samples", "samples per time-domain detector window"),
    "nwindows": Rule(_count(1), "windows", "detector windows per record"),
    "classification": Rule(_classification, "", "security classification of the data"),
}


def check(name: str, value):
    """``value`` converted by the rule of ``name``; ParameterError naming it otherwise."""
    rule = RULES.get(name)
    if rule is None:
        raise ParameterError(f"{name}: not an action parameter (known: {', '.join(sorted(RULES))})")
    try:
        return rule.check(value)
    except ParameterError as error:
        raise ParameterError(f"{name}: {error}") from None


def check_together(values: dict) -> None:
    """Checks between parameters: per-frequency lists match ``frequencies``."""
    steps = len(values.get("frequencies", ()))
    for name in PER_FREQUENCY:
        given = values.get(name)
        if given and len(given) != steps:
            raise ParameterError(
                f"{name}: has {len(given)} values for {steps} frequencies (one per frequency, "
                f"or [] for {PER_FREQUENCY[name]} at every frequency)"
            )


def parse_assignment(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` from the command line, VALUE read as YAML (``3.5e9``, ``[1e9, 2e9]``)."""
    key, separator, raw = text.partition("=")
    if not separator or not key.strip():
        raise ParameterError(f"--set {text!r}: expected KEY=VALUE")
    try:
        value = load_yaml(raw) if raw.strip() else raw
    except yaml.YAMLError as error:
        raise ParameterError(f"--set {text!r}: cannot read the value: {error}") from None
    return key.strip(), value
