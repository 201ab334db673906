#!/usr/bin/env python3
"""QA for the time-domain power detector against an independent numpy computation."""

import numpy as np
import pmt
from gnuradio import blocks, gr, gr_unittest, scos


def reference_detectors(samples: np.ndarray, window_size: int, nwindows: int) -> np.ndarray:
    """Per record of nwindows windows: [min x nw | max x nw | mean | median | first]."""
    power = np.abs(samples.astype(np.complex128)) ** 2
    windows = power.reshape(-1, nwindows, window_size)
    detectors = [
        windows.min(axis=2),
        windows.max(axis=2),
        windows.sum(axis=2) / window_size,
        np.array([[np.median(window) for window in record] for record in windows]),
        windows[:, :, 0],
    ]
    return np.concatenate(detectors, axis=1)


class qa_time_domain_detector(gr_unittest.TestCase):
    def setUp(self):
        self.tb = gr.top_block()
        self.rng = np.random.default_rng(11)

    def tearDown(self):
        self.tb = None

    def samples(self, count: int) -> np.ndarray:
        values = self.rng.normal(size=count) + 1j * self.rng.normal(size=count)
        return (values * 1e-3).astype(np.complex64)

    def run_detector(self, samples, window_size, nwindows, max_noutput_items=None, tags=()):
        source = blocks.vector_source_c(samples.tolist(), False, 1, list(tags))
        detector = scos.time_domain_detector(window_size, nwindows)
        sink = blocks.vector_sink_f(5 * nwindows)
        self.tb.connect(source, detector, sink)
        if max_noutput_items is None:
            self.tb.run()
        else:
            self.tb.run(max_noutput_items)
        return np.array(sink.data(), np.float32).reshape(-1, 5 * nwindows), sink.tags()

    def test_matches_numpy_for_odd_and_even_windows(self):
        for window_size, nwindows in ((8, 1), (7, 3), (1000, 2), (1, 5), (33, 4)):
            with self.subTest(window_size=window_size, nwindows=nwindows):
                self.tb = gr.top_block()
                samples = self.samples(5 * window_size * nwindows)
                detected, _ = self.run_detector(samples, window_size, nwindows)
                self.assertEqual(detected.shape, (5, 5 * nwindows))
                expected = reference_detectors(samples, window_size, nwindows)
                np.testing.assert_allclose(detected, expected, rtol=2e-5)

    def test_records_straddling_work_calls(self):
        window_size, nwindows = 13, 3
        samples = self.samples(400 * window_size * nwindows + 5)  # a partial record at the end
        detected, _ = self.run_detector(samples, window_size, nwindows, max_noutput_items=1)
        expected = reference_detectors(
            samples[: 400 * window_size * nwindows], window_size, nwindows
        )
        np.testing.assert_allclose(detected, expected, rtol=2e-5)

    def test_known_powers(self):
        # |1 + 1j|^2 = 2, |3j|^2 = 9, 0, |2|^2 = 4: min 0, max 9, mean 3.75, median 3, first 2.
        samples = np.array([1 + 1j, 3j, 0, 2], np.complex64)
        detected, _ = self.run_detector(samples, 4, 1)
        np.testing.assert_allclose(detected[0], [0.0, 9.0, 3.75, 3.0, 2.0], rtol=1e-6)

    def test_output_is_finite_for_silence(self):
        detected, _ = self.run_detector(np.zeros(300, np.complex64), 10, 3)
        self.assertTrue(np.all(np.isfinite(detected)))
        np.testing.assert_array_equal(detected, 0)

    def test_tags_follow_their_record(self):
        tag = gr.tag_t()
        tag.offset, tag.key, tag.value = 3 * 20 + 4, pmt.intern("rx_time"), pmt.from_double(0)
        _, tags = self.run_detector(self.samples(200), 10, 2, tags=[tag])
        self.assertEqual([t.offset for t in tags], [3])

    def test_rejects_bad_sizes(self):
        for window_size, nwindows in ((0, 1), (10, 0), (2.5, 1)):
            with self.subTest(window_size=window_size, nwindows=nwindows):
                with self.assertRaises(ValueError):
                    scos.time_domain_detector(window_size, nwindows)


if __name__ == "__main__":
    gr_unittest.run(qa_time_domain_detector)
