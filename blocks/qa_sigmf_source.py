#!/usr/bin/env python3
"""QA for the SigMF replay source: datatypes, tags, repeat, pacing and bad recordings."""

import json
import os
import tempfile
import time

import numpy as np
import pmt
from gnuradio import blocks, gr, gr_unittest, scos
from gnuradio.scos import tags

START = "2026-11-21T12:00:00.500000000Z"


def decoded_tags(stream_tags) -> dict[str, list]:
    """{key: [(offset, value), ...]} with times as ISO 8601 and dicts as dicts."""
    found = {}
    for tag in stream_tags:
        key = pmt.symbol_to_string(tag.key)
        if key == "rx_time":
            value = tags.RadioTime.from_pmt(tag.value).to_iso8601()
        elif pmt.is_dict(tag.value):
            value = tags.pmt_to_dict(tag.value)
        else:
            value = pmt.to_python(tag.value)
        found.setdefault(key, []).append((tag.offset, value))
    return found


class qa_sigmf_source(gr_unittest.TestCase):
    def setUp(self):
        self.tb = gr.top_block()
        self.directory = tempfile.TemporaryDirectory()
        self.base = os.path.join(self.directory.name, "rec")

    def tearDown(self):
        self.tb = None
        self.directory.cleanup()

    def write(self, raw: bytes, datatype: str, captures=None, annotations=(), **header):
        header = {
            "core:datatype": datatype,
            "core:version": "1.2.0",
            "core:sample_rate": 1e4,
        } | header
        captures = captures or [
            {"core:sample_start": 0, "core:frequency": 1e9, "core:datetime": START}
        ]
        with open(self.base + ".sigmf-data", "wb") as data:
            data.write(raw)
        with open(self.base + ".sigmf-meta", "w", encoding="utf-8") as meta:
            json.dump(
                {"global": header, "captures": captures, "annotations": list(annotations)}, meta
            )

    def replay(self, output_type="complex", limit=None, **options):
        source = scos.sigmf_source(self.base + ".sigmf-meta", output_type, **options)
        sink = blocks.vector_sink_c() if output_type == "complex" else blocks.vector_sink_f()
        if limit is None:
            self.tb.connect(source, sink)
        else:
            size = gr.sizeof_gr_complex if output_type == "complex" else gr.sizeof_float
            self.tb.connect(source, blocks.head(size, limit), sink)
        self.tb.run()
        return np.array(sink.data()), decoded_tags(sink.tags())

    def test_datatypes_convert_to_volts(self):
        interleaved = np.array([0.5, -0.25, 1.0, 0.0, -1.0, 0.75])
        # (datatype, stored component type, zero code, full scale)
        cases = [
            ("cf32_le", "<f4", 0.0, 1.0),
            ("cf32_be", ">f4", 0.0, 1.0),
            ("ci16_le", "<i2", 0.0, 32768.0),
            ("ci8", "i1", 0.0, 128.0),
            ("cu8", "u1", 127.5, 128.0),
        ]
        for datatype, stored, zero, full_scale in cases:
            with self.subTest(datatype=datatype):
                self.tb = gr.top_block()
                codes = interleaved if stored.endswith("f4") else np.round(interleaved * 100 + zero)
                raw = codes.astype(stored).tobytes()
                self.write(raw, datatype)
                samples, _ = self.replay()
                volts = (np.frombuffer(raw, stored).astype(np.float64) - zero) / full_scale
                np.testing.assert_allclose(
                    samples, volts[0::2] + 1j * volts[1::2], rtol=1e-6, atol=1e-7
                )

    def test_real_recordings_replay_as_floats(self):
        values = np.array([-90.0, -80.5, -70.25], np.float32)
        self.write(values.astype("<f4").tobytes(), "rf32_le")
        samples, _ = self.replay("float")
        np.testing.assert_array_equal(samples, values)

    def test_scale_overrides_full_scale(self):
        self.write(np.array([100, -200], "<i2").tobytes(), "ci16_le")
        samples, _ = self.replay(scale=0.001)
        np.testing.assert_allclose(samples, [0.1 - 0.2j], rtol=1e-6)

    def test_captures_become_radio_tags(self):
        captures = [
            {"core:sample_start": 0, "core:frequency": 1e9, "core:datetime": START},
            {"core:sample_start": 40, "core:frequency": 2e9},  # no datetime: follows on
            {
                "core:sample_start": 70,
                "core:frequency": 2e9,
                "core:datetime": "2026-11-21T12:00:01.000000000Z",
            },
        ]
        annotations = [
            {
                "core:sample_start": 0,
                "core:sample_count": 100,
                "scos-core:annotation_type": "CalibrationAnnotation",
                "scos-sensor:gain_sigan": 30.5,
            },
            {
                "core:sample_start": 10,
                "core:sample_count": 5,
                "scos-core:annotation_type": "SensorAnnotation",
                "scos-sensor:overload_sigan": True,
            },
            {
                "core:sample_start": 20,
                "core:sample_count": 5,
                "scos-algorithm:detector": "fft_mean_power",
            },
        ]
        self.write(np.zeros(200, "<f4").tobytes(), "cf32_le", captures, annotations)
        _, found = self.replay()
        self.assertEqual(found["rx_rate"], [(0, 1e4)])
        self.assertEqual(found["rx_freq"], [(0, 1e9), (40, 2e9), (70, 2e9)])
        self.assertEqual(
            found["rx_time"],
            [
                (0, START),
                (40, "2026-11-21T12:00:00.504000000Z"),
                (70, "2026-11-21T12:00:01.000000000Z"),
            ],
        )
        self.assertEqual(found["scos_calibration"], [(0, {"gain_sigan": 30.5})])
        self.assertEqual(found["scos_sensor"], [(10, {"overload_sigan": True})])

    def test_ends_at_end_of_file_and_repeats_on_request(self):
        values = np.arange(10, dtype=np.float32)
        self.write(np.stack([values, -values], axis=1).astype("<f4").tobytes(), "cf32_le")
        once, _ = self.replay()
        self.assertEqual(len(once), 10)
        self.tb = gr.top_block()
        repeated, found = self.replay(limit=25, repeat=True)
        np.testing.assert_array_equal(repeated, np.tile(values - 1j * values, 3)[:25])
        # Each pass goes on from the end of the previous one: 10 samples at 10 kS/s = 1 ms.
        self.assertEqual(
            found["rx_time"],
            [
                (0, START),
                (10, "2026-11-21T12:00:00.501000000Z"),
                (20, "2026-11-21T12:00:00.502000000Z"),
            ],
        )

    def test_paced_replay_keeps_to_the_sample_rate(self):
        self.write(np.zeros(2 * 3000, "<f4").tobytes(), "cf32_le")  # 0.3 s at 10 kS/s
        began = time.monotonic()
        samples, _ = self.replay(paced=True)
        self.assertEqual(len(samples), 3000)
        self.assertGreaterEqual(time.monotonic() - began, 0.28)

    def test_clear_errors_for_bad_recordings(self):
        good = np.zeros(8, "<f4").tobytes()
        cases = [
            ("missing", lambda: None, "no such SigMF recording"),
            ("datatype", lambda: self.write(good, "cq32_le"), "unsupported core:datatype"),
            ("size", lambda: self.write(good + b"\0\0\0", "cf32_le"), "not a whole number"),
            (
                "capture",
                lambda: self.write(good, "cf32_le", [{"core:sample_start": 9}]),
                "holds 4 samples",
            ),
            (
                "channels",
                lambda: self.write(good, "cf32_le", **{"core:num_channels": 2}),
                "2 channels",
            ),
            (
                "rate",
                lambda: self.write(good, "cf32_le", **{"core:sample_rate": 0}),
                "core:sample_rate",
            ),
            ("kind", lambda: self.write(good, "rf32_le"), "does not match output_type"),
            (
                "json",
                lambda: open(self.base + ".sigmf-meta", "w").write("{not json"),
                "cannot read metadata",
            ),
        ]
        for name, prepare, message in cases:
            with self.subTest(case=name):
                for suffix in (".sigmf-meta", ".sigmf-data"):
                    if os.path.exists(self.base + suffix):
                        os.unlink(self.base + suffix)
                prepare()
                with self.assertRaises(scos.SigMFReplayError) as raised:
                    scos.sigmf_source(self.base, "complex")
                self.assertIn(message, str(raised.exception))
        self.write(good, "cf32_le")
        os.unlink(self.base + ".sigmf-data")
        with self.assertRaisesRegex(scos.SigMFReplayError, "data file .* is missing"):
            scos.sigmf_source(self.base, "complex")


if __name__ == "__main__":
    gr_unittest.run(qa_sigmf_source)
