"""SigMF sink: writes SCOS SigMF recordings as samples arrive."""

import hashlib
import heapq
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pmt
from gnuradio import gr

from . import tags, windows
from .items import item_type, positive_int
from .m4s_detector import FREQUENCY_DETECTORS
from .time_domain_detector import TIME_DETECTORS

logger = logging.getLogger(__name__)

SIGMF_VERSION = "1.2.0"
SCOS_EXTENSION_VERSION = "v1.0.0"
RECORDER = "gr-scos"
INPUT_TYPES = {"complex": (np.complex64, "cf32_le"), "float": (np.float32, "rf32_le")}
DETECTION_KEYS = {
    "frequency": {"fft_size", "nffts", "window"},
    "time": {"window_size", "nwindows"},
}
SAMPLE_START = "core:sample_start"
# The annotation each kind of state tag becomes (scos_calibration, scos_sensor).
STATE_ANNOTATIONS = {"calibration": "CalibrationAnnotation", "sensor": "SensorAnnotation"}


class _Spill:
    """Records of one kind, in sample_start order, kept in a file instead of memory."""

    def __init__(self, path: str):
        self.path = path
        self._file = open(path, "w+", encoding="utf-8")

    def append(self, record: dict) -> None:
        self._file.write(json.dumps(record, separators=(",", ":")) + "\n")

    def __iter__(self) -> Iterator[dict]:
        self._file.flush()
        self._file.seek(0)
        return (json.loads(line) for line in self._file)

    def discard(self) -> None:
        self._file.close()
        os.unlink(self.path)


class _Span:
    """An annotation that lasts until the state it describes changes."""

    def __init__(self, start: int, properties: dict):
        self.start = start
        self.properties = properties


class _Recording:
    """One .sigmf-data/.sigmf-meta pair being written."""

    SPILLS = ("captures", "events", "calibration", "sensor")

    def __init__(self, base: str):
        self.base = base
        self.data_path = base + ".sigmf-data"
        self.meta_path = base + ".sigmf-meta"
        Path(self.data_path).parent.mkdir(parents=True, exist_ok=True)
        self.data = open(self.data_path, "wb")
        self.sha512 = hashlib.sha512()
        self.samples = 0
        self.first_item: int | None = None
        self.start_time: tags.RadioTime | None = None
        self.spills = {name: _Spill(f"{self.meta_path}.{name}.part") for name in self.SPILLS}
        self.open_spans: dict[str, _Span] = {}
        self.namespaces: set[str] = {"core"}

    def add(self, spill: str, record: dict) -> None:
        self.namespaces.update(key.split(":", 1)[0] for key in record if ":" in key)
        self.spills[spill].append(record)

    def open_span(self, kind: str, annotation_type: str, state: dict) -> None:
        self.close_span(kind)
        # Tables 44 and 45: both kinds of state are scos-sensor properties.
        properties = {f"scos-sensor:{key}": value for key, value in state.items()}
        properties["scos-core:annotation_type"] = annotation_type
        self.open_spans[kind] = _Span(self.samples, properties)

    def close_span(self, kind: str) -> None:
        span = self.open_spans.pop(kind, None)
        if span is not None and self.samples > span.start:
            record = {SAMPLE_START: span.start, "core:sample_count": self.samples - span.start}
            self.add(kind, record | span.properties)

    def annotations(self) -> Iterator[dict]:
        streams = [self.spills[name] for name in ("events", "calibration", "sensor")]
        return heapq.merge(*streams, key=lambda record: record[SAMPLE_START])


class sigmf_sink(gr.sync_block):
    """Writes the input stream as SigMF recordings with SCOS (Annex A) metadata.

    Input: complex64 samples (``input_type="complex"``, written as cf32_le) or float32
    vectors of ``vlen`` (``"float"``, written as rf32_le), e.g. the dBm output of the
    M4S or time-domain detector. Output: ``<path>.sigmf-data``, written as samples
    arrive with its SHA-512 computed on the way, and ``<path>.sigmf-meta``, written
    when the flowgraph stops (memory stays flat: captures and annotations are
    spilled to ``.part`` files beside the recording and merged at the end).

    Metadata: ``core:`` global (datatype, sample_rate, version, recorder, sha512,
    extensions listing every namespace used), ``scos-acquisition:start_time`` and
    ``end_time`` by the radio's clock, plus ``global_extensions`` (keys
    ``namespace:property``, e.g. ``scos-sensor:sensor``); a capture (frequency,
    datetime) at the start and wherever ``rx_freq`` changes or ``rx_time`` jumps
    (an overflow), the jump annotated with the samples lost; CalibrationAnnotation
    and SensorAnnotation spans from ``scos_calibration`` / ``scos_sensor`` tags; and,
    with ``detection``, one FrequencyDomainDetection or TimeDomainDetection
    annotation per detector per input vector, with the frequency or time axis.

    ``detection`` describes detector vectors: ``{"domain": "frequency", "fft_size",
    "nffts", "window"}`` for the M4S detector or ``{"domain": "time",
    "window_size", "nwindows"}`` for the time-domain detector, plus ``units``
    (default "dBm") and ``reference`` (e.g. "antenna terminal").

    A change of ``rx_rate`` starts a new recording (SigMF has one sample rate per
    recording), as does a change of ``rx_freq`` with ``split_on_retune``; recordings
    after the first are named ``<path>-001``, ``<path>-002``, ... (with
    ``split_on_retune``, every recording is numbered from ``-000``). Each finished
    recording's metadata path is listed in ``self.recordings`` and passed to
    ``on_recording`` (a callable, e.g. the runner's progress reporter), the last one
    included; messages could not carry it, as the flowgraph is stopping when the
    last recording is finished. A stream without samples writes nothing.
    ``finished`` (a ``threading.Event``) is set when the sink has ended and its last
    recording is written: the runner then stops the flowgraph, rather than wait for
    the sources upstream to fill their buffers before they notice.
    """

    def __init__(
        self,
        path: str,
        input_type: str = "complex",
        vlen: int = 1,
        detection: dict | None = None,
        global_extensions: dict | None = None,
        description: str = "",
        split_on_retune: bool = False,
        sample_rate: float = 0.0,
        frequency: float | None = None,
        on_recording: Callable[[str], None] | None = None,
    ):
        if input_type not in INPUT_TYPES:
            raise ValueError(f"input_type must be one of {', '.join(INPUT_TYPES)}")
        vlen = positive_int("vlen", vlen)
        if input_type == "complex" and vlen != 1:
            raise ValueError(f"vlen must be 1 for complex input, got {vlen!r}")
        base = str(path)
        for suffix in (".sigmf-meta", ".sigmf-data", ".sigmf"):
            base = base.removesuffix(suffix)
        if not base or base.endswith("/"):
            raise ValueError(f"path must name a recording, got {path!r}")
        self.base = base
        self.vlen = int(vlen)
        self.datatype = INPUT_TYPES[input_type][1]
        self.detection = self._check_detection(detection, input_type)
        self.global_extensions = self._check_extensions(global_extensions or {})
        self.description = description
        self.split_on_retune = bool(split_on_retune)
        item = INPUT_TYPES[input_type][0]
        gr.sync_block.__init__(
            self,
            name="scos_sigmf_sink",
            in_sig=[item_type(item, self.vlen)],
            out_sig=None,
        )
        self.on_recording = on_recording
        self.recordings: list[str] = []
        self.finished = threading.Event()
        self.overflows = 0
        self._recording: _Recording | None = None
        self._rate = float(sample_rate) if sample_rate else None
        self._frequency = frequency
        self._capture_time: tags.RadioTime | None = None
        self._capture_item = 0
        self._capture_pending = True
        self._gap: float | None = None
        self._states: dict[str, dict] = {}

    def _check_detection(self, detection: dict | None, input_type: str) -> dict | None:
        if detection is None:
            self.samples_per_item = 1
            return None
        detection = dict(detection)
        domain = detection.get("domain")
        if domain not in DETECTION_KEYS or input_type != "float":
            raise ValueError(
                "detection needs input_type 'float' and domain 'frequency' or 'time', "
                f"got {domain!r}"
            )
        missing = DETECTION_KEYS[domain] - set(detection)
        unknown = set(detection) - DETECTION_KEYS[domain] - {"domain", "units", "reference"}
        if missing or unknown:
            raise ValueError(f"detection: missing {sorted(missing)}, unknown {sorted(unknown)}")
        if domain == "frequency":
            names, points = FREQUENCY_DETECTORS, int(detection["fft_size"])
            self.samples_per_item = points * int(detection["nffts"])
            windows.taps(detection["window"], points)  # rejects an unknown window now
        else:
            names, points = TIME_DETECTORS, int(detection["nwindows"])
            self.samples_per_item = points * int(detection["window_size"])
        if self.vlen != len(names) * points:
            raise ValueError(
                f"vlen {self.vlen} does not match the {domain}-domain detection layout "
                f"({len(names)} detectors x {points} points = {len(names) * points})"
            )
        detection.setdefault("units", "dBm")
        detection["detectors"] = names
        detection["points"] = points
        return detection

    @staticmethod
    def _check_extensions(extensions: dict) -> dict:
        for key in extensions:
            namespace, _, name = str(key).partition(":")
            if not namespace or not name:
                raise ValueError(f"global extension key {key!r} must be 'namespace:property'")
        return dict(extensions)

    # --- streaming -------------------------------------------------------------------

    def work(self, input_items, output_items):
        items = input_items[0]
        start = self.nitems_read(0)
        by_offset: dict[int, list] = {}
        for tag in self.get_tags_in_range(0, start, start + len(items)):
            by_offset.setdefault(tag.offset, []).append(tag)
        position = 0
        for offset in sorted(by_offset):
            self._write(items[position : offset - start], start + position)
            position = offset - start
            self._apply_tags(offset, by_offset[offset])
        self._write(items[position:], start + position)
        return len(items)

    def stop(self) -> bool:
        # A stream that carried no samples leaves no recording (sigmf cannot read an
        # empty one); the caller sees an empty ``recordings`` list.
        if self._recording is not None:
            self._finish(self._recording)
        self.finished.set()
        return True

    def _apply_tags(self, item: int, found: list) -> None:
        values = {pmt.symbol_to_string(tag.key): tag.value for tag in found}
        recording = self._recording
        has_samples = recording is not None and recording.samples > 0
        retuned = False  # a new rate or frequency: a time jump here is the retune, not a loss
        if "rx_rate" in values:
            rate = pmt.to_double(values["rx_rate"])
            if rate != self._rate:
                if has_samples:
                    self._finish(recording)
                # Re-anchor time at this item before the rate that counts it changes.
                self._capture_time, self._capture_item = self._time_of(item), item
                self._capture_pending = True
                self._rate = rate
                retuned = True
        if "rx_freq" in values:
            frequency = pmt.to_double(values["rx_freq"])
            if frequency != self._frequency:
                if self.split_on_retune and self._recording is not None and has_samples:
                    self._finish(self._recording)
                self._frequency = frequency
                self._capture_pending = True
                retuned = True
        if "rx_time" in values:
            self._follow_time(item, tags.RadioTime.from_pmt(values["rx_time"]), retuned)
        for key, kind in (("scos_calibration", "calibration"), ("scos_sensor", "sensor")):
            if key in values:
                state = tags.pmt_to_dict(values[key])
                if kind == "sensor":
                    state = self._states.get(kind, {}) | state
                if state != self._states.get(kind):
                    self._states[kind] = state
                    if self._recording is not None:
                        self._open_state_span(self._recording, kind)

    def _follow_time(self, item: int, time: tags.RadioTime, retuned: bool) -> None:
        if self._capture_time is not None and self._rate and not retuned:
            expected = self._time_of(item)
            jump = time.minus(expected)
            if abs(jump) * self._rate > self.samples_per_item + 0.5:
                self._capture_pending = True
                self._gap = jump
                self.overflows += 1
        # Within tolerance this is a re-tag: the capture goes on, following the radio's clock.
        self._capture_time, self._capture_item = time, item

    def _time_of(self, item: int) -> tags.RadioTime | None:
        if self._capture_time is None or not self._rate:
            return None
        return self._capture_time.plus(
            (item - self._capture_item) * self.samples_per_item / self._rate
        )

    def _write(self, items: np.ndarray, first_item: int) -> None:
        if len(items) == 0:
            return
        recording = self._recording or self._open(first_item)
        if self._capture_pending:
            self._add_capture(recording, first_item)
        payload = np.ascontiguousarray(items).data.cast("B")
        recording.data.write(payload)
        recording.sha512.update(payload)
        if self.detection is not None:
            for index in range(len(items)):
                self._add_detection(
                    recording, first_item + index, recording.samples + index * self.vlen
                )
        recording.samples += len(items) * self.vlen

    # --- recordings ------------------------------------------------------------------

    def _open(self, first_item: int) -> _Recording:
        index = len(self.recordings)
        numbered = self.split_on_retune or index > 0
        recording = _Recording(f"{self.base}-{index:03d}" if numbered else self.base)
        recording.first_item = first_item
        recording.start_time = self._time_of(first_item)
        self._recording = recording
        self._capture_pending = True
        for kind in self._states:
            self._open_state_span(recording, kind)
        return recording

    def _open_state_span(self, recording: _Recording, kind: str) -> None:
        recording.open_span(kind, STATE_ANNOTATIONS[kind], self._states[kind])

    def _add_capture(self, recording: _Recording, item: int) -> None:
        self._capture_pending = False
        capture: dict = {SAMPLE_START: recording.samples}
        if self._frequency is not None:
            capture["core:frequency"] = self._frequency
        time = self._time_of(item)
        if time is not None:
            capture["core:datetime"] = time.to_iso8601()
            self._capture_time, self._capture_item = time, item
        recording.add("captures", capture)
        if self._gap is not None:
            lost = round(self._gap * self._rate)
            recording.add(
                "events",
                {
                    SAMPLE_START: recording.samples,
                    "core:sample_count": 0,
                    "core:label": "overflow",
                    "core:comment": (
                        f"signal analyzer overflow: the time jumps by {self._gap:.9f} s "
                        f"({lost} samples lost) before this sample"
                    ),
                },
            )
            self._gap = None

    def _add_detection(self, recording: _Recording, item: int, sample_start: int) -> None:
        detection = self.detection
        points = detection["points"]
        common = {
            "scos-algorithm:detection_domain": detection["domain"],
            "scos-algorithm:units": detection["units"],
        }
        if "reference" in detection:
            common["scos-algorithm:reference"] = detection["reference"]
        if detection["domain"] == "frequency":
            common["scos-core:annotation_type"] = "FrequencyDomainDetection"
            common["scos-algorithm:number_of_ffts"] = int(detection["nffts"])
            common["scos-algorithm:number_of_samples_in_fft"] = points
            common["scos-algorithm:window"] = detection["window"]
            if self._rate:
                step = self._rate / points
                first = (self._frequency or 0.0) - (points // 2) * step
                common["scos-algorithm:equivalent_noise_bandwidth"] = windows.enbw_hz(
                    detection["window"], points, self._rate
                )
                common["scos-algorithm:frequency_start"] = first
                common["scos-algorithm:frequency_stop"] = first + (points - 1) * step
                common["scos-algorithm:frequency_step"] = step
        else:
            common["scos-core:annotation_type"] = "TimeDomainDetection"
            common["scos-algorithm:number_of_samples"] = int(detection["window_size"])
            if self._rate:
                step = int(detection["window_size"]) / self._rate
                first = (item - recording.first_item) * self.samples_per_item / self._rate
                time, start_time = self._time_of(item), recording.start_time
                if time is not None and start_time is not None:
                    first = time.minus(start_time)
                common["scos-algorithm:time_start"] = first
                common["scos-algorithm:time_stop"] = first + (points - 1) * step
                common["scos-algorithm:time_step"] = step
        for index, name in enumerate(detection["detectors"]):
            record = {SAMPLE_START: sample_start + index * points, "core:sample_count": points}
            record["scos-algorithm:detector"] = name
            recording.add("events", record | common)

    def _finish(self, recording: _Recording) -> None:
        for kind in list(recording.open_spans):
            recording.close_span(kind)
        recording.data.flush()
        os.fsync(recording.data.fileno())
        recording.data.close()
        self._write_meta(recording)
        for spill in recording.spills.values():
            spill.discard()
        self._recording = None
        self.recordings.append(recording.meta_path)
        logger.info("wrote %s (%d samples)", recording.meta_path, recording.samples)
        if self.on_recording is not None:
            self.on_recording(recording.meta_path)

    def _write_meta(self, recording: _Recording) -> None:
        namespaces = recording.namespaces | {key.split(":", 1)[0] for key in self.global_extensions}
        header = {
            "core:datatype": self.datatype,
            "core:version": SIGMF_VERSION,
            "core:recorder": RECORDER,
            "core:num_channels": 1,
            "core:sha512": recording.sha512.hexdigest(),
        }
        if self._rate:
            header["core:sample_rate"] = self._rate
        if self.description:
            header["core:description"] = self.description
        header.update(self._acquisition_times(recording))
        namespaces |= {key.split(":", 1)[0] for key in header}
        header["core:extensions"] = [
            {"name": name, "version": SCOS_EXTENSION_VERSION, "optional": False}
            for name in sorted(namespaces - {"core"})
        ]
        header.update(self.global_extensions)
        temporary = recording.meta_path + ".tmp"
        with open(temporary, "w", encoding="utf-8") as meta:
            meta.write('{\n"global": ' + json.dumps(header, indent=1) + ',\n"captures": [')
            self._write_list(meta, recording.spills["captures"])
            meta.write('],\n"annotations": [')
            self._write_list(meta, recording.annotations())
            meta.write("]\n}\n")
            meta.flush()
            os.fsync(meta.fileno())
        os.replace(temporary, recording.meta_path)

    def _acquisition_times(self, recording: _Recording) -> dict:
        """Table 59 start and end of the recording, by the radio's clock, when known."""
        if recording.start_time is None or not self._rate:
            return {}
        items = recording.samples // self.vlen
        end = recording.start_time.plus(items * self.samples_per_item / self._rate)
        return {
            "scos-acquisition:start_time": recording.start_time.to_iso8601(),
            "scos-acquisition:end_time": end.to_iso8601(),
        }

    @staticmethod
    def _write_list(meta, records) -> None:
        separator = "\n"
        for record in records:
            meta.write(separator + json.dumps(record))
            separator = ",\n"
        meta.write("\n")
