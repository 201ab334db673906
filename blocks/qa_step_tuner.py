#!/usr/bin/env python3
"""QA for step_tuner: one run steps a signal analyzer through frequencies, rates and gains."""

import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
from gnuradio import gr, gr_unittest, scos


def noise_watts(samples: np.ndarray) -> float:
    return float(np.mean(np.abs(samples) ** 2) / (2 * 50.0))


class qa_step_tuner(gr_unittest.TestCase):
    def setUp(self):
        self.directory = tempfile.TemporaryDirectory()
        self.out = Path(self.directory.name)

    def tearDown(self):
        self.directory.cleanup()

    def run_steps(self, frequencies, sample_rate, gain, duration_ms, nskip, device="sim"):
        tb = gr.top_block(catch_exceptions=False)
        first = lambda value: value[0] if isinstance(value, list) else value  # noqa: E731
        tb.source = scos.sigan_source(device, frequencies[0], first(sample_rate), first(gain))
        tb.steps = scos.step_tuner(frequencies, sample_rate, gain, duration_ms, nskip)
        tb.sink = scos.sigmf_sink(str(self.out / "iq"), "complex", split_on_retune=True)
        tb.connect(tb.source, tb.steps, tb.sink)
        tb.msg_connect(tb.steps, "command", tb.source, "command")
        tb.run()
        return [json.loads(Path(meta).read_text()) for meta in tb.sink.recordings]

    def data(self, index: int) -> np.ndarray:
        return np.fromfile(self.out / f"iq-{index:03d}.sigmf-data", dtype=np.complex64)

    def test_one_recording_per_frequency_with_its_rate_and_duration(self):
        recordings = self.run_steps(
            [1e9, 2e9, 3e9], [1e6, 2e6, 2e6], 0.0, [2.0, 3.0, 1.5], nskip=100
        )
        self.assertEqual(len(recordings), 3)
        expected = [(1e9, 1e6, 2000), (2e9, 2e6, 6000), (3e9, 2e6, 3000)]
        times = []
        for index, (meta, (frequency, rate, count)) in enumerate(
            zip(recordings, expected, strict=True)
        ):
            self.assertEqual(meta["global"]["core:sample_rate"], rate)
            self.assertEqual([c["core:frequency"] for c in meta["captures"]], [frequency])
            self.assertEqual(len(self.data(index)), count)
            times.append(meta["captures"][0]["core:datetime"])
        self.assertEqual(times, sorted(times))
        # The simulator's noise (5 dB noise figure) follows each step's rate.
        for index, rate in ((0, 1e6), (1, 2e6)):
            expected_watts = 1.380649e-23 * 290 * rate * 10**0.5
            self.assertAlmostEqual(
                10 * np.log10(noise_watts(self.data(index)) / expected_watts), 0.0, delta=0.3
            )

    def test_gain_steps_at_one_frequency_share_a_recording(self):
        recordings = self.run_steps([1e9, 1e9], 1e6, [0.0, 20.0], 5.0, nskip=0)
        self.assertEqual(len(recordings), 1)
        samples = self.data(0)
        self.assertEqual(len(samples), 10000)
        ratio = noise_watts(samples[5000:]) / noise_watts(samples[:5000])
        self.assertAlmostEqual(10 * np.log10(ratio), 20.0, delta=0.3)

    def test_a_source_started_elsewhere_is_tuned_to_the_first_step(self):
        tb = gr.top_block(catch_exceptions=False)
        tb.source = scos.sigan_source("sim", 5e9, 2e6)
        tb.steps = scos.step_tuner([1e9], 1e6, 0.0, 2.0)
        tb.sink = scos.sigmf_sink(str(self.out / "iq"), "complex", split_on_retune=True)
        tb.connect(tb.source, tb.steps, tb.sink)
        tb.msg_connect(tb.steps, "command", tb.source, "command")
        tb.run()
        (meta,) = [json.loads(Path(path).read_text()) for path in tb.sink.recordings]
        self.assertEqual(meta["captures"][0]["core:frequency"], 1e9)
        self.assertEqual(meta["global"]["core:sample_rate"], 1e6)
        self.assertEqual(len(self.data(0)), 2000)

    def test_bad_steps_are_refused(self):
        cases = [
            ({"frequencies": []}, r"non-empty list"),
            ({"frequencies": [1e9, 2e9], "gain": [1.0]}, r"gain has 1 values for 2"),
            ({"frequencies": [1e9], "duration_ms": 1e-9}, r"at least one sample"),
            ({"frequencies": [-1e9]}, r"frequencies must be positive"),
            ({"frequencies": [1e9], "sample_rate": "fast"}, r"sample_rate must be finite"),
        ]
        for arguments, message in cases:
            with self.subTest(arguments=arguments):
                with self.assertRaisesRegex(ValueError, message):
                    scos.step_tuner(**arguments)

    def test_a_source_that_cannot_retune_stops_the_flowgraph_with_the_reason(self):
        recorded = self.out / "recorded"
        tb = gr.top_block()
        tb.source = scos.sigan_source("sim", 1e9, 1e6)
        tb.head = __import__("gnuradio.blocks").blocks.head(gr.sizeof_gr_complex, 2_000_000)
        tb.sink = scos.sigmf_sink(str(recorded), "complex")
        tb.connect(tb.source, tb.head, tb.sink)
        tb.run()
        program = textwrap.dedent(
            f"""
            from gnuradio import gr, scos
            tb = gr.top_block(catch_exceptions=False)
            tb.source = scos.sigan_source("replay:{recorded}.sigmf-meta", 1e9, 1e6, paced=True)
            tb.steps = scos.step_tuner([1e9, 2e9], 1e6, 0.0, 1.0, retune_timeout=0.5)
            tb.sink = scos.sigmf_sink("{self.out / "out"}", "complex", split_on_retune=True)
            tb.connect(tb.source, tb.steps, tb.sink)
            tb.msg_connect(tb.steps, "command", tb.source, "command")
            tb.run()
            """
        )
        done = subprocess.run(
            [sys.executable, "-c", program], capture_output=True, text=True, timeout=60
        )
        self.assertNotEqual(done.returncode, 0)
        self.assertIn("did not retune to 2e+09 Hz at 1e+06 S/s within 0.5 s", done.stderr)
        self.assertIn("cannot change the frequency", done.stderr)


if __name__ == "__main__":
    gr_unittest.run(qa_step_tuner)
