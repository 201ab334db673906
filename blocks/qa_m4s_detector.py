#!/usr/bin/env python3
"""QA for the M4S detector against an independent numpy computation."""

import numpy as np
import pmt
from gnuradio import blocks, gr, gr_unittest, scos


def reference_m4s(spectra: np.ndarray, nffts: int) -> np.ndarray:
    """min, max, mean, median, first of each group of nffts spectra, flattened per group."""
    groups = spectra.reshape(-1, nffts, spectra.shape[-1]).astype(np.float64)
    rows = []
    for group in groups:
        rows.append(
            np.concatenate(
                [
                    group.min(axis=0),
                    group.max(axis=0),
                    group.sum(axis=0) / nffts,
                    np.array([np.median(column) for column in group.T]),
                    group[0],
                ]
            )
        )
    return np.array(rows)


class qa_m4s_detector(gr_unittest.TestCase):
    def setUp(self):
        self.tb = gr.top_block()
        self.rng = np.random.default_rng(7)

    def tearDown(self):
        self.tb = None

    def run_detector(self, spectra: np.ndarray, nffts: int, max_noutput_items=None, tags=()):
        fft_size = spectra.shape[-1]
        source = blocks.vector_source_f(spectra.ravel().tolist(), False, fft_size, list(tags))
        detector = scos.m4s_detector(fft_size, nffts)
        sink = blocks.vector_sink_f(5 * fft_size)
        self.tb.connect(source, detector, sink)
        if max_noutput_items is None:
            self.tb.run()
        else:
            self.tb.run(max_noutput_items)
        return np.array(sink.data(), np.float32).reshape(-1, 5 * fft_size), sink.tags()

    def test_matches_numpy_for_odd_and_even_sizes(self):
        for fft_size, nffts in ((8, 4), (7, 5), (33, 2), (1, 1), (5, 300)):
            with self.subTest(fft_size=fft_size, nffts=nffts):
                self.tb = gr.top_block()
                spectra = self.rng.exponential(1e-9, (6 * nffts, fft_size)).astype(np.float32)
                detected, _ = self.run_detector(spectra, nffts)
                self.assertEqual(detected.shape, (6, 5 * fft_size))
                np.testing.assert_allclose(detected, reference_m4s(spectra, nffts), rtol=2e-6)

    def test_groups_straddling_work_calls(self):
        fft_size, nffts = 17, 9
        spectra = self.rng.exponential(1.0, (250 * nffts, fft_size)).astype(np.float32)
        # One output per work() call forces every group to arrive in its own call,
        # with the source's chunks cutting groups anywhere.
        detected, _ = self.run_detector(spectra, nffts, max_noutput_items=1)
        np.testing.assert_allclose(detected, reference_m4s(spectra, nffts), rtol=2e-6)

    def test_median_is_exact(self):
        # An even group: the median is the mean of the two middle values, not either one.
        spectra = np.array([[1.0], [10.0], [2.0], [7.0]], np.float32)
        detected, _ = self.run_detector(spectra, 4)
        np.testing.assert_array_equal(detected[0], [1.0, 10.0, 5.0, 4.5, 1.0])

    def test_output_is_finite_for_zeros_and_wide_dynamic_range(self):
        spectra = np.zeros((40, 16), np.float32)
        spectra[1::2] = 3e38
        spectra[::3] = 1e-38
        detected, _ = self.run_detector(spectra, 10)
        self.assertTrue(np.all(np.isfinite(detected)))
        np.testing.assert_allclose(detected, reference_m4s(spectra, 10), rtol=2e-6)

    def test_tags_follow_their_group(self):
        fft_size, nffts = 4, 5
        spectra = np.ones((4 * nffts, fft_size), np.float32)
        tag = gr.tag_t()
        tag.offset, tag.key, tag.value = 2 * nffts, pmt.intern("rx_freq"), pmt.from_double(1e9)
        _, tags = self.run_detector(spectra, nffts, tags=[tag])
        self.assertEqual([(t.offset, pmt.symbol_to_string(t.key)) for t in tags], [(2, "rx_freq")])

    def test_rejects_bad_sizes(self):
        for fft_size, nffts in ((0, 10), (1024, 0), (10.5, 3), (-4, 1)):
            with self.subTest(fft_size=fft_size, nffts=nffts), self.assertRaises(ValueError):
                scos.m4s_detector(fft_size, nffts)


if __name__ == "__main__":
    gr_unittest.run(qa_m4s_detector)
