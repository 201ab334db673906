#!/usr/bin/env python3
"""QA for the M4S detector against an independent numpy computation."""

import importlib
from unittest import mock

import numpy as np
import pmt
from gnuradio import blocks, gr, gr_unittest, scos

# The package exports the block class under the module's name, so fetch the module itself.
m4s_module = importlib.import_module("gnuradio.scos.m4s_detector")

# (nffts, fft_size) for detect(): odd and even counts, one and two spectra, one bin, 4096 bins.
DETECT_SIZES = (
    (1, 1),
    (1, 7),
    (2, 1),
    (2, 16),
    (3, 5),
    (4, 33),
    (300, 1024),
    (301, 1024),
    (300, 1),
    (5, 4096),
)


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

    def test_detect_equals_numpy_on_both_selection_paths(self):
        # The sort and the partition path are timed against each other at run time; check
        # both, on continuous data and on data full of ties.
        for prefer_sort in (True, False):
            for nffts, fft_size in DETECT_SIZES:
                for ties in (False, True):
                    with self.subTest(
                        prefer_sort=prefer_sort, nffts=nffts, fft_size=fft_size, ties=ties
                    ):
                        self.check_detect(nffts, fft_size, ties, prefer_sort)

    def check_detect(self, nffts: int, fft_size: int, ties: bool, prefer_sort: bool) -> None:
        shape = (3, nffts, fft_size)
        if ties:
            groups = self.rng.integers(0, 6, shape).astype(np.float32) * np.float32(0.3)
        else:
            groups = self.rng.exponential(1e-3, shape).astype(np.float32)
        unchanged = groups.copy()
        out = np.empty((3, 5, fft_size), np.float32)
        with mock.patch.object(m4s_module, "_sort_is_faster", return_value=prefer_sort):
            m4s_module.detect(groups, out)
        np.testing.assert_array_equal(groups, unchanged)
        np.testing.assert_array_equal(out[:, 0], np.min(groups, axis=1))
        np.testing.assert_array_equal(out[:, 1], np.max(groups, axis=1))
        # Only the rounding of the float64 mean to float32 (half an ulp) is allowed.
        np.testing.assert_allclose(
            out[:, 2],
            np.mean(groups, axis=1, dtype=np.float64),
            rtol=np.finfo(np.float32).eps / 2,
            atol=0,
        )
        np.testing.assert_array_equal(out[:, 3], np.median(groups, axis=1))
        np.testing.assert_array_equal(out[:, 4], groups[:, 0])

    def test_detect_median_follows_numpy_for_nan_and_huge_values(self):
        groups = np.ones((1, 4, 3), np.float32)
        groups[0, 2, 0] = np.nan  # a NaN anywhere in a bin makes np.median NaN
        groups[0, 1:, 1] = 3e38  # np.median's float32 mean of 3e38 and 3e38 overflows
        out = np.empty((1, 5, 3), np.float32)
        for prefer_sort in (True, False):
            with (
                self.subTest(prefer_sort=prefer_sort),
                mock.patch.object(m4s_module, "_sort_is_faster", return_value=prefer_sort),
                np.errstate(over="ignore"),
            ):
                m4s_module.detect(groups, out)
                np.testing.assert_array_equal(out[:, 3], np.median(groups, axis=1))
                self.assertTrue(np.isnan(out[0, 3, 0]) and np.isinf(out[0, 3, 1]))

    def test_rejects_bad_sizes(self):
        for fft_size, nffts in ((0, 10), (1024, 0), (10.5, 3), (-4, 1)):
            with self.subTest(fft_size=fft_size, nffts=nffts), self.assertRaises(ValueError):
                scos.m4s_detector(fft_size, nffts)


if __name__ == "__main__":
    gr_unittest.run(qa_m4s_detector)
