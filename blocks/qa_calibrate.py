#!/usr/bin/env python3
"""QA for the calibrate block against independent numpy computations."""

import os
import tempfile

import numpy as np
import pmt
from gnuradio import blocks, gr, gr_unittest, scos
from gnuradio.scos import windows
from gnuradio.scos.tags import make_tag

LOAD_OHMS = 50.0

# 2 sample rates x 3 frequencies, deliberately listed out of order.
RATES = (10e6, 20e6)
FREQUENCIES = (1e9, 2e9, 4e9)
GAIN_SIGAN = {10e6: (30.0, 28.0, 22.0), 20e6: (26.0, 25.0, 20.0)}
GAIN_PRESELECTOR = {10e6: (10.0, 12.0, 9.0), 20e6: (11.0, 13.0, 7.0)}
NOISE_FIGURE = {10e6: (4.0, 5.0, 7.0), 20e6: (4.5, 6.0, 8.0)}
PROPERTIES = {
    "gain_sigan": GAIN_SIGAN,
    "gain_preselector": GAIN_PRESELECTOR,
    "noise_figure_sensor": NOISE_FIGURE,
}
CALIBRATION_YAML = """\
calibration_datetime: "2026-10-01T12:00:00Z"
reference: "antenna terminal"
points:
"""
for _rate in reversed(RATES):
    for _index in (2, 0, 1):
        CALIBRATION_YAML += (
            f"  - {{sample_rate: {_rate:.6e}, frequency: {FREQUENCIES[_index]:.6e}, "
            f"gain_sigan: {GAIN_SIGAN[_rate][_index]}, "
            f"gain_preselector: {GAIN_PRESELECTOR[_rate][_index]}, "
            f"noise_figure_sensor: {NOISE_FIGURE[_rate][_index]}}}\n"
        )


def expected_properties(frequency: float, sample_rate: float) -> dict:
    """Linear in frequency at each calibrated rate, then linear between the rates."""
    weight = (sample_rate - RATES[0]) / (RATES[1] - RATES[0])
    result = {}
    for name, table in PROPERTIES.items():
        low, high = (np.interp(frequency, FREQUENCIES, table[rate]) for rate in RATES)
        result[name] = float(low + weight * (high - low))
    return result


def expected_gain(frequency: float, sample_rate: float) -> float:
    properties = expected_properties(frequency, sample_rate)
    return properties["gain_sigan"] + properties["gain_preselector"]


def reference_dbm(power_v2: np.ndarray, gain_db: float = 0.0) -> np.ndarray:
    return 10 * np.log10(power_v2.astype(np.float64) / (2 * LOAD_OHMS)) + 30 - gain_db


def calibration_tags(sink_tags):
    return [tag for tag in sink_tags if pmt.symbol_to_string(tag.key) == "scos_calibration"]


class qa_calibrate(gr_unittest.TestCase):
    def setUp(self):
        self.tb = gr.top_block()
        self.rng = np.random.default_rng(2026)
        handle, self.calibration_file = tempfile.mkstemp(suffix=".yaml")
        with os.fdopen(handle, "w") as stream:
            stream.write(CALIBRATION_YAML)

    def tearDown(self):
        self.tb = None
        os.remove(self.calibration_file)

    def run_dbm(self, power, vlen=1, input_tags=(), max_noutput_items=None, **parameters):
        self.tb = gr.top_block()
        source = blocks.vector_source_f(
            np.asarray(power, np.float32).ravel().tolist(), False, vlen, list(input_tags)
        )
        block = scos.calibrate(mode="dbm", vlen=vlen, **parameters)
        sink = blocks.vector_sink_f(vlen)
        self.tb.connect(source, block, sink)
        if max_noutput_items is None:
            self.tb.run()
        else:
            self.tb.run(max_noutput_items)
        return np.array(sink.data(), np.float32).reshape(-1, vlen), sink.tags()

    # --- dbm, no calibration -------------------------------------------------------

    def test_dbm_without_calibration_matches_power_convention(self):
        power = 10 ** self.rng.uniform(-16, 2, 5000)
        out, _ = self.run_dbm(power)
        np.testing.assert_allclose(out[:, 0], reference_dbm(power.astype(np.float32)), atol=1e-4)
        # 1 V peak across 50 ohm is 10 mW = 10 dBm.
        out, _ = self.run_dbm([1.0, 100.0])
        np.testing.assert_allclose(out[:, 0], [10.0, 30.0], atol=1e-5)

    def test_zero_and_tiny_power_read_the_floor_never_nan(self):
        power = np.array([0.0, 1e-40, 1e-27, 0.0, 1e-3], np.float32)
        out, _ = self.run_dbm(power)
        self.assertTrue(np.all(np.isfinite(out)))
        np.testing.assert_allclose(out[[0, 1, 3], 0], -270.0, atol=1e-4)
        # 1e-27 V^2 is 1e-29 W, -260 dBm: above the 1e-30 W floor, so read as such.
        np.testing.assert_allclose(out[[2, 4], 0], reference_dbm(power[[2, 4]]), atol=1e-4)
        self.assertAlmostEqual(float(out[2, 0]), -260.0, 4)

    def test_dbm_vectors(self):
        for vlen in (2, 7, 256):
            with self.subTest(vlen=vlen):
                power = 10 ** self.rng.uniform(-14, -2, (40, vlen))
                out, _ = self.run_dbm(power, vlen=vlen, max_noutput_items=3)
                self.assertEqual(out.shape, (40, vlen))
                expected = reference_dbm(power.astype(np.float32))
                np.testing.assert_allclose(out, expected, atol=1e-4)

    def test_fft_tone_reads_its_power_for_every_window(self):
        fft_size, tone_bin, tone_dbm = 128, 19, -37.3
        amplitude = np.sqrt(2 * LOAD_OHMS * 10 ** ((tone_dbm - 30) / 10))
        tone = amplitude * np.exp(2j * np.pi * tone_bin * np.arange(fft_size) / fft_size)
        for name in ("flattop", "hanning", "rectangular", "blackman-harris"):
            with self.subTest(window=name):
                spectrum = np.abs(np.fft.fft(windows.taps(name, fft_size) * tone)) ** 2
                out, _ = self.run_dbm(
                    np.tile(spectrum, (3, 1)),
                    vlen=fft_size,
                    fft_size=fft_size,
                    window=name,
                )
                np.testing.assert_allclose(out[:, tone_bin], tone_dbm, atol=0.01)
                # Without the window correction the reading would be off by the
                # window's coherent gain (0 dB only for the rectangular window).
                uncorrected, _ = self.run_dbm(spectrum, vlen=fft_size)
                coherent_gain_db = 20 * np.log10(windows.taps(name, fft_size).sum())
                np.testing.assert_allclose(
                    uncorrected[0, tone_bin] - out[0, tone_bin], coherent_gain_db, atol=1e-3
                )

    # --- dbm, with a calibration file ----------------------------------------------

    def test_calibration_gain_at_constructor_frequency(self):
        power = 10 ** self.rng.uniform(-12, -4, 500)
        for frequency, rate in ((1.5e9, 10e6), (3e9, 20e6), (2e9, 14e6), (1e9, 10e6)):
            with self.subTest(frequency=frequency, rate=rate):
                out, sink_tags = self.run_dbm(
                    power,
                    calibration_file=self.calibration_file,
                    frequency=frequency,
                    sample_rate=rate,
                )
                gain = expected_gain(frequency, rate)
                expected = reference_dbm(power.astype(np.float32), gain)
                np.testing.assert_allclose(out[:, 0], expected, atol=1e-4)
                (announced,) = calibration_tags(sink_tags)
                self.assertEqual(announced.offset, 0)
                self.assertAlmostEqual(
                    pmt.to_python(announced.value)["gain_sigan"],
                    expected_properties(frequency, rate)["gain_sigan"],
                    9,
                )

    def test_retune_tags_switch_calibration_at_their_item(self):
        count, retune_at, rerate_at = 600, 211, 437
        power = 10 ** self.rng.uniform(-12, -4, count)
        input_tags = [make_tag(retune_at, "rx_freq", 3e9), make_tag(rerate_at, "rx_rate", 14e6)]
        segments = [
            (0, retune_at, 1.5e9, 10e6),
            (retune_at, rerate_at, 3e9, 10e6),
            (rerate_at, count, 3e9, 14e6),
        ]
        for max_noutput_items in (None, 64, 1):
            with self.subTest(max_noutput_items=max_noutput_items):
                out, sink_tags = self.run_dbm(
                    power,
                    input_tags=input_tags,
                    max_noutput_items=max_noutput_items,
                    calibration_file=self.calibration_file,
                    frequency=1.5e9,
                    sample_rate=10e6,
                )
                expected = np.concatenate(
                    [
                        reference_dbm(power[begin:end].astype(np.float32), expected_gain(f, r))
                        for begin, end, f, r in segments
                    ]
                )
                np.testing.assert_allclose(out[:, 0], expected, atol=1e-4)

                calibration = calibration_tags(sink_tags)
                self.assertEqual([tag.offset for tag in calibration], [0, retune_at, rerate_at])
                for tag, (_, _, frequency, rate) in zip(calibration, segments, strict=True):
                    announced = pmt.to_python(tag.value)
                    wanted = expected_properties(frequency, rate)
                    self.assertEqual(set(announced), set(wanted))
                    for name, value in wanted.items():
                        self.assertAlmostEqual(announced[name], value, 9, name)

                passed = [
                    (pmt.symbol_to_string(tag.key), tag.offset, pmt.to_double(tag.value))
                    for tag in sink_tags
                    if pmt.symbol_to_string(tag.key) in ("rx_freq", "rx_rate")
                ]
                self.assertEqual(
                    sorted(passed), [("rx_freq", retune_at, 3e9), ("rx_rate", rerate_at, 14e6)]
                )

    def test_retune_deep_into_a_long_stream(self):
        # Tags far past the first work() call (GNU Radio hands out ~8k items a call).
        count, retune_at = 100_000, 70_001
        power = np.full(count, 1e-6, np.float32)
        out, sink_tags = self.run_dbm(
            power,
            input_tags=[make_tag(retune_at, "rx_freq", 3e9)],
            calibration_file=self.calibration_file,
            frequency=1.5e9,
            sample_rate=10e6,
        )
        before = reference_dbm(power[:1], expected_gain(1.5e9, 10e6))[0]
        after = reference_dbm(power[:1], expected_gain(3e9, 10e6))[0]
        np.testing.assert_allclose(out[:retune_at, 0], before, atol=1e-4)
        np.testing.assert_allclose(out[retune_at:, 0], after, atol=1e-4)
        self.assertEqual([tag.offset for tag in calibration_tags(sink_tags)], [0, retune_at])

    def test_retune_to_same_calibration_adds_no_tag(self):
        power = np.full(100, 1e-6, np.float32)
        _, sink_tags = self.run_dbm(
            power,
            input_tags=[make_tag(50, "rx_freq", 1.5e9)],
            calibration_file=self.calibration_file,
            frequency=1.5e9,
            sample_rate=10e6,
        )
        self.assertEqual([t.offset for t in calibration_tags(sink_tags)], [0])

    # --- iq ------------------------------------------------------------------------

    def test_iq_divides_by_amplitude_gain(self):
        samples = (self.rng.normal(size=3000) + 1j * self.rng.normal(size=3000)) * 1e-3
        samples = samples.astype(np.complex64)
        input_tags = [make_tag(1000, "rx_freq", 4e9)]
        source = blocks.vector_source_c(samples.tolist(), False, 1, input_tags)
        block = scos.calibrate(
            mode="iq", calibration_file=self.calibration_file, frequency=2e9, sample_rate=20e6
        )
        sink = blocks.vector_sink_c()
        self.tb.connect(source, block, sink)
        self.tb.run()
        out = np.array(sink.data(), np.complex64)
        gains = np.where(np.arange(3000) < 1000, expected_gain(2e9, 20e6), expected_gain(4e9, 20e6))
        expected = samples / 10 ** (gains / 20)
        np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-12)
        # power falls by exactly the calibration gain
        ratio_db = 10 * np.log10(np.abs(out[:1000]) ** 2 / np.abs(samples[:1000]) ** 2)
        np.testing.assert_allclose(ratio_db, -expected_gain(2e9, 20e6), atol=1e-4)

    def test_iq_without_calibration_is_identity(self):
        samples = (self.rng.normal(size=100) + 1j * self.rng.normal(size=100)).astype(np.complex64)
        source = blocks.vector_source_c(samples.tolist())
        block = scos.calibrate(mode="iq")
        sink = blocks.vector_sink_c()
        self.tb.connect(source, block, sink)
        self.tb.run()
        np.testing.assert_array_equal(np.array(sink.data(), np.complex64), samples)

    # --- parameters ----------------------------------------------------------------

    def test_bad_parameters_raise_value_error(self):
        cases = [
            ({"mode": "watts"}, r"mode must be one of iq, dbm"),
            ({"mode": "IQ"}, r"mode must be one of"),
            ({"vlen": 0}, r"vlen must be a positive integer"),
            ({"vlen": 2.5}, r"vlen must be a positive integer"),
            ({"load_ohms": 0.0}, r"load_ohms must be positive"),
            ({"load_ohms": -50.0}, r"load_ohms must be positive"),
            ({"sample_rate": 0.0}, r"sample_rate must be positive"),
            ({"calibration_file": "/nonexistent/cal.yaml"}, r"/nonexistent/cal.yaml"),
        ]
        for parameters, message in cases:
            with self.subTest(parameters=parameters):
                with self.assertRaisesRegex(ValueError, message):
                    scos.calibrate(**parameters)


if __name__ == "__main__":
    gr_unittest.run(qa_calibrate)
