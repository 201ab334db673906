"""Sensor calibration data and its lookup by frequency and sample rate.

A calibration file (YAML or JSON) holds the calibration datetime, the reference
point it moves samples to, and points measured at (sample_rate, frequency), each
with CalibrationAnnotation properties (Table 45)::

    calibration_datetime: "2026-10-01T12:00:00Z"
    reference: "antenna terminal"
    points:
      - {sample_rate: 14.0e6, frequency: 700.0e6, gain_sigan: 30.2, noise_figure_sensor: 4.6}
      - {sample_rate: 14.0e6, frequency: 3.5e9,   gain_sigan: 28.7, noise_figure_sensor: 5.1}

The gain from the reference point to the samples is ``gain_preselector + gain_sigan``
(a missing term counts as 0 dB). Lookups interpolate linearly in frequency within a
sample rate, then linearly between the two nearest calibrated sample rates; outside
the calibrated span the nearest edge is used and a warning is logged once.
"""

import bisect
import datetime
import logging
import math
import re
from pathlib import Path

import yaml

logger = logging.getLogger(__name__)

# Table 45 properties; all numbers.
CALIBRATION_PROPERTIES = (
    "gain_sigan",
    "noise_figure_sigan",
    "1db_compression_point_sigan",
    "enbw_sigan",
    "gain_preselector",
    "noise_figure_sensor",
    "1db_compression_point_sensor",
    "enbw_sensor",
    "mean_noise_power_sensor",
)


class _NumberLoader(yaml.SafeLoader):
    """YAML 1.1 reads ``14.0e6`` (no exponent sign) as a string; sensor files are full of them."""


_NumberLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def load_yaml(text: str):
    """Parse YAML with numbers in scientific notation read as floats."""
    return yaml.load(text, Loader=_NumberLoader)


class CalibrationError(ValueError):
    """A calibration file or table that cannot be used; the message says where and why."""


def _utc_text(source: str, moment) -> str | None:
    """``calibration_datetime`` as ISO 8601 UTC with ``Z``, as SigMF requires; a time
    without offset is UTC (YAML may give a datetime or a string)."""
    if moment is None:
        return None
    try:
        if not isinstance(moment, datetime.datetime):
            moment = datetime.datetime.fromisoformat(str(moment))
    except ValueError:
        raise CalibrationError(
            f"{source}: calibration_datetime: not an ISO 8601 time: {moment!r}"
        ) from None
    if moment.tzinfo is not None:
        moment = moment.astimezone(datetime.UTC).replace(tzinfo=None)
    return moment.isoformat() + "Z"


class CalibrationTable:
    """Calibration points indexed by sample rate, then frequency."""

    def __init__(self, document: dict, source: str = "calibration"):
        self.source = source
        if not isinstance(document, dict):
            raise CalibrationError(f"{source}: expected a mapping at the top level")
        unknown = set(document) - {"calibration_datetime", "reference", "points"}
        if unknown:
            raise CalibrationError(f"{source}: unknown key(s) {', '.join(sorted(unknown))}")
        self.calibration_datetime = _utc_text(source, document.get("calibration_datetime"))
        self.reference = str(document.get("reference", "calibration reference point"))
        points = document.get("points")
        if not isinstance(points, list) or not points:
            raise CalibrationError(f"{source}: 'points' must be a non-empty list")
        self.properties = self._property_names(points)
        # {sample_rate: (sorted frequencies, [property values per frequency])}
        self._by_rate: dict[float, tuple[list[float], list[dict[str, float]]]] = {}
        for index, point in enumerate(points):
            rate, frequency, values = self._parse_point(index, point)
            frequencies, rows = self._by_rate.setdefault(rate, ([], []))
            position = bisect.bisect_left(frequencies, frequency)
            if position < len(frequencies) and frequencies[position] == frequency:
                raise CalibrationError(
                    f"{source}: points[{index}] repeats sample_rate {rate:g} and "
                    f"frequency {frequency:g}"
                )
            frequencies.insert(position, frequency)
            rows.insert(position, values)
        self._rates = sorted(self._by_rate)
        self._warned: set[str] = set()

    @classmethod
    def from_file(cls, path: str | Path) -> "CalibrationTable":
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as error:
            raise CalibrationError(
                f"cannot read calibration file {path}: {error.strerror}"
            ) from None
        try:
            document = load_yaml(text)
        except yaml.YAMLError as error:
            raise CalibrationError(f"{path}: not valid YAML: {error}") from None
        return cls(document, source=str(path))

    def _property_names(self, points: list) -> tuple[str, ...]:
        first = points[0] if isinstance(points[0], dict) else {}
        return tuple(name for name in CALIBRATION_PROPERTIES if name in first)

    def _parse_point(self, index: int, point) -> tuple[float, float, dict[str, float]]:
        where = f"{self.source}: points[{index}]"
        if not isinstance(point, dict):
            raise CalibrationError(f"{where}: expected a mapping")
        unknown = set(point) - {"sample_rate", "frequency", *CALIBRATION_PROPERTIES}
        if unknown:
            raise CalibrationError(f"{where}: unknown property {', '.join(sorted(unknown))}")
        missing = {"sample_rate", "frequency", *self.properties} - set(point)
        if missing:
            raise CalibrationError(f"{where}: missing {', '.join(sorted(missing))}")
        extra = set(point) - {"sample_rate", "frequency", *self.properties}
        if extra:
            raise CalibrationError(
                f"{where}: has {', '.join(sorted(extra))} which points[0] lacks; "
                "every point must carry the same properties"
            )
        numbers = {}
        for name, value in point.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise CalibrationError(f"{where}: {name} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise CalibrationError(f"{where}: {name} must be finite, got {value!r}")
            numbers[name] = float(value)
        for name in ("sample_rate", "frequency"):
            if numbers[name] <= 0:
                raise CalibrationError(f"{where}: {name} must be positive")
        rate = numbers.pop("sample_rate")
        frequency = numbers.pop("frequency")
        return rate, frequency, numbers

    def lookup(self, frequency: float, sample_rate: float) -> dict[str, float]:
        """Table 45 properties at (frequency, sample_rate), interpolated."""
        rates = self._rates
        position = bisect.bisect_left(rates, sample_rate)
        if position < len(rates) and rates[position] == sample_rate:
            return self._at_rate(rates[position], frequency)
        if position == 0 or position == len(rates):
            nearest = rates[0] if position == 0 else rates[-1]
            self._warn_once(
                f"sample rate {sample_rate:g} S/s is outside the calibrated rates "
                f"{rates[0]:g}..{rates[-1]:g}; using {nearest:g}"
            )
            return self._at_rate(nearest, frequency)
        low, high = rates[position - 1], rates[position]
        weight = (sample_rate - low) / (high - low)
        below, above = self._at_rate(low, frequency), self._at_rate(high, frequency)
        return {name: below[name] + weight * (above[name] - below[name]) for name in below}

    def gain(self, frequency: float, sample_rate: float) -> float:
        """Gain in dB from the reference point to the samples."""
        values = self.lookup(frequency, sample_rate)
        return values.get("gain_preselector", 0.0) + values.get("gain_sigan", 0.0)

    def noise_figure(self, frequency: float, sample_rate: float) -> float:
        """Noise figure in dB at the reference point (sensor, else signal analyzer)."""
        values = self.lookup(frequency, sample_rate)
        for name in ("noise_figure_sensor", "noise_figure_sigan"):
            if name in values:
                return values[name]
        raise CalibrationError(f"{self.source}: has no noise_figure_sensor or noise_figure_sigan")

    def _at_rate(self, rate: float, frequency: float) -> dict[str, float]:
        frequencies, rows = self._by_rate[rate]
        position = bisect.bisect_left(frequencies, frequency)
        if position < len(frequencies) and frequencies[position] == frequency:
            return dict(rows[position])
        if position == 0 or position == len(frequencies):
            self._warn_once(
                f"frequency {frequency:g} Hz is outside the calibrated span "
                f"{frequencies[0]:g}..{frequencies[-1]:g} Hz at {rate:g} S/s; "
                "using the nearest calibration point"
            )
            return dict(rows[0] if position == 0 else rows[-1])
        low, high = frequencies[position - 1], frequencies[position]
        weight = (frequency - low) / (high - low)
        below, above = rows[position - 1], rows[position]
        return {name: below[name] + weight * (above[name] - below[name]) for name in below}

    def _warn_once(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            logger.warning("%s: %s", self.source, message)
