"""SigMF source: replays a SigMF recording with radio-like stream tags."""

import bisect
import json
import os
import re

import numpy as np
from gnuradio import gr

from . import tags
from .items import use_large_buffers
from .sample_clock import SampleClock

_DATATYPE = re.compile(
    r"^(?P<kind>[cr])(?P<format>f32|f64|i32|i16|i8|u32|u16|u8)(?P<order>_le|_be)?$"
)
# Integer formats are scaled to [-1, 1) of full scale unless the caller gives ``scale``.
_FULL_SCALE = {
    "i8": 2.0**7,
    "i16": 2.0**15,
    "i32": 2.0**31,
    "u8": 2.0**7,
    "u16": 2.0**15,
    "u32": 2.0**31,
}
ANNOTATION_TAGS = {"CalibrationAnnotation": tags.CALIBRATION, "SensorAnnotation": tags.SENSOR}


class SigMFReplayError(ValueError):
    """A recording that cannot be replayed; the message names the file and the reason."""


class _Recording:
    """The parsed, checked metadata of a recording and the layout of its samples."""

    def __init__(self, path: str):
        base = str(path)
        for suffix in (".sigmf-meta", ".sigmf-data", ".sigmf"):
            base = base.removesuffix(suffix)
        self.meta_path, self.data_path = base + ".sigmf-meta", base + ".sigmf-data"
        try:
            with open(self.meta_path, encoding="utf-8") as meta:
                document = json.load(meta)
        except FileNotFoundError:
            raise SigMFReplayError(f"no such SigMF recording: {self.meta_path}") from None
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
            raise SigMFReplayError(f"{self.meta_path}: cannot read metadata: {error}") from None
        if not isinstance(document, dict) or not isinstance(document.get("global"), dict):
            raise SigMFReplayError(f"{self.meta_path}: no 'global' object")
        header = document["global"]
        if "core:dataset" in header or "core:metadata_only" in header:
            raise SigMFReplayError(
                f"{self.meta_path}: non-conforming or metadata-only datasets are not supported"
            )
        self.datatype = header.get("core:datatype")
        match = _DATATYPE.match(self.datatype) if isinstance(self.datatype, str) else None
        if match is None:
            raise SigMFReplayError(
                f"{self.meta_path}: unsupported core:datatype {self.datatype!r} "
                "(expected e.g. cf32_le, ci16_le, ci8, rf32_le)"
            )
        channels = header.get("core:num_channels", 1)
        if channels != 1:
            raise SigMFReplayError(
                f"{self.meta_path}: {channels} channels; only single-channel recordings replay"
            )
        self.is_complex = match["kind"] == "c"
        fmt = match["format"]
        order = ">" if match["order"] == "_be" else "<"
        self.component = np.dtype(f"{order}{fmt[0]}{int(fmt[1:]) // 8}")
        self.full_scale = _FULL_SCALE.get(fmt)
        self.unsigned = fmt.startswith("u")
        self.sample_bytes = self.component.itemsize * (2 if self.is_complex else 1)
        # cf32_le / rf32_le on a little-endian host: the file holds the output items.
        self.native = self.component == np.dtype(np.float32)
        self.sample_rate = header.get("core:sample_rate")
        if not isinstance(self.sample_rate, int | float) or self.sample_rate <= 0:
            raise SigMFReplayError(f"{self.meta_path}: core:sample_rate missing or not positive")
        self.sample_rate = float(self.sample_rate)
        try:
            size = os.path.getsize(self.data_path)
        except OSError:
            raise SigMFReplayError(
                f"{self.meta_path}: data file {self.data_path} is missing"
            ) from None
        if size % self.sample_bytes:
            raise SigMFReplayError(
                f"{self.data_path}: {size} bytes is not a whole number of {self.datatype} "
                f"samples ({self.sample_bytes} bytes each); metadata and data do not match"
            )
        self.samples = size // self.sample_bytes
        self.captures = self._captures(document.get("captures", []))
        self.annotations = self._annotations(document.get("annotations", []))

    def _captures(self, captures) -> list[tuple[int, float | None, tags.RadioTime | None]]:
        if not isinstance(captures, list) or not captures:
            raise SigMFReplayError(f"{self.meta_path}: no captures")
        parsed, previous = [], -1
        for index, capture in enumerate(captures):
            start = capture.get("core:sample_start", 0) if isinstance(capture, dict) else None
            if not isinstance(start, int) or start <= previous:
                raise SigMFReplayError(
                    f"{self.meta_path}: captures[{index}] has a bad or unordered core:sample_start"
                )
            if capture.get("core:header_bytes"):
                raise SigMFReplayError(
                    f"{self.meta_path}: captures[{index}] has header bytes, which are not supported"
                )
            if start >= max(self.samples, 1):
                raise SigMFReplayError(
                    f"{self.meta_path}: captures[{index}] starts at sample {start} but the "
                    f"data file holds {self.samples} samples; metadata and data do not match"
                )
            frequency = capture.get("core:frequency")
            stamp = capture.get("core:datetime")
            try:
                time = tags.RadioTime.from_iso8601(stamp) if stamp is not None else None
            except ValueError as error:
                raise SigMFReplayError(f"{self.meta_path}: captures[{index}]: {error}") from None
            parsed.append((start, None if frequency is None else float(frequency), time))
            previous = start
        return parsed

    def _annotations(self, annotations) -> list[tuple[int, object, dict]]:
        """Calibration and sensor annotations, to be replayed as tags."""
        found = []
        for annotation in annotations if isinstance(annotations, list) else []:
            kind = annotation.get("scos-core:annotation_type")
            if kind not in ANNOTATION_TAGS:
                continue
            state = {
                key.split(":", 1)[1]: value
                for key, value in annotation.items()
                if key.startswith("scos-sensor:")
            }
            found.append(
                (int(annotation.get("core:sample_start", 0)), ANNOTATION_TAGS[kind], state)
            )
        return found

    def convert(self, raw: np.ndarray, out: np.ndarray, scale: float | None) -> None:
        values = raw.astype(np.float32)
        if self.full_scale is not None:
            if self.unsigned:
                values -= np.float32(self.full_scale - 0.5)
            values *= np.float32(1.0 / self.full_scale if scale is None else scale)
        elif scale is not None:
            values *= np.float32(scale)
        if self.is_complex:
            out[:] = values.view(np.complex64)
        else:
            out[:] = values


class sigmf_source(gr.sync_block):
    """Replays a SigMF recording as if a signal analyzer were producing it.

    Input: ``path`` to a recording (``.sigmf-meta``, ``.sigmf-data`` or the base
    name) of datatype c/r + f32, f64, i8, i16, i32, u8, u16, u32, little or big
    endian (cf32_le, ci16_le, ci8, rf32_le, cu8, ...), one channel.
    Output: complex64 for complex recordings, float32 for real ones
    (``output_type`` must say which, so a flowgraph is not wired to the wrong
    kind); integer samples are scaled to +/-1 of full scale unless ``scale`` is given.

    Tags: ``rx_rate`` (core:sample_rate) at the start, and at each capture
    ``rx_freq`` (core:frequency) and ``rx_time`` (core:datetime, or the previous
    capture's time advanced by its samples); calibration and sensor annotations
    come out as ``scos_calibration`` / ``scos_sensor`` tags, so a recording the
    sink wrote replays with its metadata. Ends at the end of the data, or with
    ``repeat`` starts over with times advanced as if the recording went on.
    ``paced`` emits at the recorded sample rate in real time. A missing file, an
    unsupported datatype or metadata that does not fit the data size raises
    ``SigMFReplayError`` at construction.
    """

    def __init__(
        self,
        path: str,
        output_type: str = "complex",
        repeat: bool = False,
        paced: bool = False,
        scale: float | None = None,
    ):
        if output_type not in ("complex", "float"):
            raise ValueError(f"output_type must be 'complex' or 'float', got {output_type!r}")
        self.recording = _Recording(path)
        if self.recording.is_complex != (output_type == "complex"):
            raise SigMFReplayError(
                f"{self.recording.meta_path}: datatype {self.recording.datatype} does not "
                f"match output_type {output_type!r}"
            )
        gr.sync_block.__init__(
            self,
            name="scos_sigmf_source",
            in_sig=None,
            out_sig=[np.complex64 if output_type == "complex" else np.float32],
        )
        use_large_buffers(self, 8 if output_type == "complex" else 4)
        self.repeat = bool(repeat)
        self.scale = scale
        self._clock = SampleClock(self.recording.sample_rate) if paced else None
        self._data = None
        self._position = 0  # sample index within the data file
        self._pass = 0  # completed passes through the file
        self._events = self._tag_events()
        self._event_samples = [event[0] for event in self._events]

    def start(self) -> bool:
        self._data = open(self.recording.data_path, "rb")
        return True

    def stop(self) -> bool:
        if self._data is not None:
            self._data.close()
            self._data = None
        return True

    def _tag_events(self) -> list[tuple[int, object, object]]:
        """(sample, key, value) of every tag in one pass, in sample order."""
        recording = self.recording
        events: list[tuple[int, object, object]] = [(0, tags.RX_RATE, recording.sample_rate)]
        time = None
        previous_start = 0
        for start, frequency, stamp in recording.captures:
            if stamp is not None:
                time = stamp
            elif time is not None:
                time = time.plus((start - previous_start) / recording.sample_rate)
            if time is not None:
                events.append((start, tags.RX_TIME, time))
            if frequency is not None:
                events.append((start, tags.RX_FREQ, frequency))
            previous_start = start
        events.extend(recording.annotations)
        events.sort(key=lambda event: event[0])
        return events

    def work(self, input_items, output_items):
        recording, out = self.recording, output_items[0]
        if self._position == recording.samples:
            if not self.repeat or recording.samples == 0:
                return -1  # WORK_DONE: end of the recording
            self._position = 0
            self._pass += 1
            self._data.seek(0)
        count = min(len(out), recording.samples - self._position)
        if self._clock is not None:
            count = self._clock.allowance(count)
        if recording.native and self.scale is None:
            # Read straight into the output buffer: no intermediate copies.
            count = self._data.readinto(out[:count].view(np.uint8)) // recording.sample_bytes
        else:
            raw = np.fromfile(
                self._data,
                dtype=recording.component,
                count=count * (2 if recording.is_complex else 1),
            )
            recording.convert(raw, out[:count], self.scale)
        self._tag(self._position, count)
        self._position += count
        if self._clock is not None:
            self._clock.emitted(count)
        return count

    def _tag(self, position: int, count: int) -> None:
        first_output = self.nitems_written(0) - position
        shift = self._pass * self.recording.samples / self.recording.sample_rate
        first = bisect.bisect_left(self._event_samples, position)
        last = bisect.bisect_left(self._event_samples, position + count)
        for sample, key, value in self._events[first:last]:
            if key is tags.RX_TIME:
                value = value.plus(shift)
            self.add_item_tag(0, first_output + sample, key, tags.value_to_pmt(value))
