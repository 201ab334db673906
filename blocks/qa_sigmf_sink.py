#!/usr/bin/env python3
"""QA for the SigMF sink: data, checksum, captures, annotations, validity, memory."""

import hashlib
import json
import os
import tempfile
import tracemalloc
import warnings

import numpy as np
import sigmf
from gnuradio import blocks, gr, gr_unittest, scos
from gnuradio.scos import tags
from gnuradio.scos.tags import make_tag

START = tags.RadioTime(1_700_000_000, 0.25)


def radio_tags(offset=0, time=START, frequency=3.5e9, rate=1e5):
    return [
        make_tag(offset, "rx_time", time),
        make_tag(offset, "rx_freq", frequency),
        make_tag(offset, "rx_rate", rate),
    ]


def load_valid(meta_path: str) -> dict:
    """The metadata, after checking it with the sigmf package (checksum included)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # undeclared extensions warn in sigmf; fail on them
        sigmf.fromfile(meta_path).validate()
    with open(meta_path, encoding="utf-8") as meta:
        return json.load(meta)


class qa_sigmf_sink(gr_unittest.TestCase):
    def setUp(self):
        self.tb = gr.top_block()
        self.directory = tempfile.TemporaryDirectory()
        self.base = os.path.join(self.directory.name, "rec")
        self.rng = np.random.default_rng(3)

    def tearDown(self):
        self.tb = None
        self.directory.cleanup()

    def iq(self, count: int) -> np.ndarray:
        return (self.rng.normal(size=count) + 1j * self.rng.normal(size=count)).astype(np.complex64)

    def record(self, source, sink):
        self.tb.connect(source, sink)
        # Small, odd work() calls: tags and state changes must survive call boundaries.
        self.tb.run(97)
        leftovers = [
            name for name in os.listdir(self.directory.name) if name.endswith((".part", ".tmp"))
        ]
        self.assertEqual(leftovers, [])
        return sink

    def record_iq(self, samples, stream_tags, **options):
        source = blocks.vector_source_c(samples.tolist(), False, 1, stream_tags)
        return self.record(source, scos.sigmf_sink(self.base, "complex", **options))

    def test_iq_data_checksum_and_core_metadata(self):
        samples = self.iq(100_000)
        sink = self.record_iq(samples, radio_tags(), description="lab test")
        with open(self.base + ".sigmf-data", "rb") as data:
            written = data.read()
        self.assertEqual(written, samples.astype("<c8").tobytes())
        meta = load_valid(self.base + ".sigmf-meta")
        header = meta["global"]
        self.assertEqual(header["core:datatype"], "cf32_le")
        self.assertEqual(header["core:sample_rate"], 1e5)
        self.assertEqual(header["core:sha512"], hashlib.sha512(written).hexdigest())
        self.assertEqual(header["core:description"], "lab test")
        self.assertTrue(header["core:recorder"].startswith("gr-scos"))
        self.assertEqual(
            meta["captures"],
            [
                {
                    "core:sample_start": 0,
                    "core:frequency": 3.5e9,
                    "core:datetime": "2023-11-14T22:13:20.250000000Z",
                }
            ],
        )
        self.assertEqual(sink.recordings, [self.base + ".sigmf-meta"])

    def test_retune_starts_a_capture_at_the_right_time(self):
        stream_tags = [*radio_tags(), make_tag(1000, "rx_freq", 3.6e9)]
        self.record_iq(self.iq(3000), stream_tags)
        captures = load_valid(self.base + ".sigmf-meta")["captures"]
        self.assertEqual(len(captures), 2)
        self.assertEqual(captures[1]["core:sample_start"], 1000)
        self.assertEqual(captures[1]["core:frequency"], 3.6e9)
        self.assertEqual(captures[1]["core:datetime"], START.plus(1000 / 1e5).to_iso8601())

    def test_overflow_time_jump_breaks_the_capture_and_is_annotated(self):
        jumped = START.plus(2000 / 1e5 + 0.01)  # 1000 samples lost before sample 2000
        stream_tags = [
            *radio_tags(),
            make_tag(2000, "rx_time", jumped),
            make_tag(3000, "rx_time", jumped.plus(1000 / 1e5)),  # a re-tag on time: no break
        ]
        sink = self.record_iq(self.iq(4000), stream_tags)
        meta = load_valid(self.base + ".sigmf-meta")
        self.assertEqual([c["core:sample_start"] for c in meta["captures"]], [0, 2000])
        self.assertEqual(meta["captures"][1]["core:datetime"], jumped.to_iso8601())
        gaps = [a for a in meta["annotations"] if a.get("core:label") == "overflow"]
        self.assertEqual(len(gaps), 1)
        self.assertEqual(gaps[0]["core:sample_start"], 2000)
        self.assertIn("1000 samples lost", gaps[0]["core:comment"])
        self.assertEqual(sink.overflows, 1)

    def test_calibration_and_sensor_state_become_annotation_spans(self):
        stream_tags = [
            *radio_tags(),
            make_tag(0, "scos_calibration", {"gain_sigan": 30.0, "noise_figure_sensor": 4.5}),
            make_tag(500, "scos_calibration", {"gain_sigan": 31.0, "noise_figure_sensor": 4.0}),
            make_tag(0, "scos_sensor", {"overload_sigan": False, "gain_setting_sigan": 10.0}),
            make_tag(300, "scos_sensor", {"overload_sigan": True}),
            make_tag(400, "scos_sensor", {"overload_sigan": False}),
        ]
        self.record_iq(self.iq(1000), stream_tags)
        annotations = load_valid(self.base + ".sigmf-meta")["annotations"]
        calibration = [
            a for a in annotations if a["scos-core:annotation_type"] == "CalibrationAnnotation"
        ]
        sensor = [a for a in annotations if a["scos-core:annotation_type"] == "SensorAnnotation"]
        self.assertEqual(
            [
                (a["core:sample_start"], a["core:sample_count"], a["scos-sensor:gain_sigan"])
                for a in calibration
            ],
            [(0, 500, 30.0), (500, 500, 31.0)],
        )
        self.assertEqual(
            [
                (
                    a["core:sample_start"],
                    a["core:sample_count"],
                    a["scos-sensor:overload_sigan"],
                    a["scos-sensor:gain_setting_sigan"],
                )
                for a in sensor
            ],
            [(0, 300, False, 10.0), (300, 100, True, 10.0), (400, 600, False, 10.0)],
        )
        starts = [a["core:sample_start"] for a in annotations]
        self.assertEqual(starts, sorted(starts))

    def record_detection(self, vectors: np.ndarray, detection: dict, stream_tags):
        source = blocks.vector_source_f(
            vectors.ravel().tolist(), False, vectors.shape[1], stream_tags
        )
        sink = scos.sigmf_sink(self.base, "float", vectors.shape[1], detection)
        return self.record(source, sink)

    def test_frequency_domain_detection_annotations(self):
        for fft_size in (8, 7):
            with self.subTest(fft_size=fft_size):
                self.tb = gr.top_block()
                detection = {
                    "domain": "frequency",
                    "fft_size": fft_size,
                    "nffts": 10,
                    "window": "rectangular",
                    "reference": "antenna terminal",
                }
                vectors = self.rng.normal(-90, 5, (3, 5 * fft_size)).astype(np.float32)
                self.record_detection(vectors, detection, radio_tags(rate=1.4e6, frequency=7e8))
                meta = load_valid(self.base + ".sigmf-meta")
                self.assertEqual(meta["global"]["core:datatype"], "rf32_le")
                found = [
                    a
                    for a in meta["annotations"]
                    if a["scos-core:annotation_type"] == "FrequencyDomainDetection"
                ]
                self.assertEqual(len(found), 15)
                step = 1.4e6 / fft_size
                bins = np.fft.fftshift(np.fft.fftfreq(fft_size, 1 / 1.4e6)) + 7e8
                for index, annotation in enumerate(found):
                    self.assertEqual(annotation["core:sample_start"], index * fft_size)
                    self.assertEqual(annotation["core:sample_count"], fft_size)
                    self.assertEqual(
                        annotation["scos-algorithm:detector"], scos.FREQUENCY_DETECTORS[index % 5]
                    )
                    self.assertEqual(annotation["scos-algorithm:detection_domain"], "frequency")
                    self.assertEqual(annotation["scos-algorithm:number_of_ffts"], 10)
                    self.assertEqual(
                        annotation["scos-algorithm:number_of_samples_in_fft"], fft_size
                    )
                    self.assertEqual(annotation["scos-algorithm:window"], "rectangular")
                    self.assertEqual(annotation["scos-algorithm:units"], "dBm")
                    self.assertEqual(annotation["scos-algorithm:reference"], "antenna terminal")
                    self.assertAlmostEqual(
                        annotation["scos-algorithm:equivalent_noise_bandwidth"], step
                    )
                    self.assertAlmostEqual(annotation["scos-algorithm:frequency_start"], bins[0])
                    self.assertAlmostEqual(annotation["scos-algorithm:frequency_stop"], bins[-1])
                    self.assertAlmostEqual(annotation["scos-algorithm:frequency_step"], step)

    def test_flattop_enbw_in_metadata(self):
        detection = {"domain": "frequency", "fft_size": 1024, "nffts": 1, "window": "flattop"}
        vectors = np.zeros((1, 5 * 1024), np.float32)
        self.record_detection(vectors, detection, radio_tags(rate=1.024e6))
        annotation = load_valid(self.base + ".sigmf-meta")["annotations"][0]
        # The flat-top window's ENBW is 3.77 bins, here 1 kHz each.
        self.assertAlmostEqual(
            annotation["scos-algorithm:equivalent_noise_bandwidth"], 3770.2, delta=0.5
        )

    def test_time_domain_detection_annotations(self):
        detection = {
            "domain": "time",
            "window_size": 100,
            "nwindows": 4,
            "reference": "antenna terminal",
        }
        vectors = self.rng.normal(-90, 5, (2, 20)).astype(np.float32)
        self.record_detection(vectors, detection, radio_tags(rate=1e5))
        meta = load_valid(self.base + ".sigmf-meta")
        found = [
            a
            for a in meta["annotations"]
            if a["scos-core:annotation_type"] == "TimeDomainDetection"
        ]
        self.assertEqual(
            [a["scos-algorithm:detector"] for a in found], list(scos.TIME_DETECTORS) * 2
        )
        for index, annotation in enumerate(found):
            record = index // 5
            self.assertEqual(annotation["core:sample_start"], index * 4)
            self.assertEqual(annotation["core:sample_count"], 4)
            self.assertEqual(annotation["scos-algorithm:number_of_samples"], 100)
            self.assertAlmostEqual(annotation["scos-algorithm:time_start"], record * 400 / 1e5)
            self.assertAlmostEqual(annotation["scos-algorithm:time_step"], 100 / 1e5)
            self.assertAlmostEqual(
                annotation["scos-algorithm:time_stop"], record * 400 / 1e5 + 3 * 100 / 1e5
            )

    def test_rate_change_starts_a_new_recording(self):
        stream_tags = [*radio_tags(), *radio_tags(600, START.plus(600 / 1e5), 3.5e9, 2e5)]
        sink = self.record_iq(self.iq(1000), stream_tags)
        self.assertEqual(
            sink.recordings, [self.base + ".sigmf-meta", self.base + "-001.sigmf-meta"]
        )
        first, second = (load_valid(path) for path in sink.recordings)
        self.assertEqual(first["global"]["core:sample_rate"], 1e5)
        self.assertEqual(second["global"]["core:sample_rate"], 2e5)
        self.assertEqual(second["captures"][0]["core:datetime"], START.plus(600 / 1e5).to_iso8601())
        self.assertEqual(os.path.getsize(self.base + "-001.sigmf-data"), 400 * 8)

    def test_split_on_retune_numbers_every_recording(self):
        stream_tags = [
            *radio_tags(),
            make_tag(100, "rx_freq", 3.6e9),
            make_tag(250, "rx_freq", 3.7e9),
        ]
        sink = self.record_iq(self.iq(300), stream_tags, split_on_retune=True)
        self.assertEqual(
            sink.recordings, [f"{self.base}-{index:03d}.sigmf-meta" for index in range(3)]
        )
        frequencies = [
            load_valid(path)["captures"][0]["core:frequency"] for path in sink.recordings
        ]
        self.assertEqual(frequencies, [3.5e9, 3.6e9, 3.7e9])

    def test_every_finished_recording_is_reported(self):
        reported = []
        stream_tags = [*radio_tags(), make_tag(5, "rx_freq", 3.6e9)]
        self.record_iq(self.iq(10), stream_tags, split_on_retune=True, on_recording=reported.append)
        self.assertEqual(reported, [f"{self.base}-000.sigmf-meta", f"{self.base}-001.sigmf-meta"])

    def test_finished_is_set_when_the_last_recording_is_written(self):
        sink = scos.sigmf_sink(self.base, "complex")
        self.assertFalse(sink.finished.is_set())
        written = []
        # Seen from the runner: when finished is set, every recording is on disk.
        sink.on_recording = lambda path: written.append(sink.finished.is_set())
        source = blocks.vector_source_c(self.iq(10).tolist(), False, 1, radio_tags())
        self.record(source, sink)
        self.assertTrue(sink.finished.is_set())
        self.assertEqual(written, [False])
        self.assertTrue(os.path.exists(f"{self.base}.sigmf-meta"))

    def test_global_extensions_are_written_and_declared(self):
        sensor = {
            "sensor_spec": {"id": "lab-1"},
            "antenna": {"antenna_spec": {"id": "a1"}},
            "signal_analyzer": {},
        }
        extensions = {
            "scos-sensor:sensor": sensor,
            "scos-acquisition:action": "acquire_m4s",
            "scos-acquisition:task": 3,
        }
        self.record_iq(self.iq(10), radio_tags(), global_extensions=extensions)
        header = load_valid(self.base + ".sigmf-meta")["global"]
        self.assertEqual(header["scos-sensor:sensor"], sensor)
        self.assertEqual(header["scos-acquisition:task"], 3)
        declared = {extension["name"] for extension in header["core:extensions"]}
        self.assertEqual(declared, {"scos-sensor", "scos-acquisition"})

    def test_an_empty_stream_writes_no_recording(self):
        source = blocks.head(gr.sizeof_gr_complex, 0)
        self.tb.connect(blocks.null_source(gr.sizeof_gr_complex), source)
        sink = self.record(source, scos.sigmf_sink(self.base, "complex"))
        self.assertEqual(sink.recordings, [])
        self.assertEqual(os.listdir(self.directory.name), [])

    def peak_memory(self, items: int) -> int:
        self.tb = gr.top_block()
        fft_size = 64
        source = blocks.null_source(gr.sizeof_float * 5 * fft_size)
        head = blocks.head(gr.sizeof_float * 5 * fft_size, items)
        detection = {"domain": "frequency", "fft_size": fft_size, "nffts": 1, "window": "flattop"}
        sink = scos.sigmf_sink(self.base, "float", 5 * fft_size, detection, sample_rate=1e6)
        self.tb.connect(source, head, sink)
        tracemalloc.start()
        self.tb.run()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        self.assertEqual(os.path.getsize(self.base + ".sigmf-data"), items * 5 * fft_size * 4)
        return peak

    def test_memory_does_not_grow_with_recording_length(self):
        short, long = self.peak_memory(300), self.peak_memory(3_000)
        # 10x the data and 10x the annotations (15 000) in about the same memory.
        self.assertLess(long, 1.5 * short + 256 * 1024, f"peak {short} B -> {long} B")

    def test_rejects_bad_parameters(self):
        bad = [
            dict(input_type="bytes"),
            dict(input_type="complex", vlen=4),
            dict(input_type="float", vlen=0),
            dict(
                input_type="float",
                vlen=10,
                detection={"domain": "frequency", "fft_size": 4, "nffts": 2, "window": "flattop"},
            ),
            dict(
                input_type="float",
                vlen=20,
                detection={"domain": "frequency", "fft_size": 4, "nffts": 2, "window": "nope"},
            ),
            dict(
                input_type="float",
                vlen=5,
                detection={"domain": "space", "window_size": 1, "nwindows": 1},
            ),
            dict(input_type="float", vlen=5, detection={"domain": "time", "window_size": 1}),
            dict(input_type="complex", global_extensions={"sensor": {}}),
        ]
        for options in bad:
            with self.subTest(options=options), self.assertRaises(ValueError):
                scos.sigmf_sink(self.base, **options)
        with self.assertRaises(ValueError):
            scos.sigmf_sink(self.directory.name + "/")


if __name__ == "__main__":
    gr_unittest.run(qa_sigmf_sink)
