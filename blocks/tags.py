"""Stream-tag vocabulary shared by every gr-scos block.

Signal-analyzer sources tag like UHD: ``rx_time`` as (uint64 seconds, double
fraction) since the Unix epoch, ``rx_freq`` in Hz and ``rx_rate`` in samples/s, at
the first sample and wherever one of them changes. Two more tags carry SCOS
annotation state downstream to the SigMF sink, each a PMT dict valid from its
sample until the next tag of the same key:

* ``scos_sensor``: SensorAnnotation properties (Table 44), e.g. ``overload_sigan``;
* ``scos_calibration``: CalibrationAnnotation properties (Table 45).
"""

import math
from datetime import UTC, datetime

import pmt
from gnuradio import gr

RX_TIME = pmt.intern("rx_time")
RX_FREQ = pmt.intern("rx_freq")
RX_RATE = pmt.intern("rx_rate")
SENSOR = pmt.intern("scos_sensor")
CALIBRATION = pmt.intern("scos_calibration")


class RadioTime:
    """An instant as whole Unix seconds plus a fraction, so nanoseconds survive."""

    __slots__ = ("fraction", "seconds")

    def __init__(self, seconds: int, fraction: float = 0.0):
        whole = math.floor(fraction)
        self.seconds = int(seconds) + whole
        self.fraction = float(fraction - whole)

    @classmethod
    def now(cls) -> "RadioTime":
        stamp = datetime.now(UTC).timestamp()
        return cls(int(stamp), stamp - int(stamp))

    @classmethod
    def from_pmt(cls, value: pmt.pmt_base) -> "RadioTime":
        return cls(pmt.to_uint64(pmt.tuple_ref(value, 0)), pmt.to_double(pmt.tuple_ref(value, 1)))

    @classmethod
    def from_iso8601(cls, text: str) -> "RadioTime":
        """Parse an ISO 8601 UTC time such as ``2026-11-21T18:45:53.123456789Z``."""
        stamp = text.strip()
        if not stamp.endswith(("Z", "z")):
            raise ValueError(f"time {text!r} is not UTC (must end in 'Z')")
        stamp = stamp[:-1]
        whole, _, digits = stamp.partition(".")
        try:
            base = datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
        except ValueError as error:
            raise ValueError(f"time {text!r} is not ISO 8601 (YYYY-MM-DDTHH:MM:SS[.f]Z)") from error
        if digits and not digits.isdigit():
            raise ValueError(f"time {text!r} has a malformed fraction of a second")
        return cls(int(base.timestamp()), float(f"0.{digits}") if digits else 0.0)

    def to_pmt(self) -> pmt.pmt_base:
        return pmt.make_tuple(pmt.from_uint64(self.seconds), pmt.from_double(self.fraction))

    def to_iso8601(self) -> str:
        nanoseconds = round(self.fraction * 1e9)
        seconds = self.seconds + nanoseconds // 1_000_000_000
        base = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{base}.{nanoseconds % 1_000_000_000:09d}Z"

    def plus(self, delta_seconds: float) -> "RadioTime":
        whole = math.floor(delta_seconds)
        return RadioTime(self.seconds + whole, self.fraction + (delta_seconds - whole))

    def minus(self, other: "RadioTime") -> float:
        """Seconds from ``other`` to this instant."""
        return (self.seconds - other.seconds) + (self.fraction - other.fraction)

    def __repr__(self) -> str:
        return f"RadioTime({self.to_iso8601()})"


def add_radio_tags(
    block, offset: int, time: RadioTime | None, frequency: float | None, rate: float | None
) -> None:
    """Tag output 0 of ``block`` at ``offset`` the way a radio does after (re)tuning."""
    if time is not None:
        block.add_item_tag(0, offset, RX_TIME, time.to_pmt())
    if frequency is not None:
        block.add_item_tag(0, offset, RX_FREQ, pmt.from_double(float(frequency)))
    if rate is not None:
        block.add_item_tag(0, offset, RX_RATE, pmt.from_double(float(rate)))


def value_to_pmt(value) -> pmt.pmt_base:
    """A tag value of this vocabulary as PMT: a RadioTime, a dict of state, or a number."""
    if isinstance(value, RadioTime):
        return value.to_pmt()
    if isinstance(value, dict):
        return dict_to_pmt(value)
    return pmt.from_double(float(value))


def make_tag(offset: int, key: str, value) -> gr.tag_t:
    """A stream tag, e.g. for a vector source: ``make_tag(0, "rx_freq", 1e9)``."""
    tag = gr.tag_t()
    tag.offset, tag.key, tag.value = offset, pmt.intern(key), value_to_pmt(value)
    return tag


def dict_to_pmt(values: dict) -> pmt.pmt_base:
    """A flat dict of str -> bool/int/float/str as a PMT dict."""
    result = pmt.make_dict()
    for key, value in values.items():
        result = pmt.dict_add(result, pmt.intern(key), pmt.to_pmt(value))
    return result


def pmt_to_dict(value: pmt.pmt_base) -> dict:
    """The inverse of :func:`dict_to_pmt`, with numpy scalars turned into Python ones."""
    converted = pmt.to_python(value)
    return {str(key): _plain(item) for key, item in converted.items()}


def _plain(value):
    return value.item() if hasattr(value, "item") else value
