#!/usr/bin/env python3
"""QA for skip_after_tune: samples dropped after each retune, tags kept and re-dated."""

import numpy as np
import pmt
from gnuradio import blocks, gr, gr_unittest, scos
from gnuradio.scos import tags
from gnuradio.scos.tags import make_tag

START = tags.RadioTime(1_800_000_000, 0.5)
RATE = 1000.0


class qa_skip_after_tune(gr_unittest.TestCase):
    def setUp(self):
        self.tb = gr.top_block()

    def tearDown(self):
        self.tb = None

    def run_skip(self, samples, stream_tags, nskip, max_noutput_items=None):
        source = blocks.vector_source_c(samples.tolist(), False, 1, stream_tags)
        skip = scos.skip_after_tune(nskip)
        sink = blocks.vector_sink_c()
        self.tb.connect(source, skip, sink)
        if max_noutput_items:
            self.tb.run(max_noutput_items)
        else:
            self.tb.run()
        found = {}
        for tag in sink.tags():
            key = pmt.symbol_to_string(tag.key)
            value = (
                tags.RadioTime.from_pmt(tag.value).to_iso8601()
                if key == "rx_time"
                else pmt.to_double(tag.value)
            )
            found.setdefault(key, []).append((tag.offset, value))
        return np.array(sink.data()), found

    def radio_tags(self):
        return [
            make_tag(0, "rx_time", START),
            make_tag(0, "rx_freq", 1e9),
            make_tag(0, "rx_rate", RATE),
            make_tag(600, "rx_freq", 2e9),
            make_tag(600, "rx_time", START.plus(0.6)),
            make_tag(800, "rx_freq", 2e9),  # same frequency: not a retune
        ]

    def test_skips_after_start_and_each_retune(self):
        samples = np.arange(1000, dtype=np.float32).astype(np.complex64)
        for chunk in (None, 7, 100):
            with self.subTest(max_noutput_items=chunk):
                self.tb = gr.top_block()
                out, found = self.run_skip(samples, self.radio_tags(), 100, chunk)
                expected = np.concatenate([samples[100:600], samples[700:]])
                np.testing.assert_array_equal(out, expected)
                self.assertEqual(found["rx_freq"], [(0, 1e9), (500, 2e9), (600, 2e9)])
                self.assertEqual(found["rx_rate"], [(0, RATE)])
                # Each first kept sample is dated as the radio would have dated it.
                self.assertEqual(
                    found["rx_time"],
                    [(0, START.plus(0.1).to_iso8601()), (500, START.plus(0.7).to_iso8601())],
                )

    def test_no_skip_passes_everything(self):
        samples = np.ones(50, np.complex64)
        out, found = self.run_skip(samples, self.radio_tags()[:3], 0)
        self.assertEqual(len(out), 50)
        self.assertEqual(found["rx_time"], [(0, START.to_iso8601())])

    def test_stream_shorter_than_skip_gives_nothing(self):
        out, _ = self.run_skip(np.ones(50, np.complex64), self.radio_tags()[:3], 100)
        self.assertEqual(len(out), 0)

    def test_rejects_negative_or_fractional_skip(self):
        for nskip in (-1, 2.5, True):
            with self.subTest(nskip=nskip), self.assertRaises(ValueError):
                scos.skip_after_tune(nskip)


if __name__ == "__main__":
    gr_unittest.run(qa_skip_after_tune)
