#!/usr/bin/env python3
"""QA for the simulated signal analyzer against independent numpy computations."""

import math
import time

import numpy as np
import pmt
from gnuradio import blocks, gr, gr_unittest, scos
from gnuradio.scos.items import STREAM_BUFFER_BYTES

K_BOLTZMANN = 1.380649e-23
LOAD_OHMS = 50.0
START_TIME = 1_700_000_000.25


def watts(samples: np.ndarray) -> np.ndarray:
    """Power of each complex sample in volts, P = |x|^2 / (2 R)."""
    samples = samples.astype(np.complex128)
    return (samples.real**2 + samples.imag**2) / (2.0 * LOAD_OHMS)


def dbm(power_watts):
    return 10.0 * np.log10(power_watts) + 30.0


def amplitude(power_dbm: float) -> float:
    return math.sqrt(2.0 * LOAD_OHMS * 10.0 ** ((power_dbm - 30.0) / 10.0))


def tags_named(sink_tags, name: str):
    return [tag for tag in sink_tags if pmt.symbol_to_string(tag.key) == name]


def radio_time(value) -> tuple[int, float]:
    """(seconds, fraction) of an rx_time tuple, checking its UHD types."""
    assert pmt.is_tuple(value) and pmt.length(value) == 2
    seconds, fraction = pmt.tuple_ref(value, 0), pmt.tuple_ref(value, 1)
    assert pmt.is_uint64(seconds) and pmt.is_real(fraction)
    return pmt.to_uint64(seconds), pmt.to_double(fraction)


def overload_state(tag):
    """The overload_sigan entry of a scos_sensor tag (None when absent)."""
    return pmt.to_python(pmt.dict_ref(tag.value, pmt.intern("overload_sigan"), pmt.PMT_NIL))


class retuner(gr.sync_block):
    """Pass-through that retunes ``sim`` once ``after`` samples have flowed past."""

    def __init__(self, sim, after: int, frequency: float):
        gr.sync_block.__init__(self, name="retuner", in_sig=[np.complex64], out_sig=[np.complex64])
        self.sim, self.after, self.new_frequency = sim, after, frequency
        self.retuned = False

    def work(self, input_items, output_items):
        output_items[0][:] = input_items[0]
        if not self.retuned and self.nitems_read(0) >= self.after:
            self.retuned = True
            self.sim.set_frequency(self.new_frequency)
        return len(output_items[0])


class qa_sigan_sim(gr_unittest.TestCase):
    def setUp(self):
        self.tb = gr.top_block()

    def tearDown(self):
        self.tb = None

    def run_sim(self, count: int, max_noutput_items=None, **parameters):
        """Run a fresh flowgraph sim -> head(count) -> sink; return (samples, tags)."""
        self.tb = gr.top_block()
        parameters.setdefault("start_time", START_TIME)
        sim = scos.sigan_sim(**parameters)
        head = blocks.head(gr.sizeof_gr_complex, count)
        sink = blocks.vector_sink_c()
        self.tb.connect(sim, head, sink)
        if max_noutput_items is None:
            self.tb.run()
        else:
            self.tb.run(max_noutput_items)
        samples = np.array(sink.data(), dtype=np.complex64)
        self.assertEqual(len(samples), count)
        return samples, sink.tags()

    # --- noise ---------------------------------------------------------------------

    def test_noise_power_is_k_t_b_times_noise_figure(self):
        count = 1_000_000
        for noise_figure, sample_rate in ((5.0, 14e6), (12.5, 1e6)):
            with self.subTest(noise_figure=noise_figure, sample_rate=sample_rate):
                samples, _ = self.run_sim(
                    count, sample_rate=sample_rate, noise_figure=noise_figure, seed=11
                )
                expected = K_BOLTZMANN * 290.0 * sample_rate * 10.0 ** (noise_figure / 10.0)
                measured = watts(samples).mean()
                # Standard error of the mean is 1/sqrt(1e6) = 0.1 %; allow 1 %.
                self.assertAlmostEqual(measured / expected, 1.0, delta=0.01)
                self.assertAlmostEqual(samples.mean().real / math.sqrt(measured * 100), 0, 2)

    def test_noise_i_and_q_independent_with_equal_power(self):
        samples, _ = self.run_sim(1_000_000, sample_rate=2e6, noise_figure=3.0, seed=5)
        in_phase = samples.real.astype(np.float64)
        quadrature = samples.imag.astype(np.float64)
        power_i, power_q = np.mean(in_phase**2), np.mean(quadrature**2)
        self.assertAlmostEqual(power_i / power_q, 1.0, delta=0.01)
        correlation = np.mean(in_phase * quadrature) / math.sqrt(power_i * power_q)
        self.assertLess(abs(correlation), 0.005)  # 5 standard errors
        # Independent samples: no correlation between neighbours either.
        lag_one = np.mean(in_phase[1:] * in_phase[:-1]) / power_i
        self.assertLess(abs(lag_one), 0.005)

    def test_gain_scales_power_by_exactly_gain_db(self):
        reference, _ = self.run_sim(100_000, sample_rate=1e6, seed=9, gain=0.0)
        for gain in (17.5, -6.0):
            with self.subTest(gain=gain):
                amplified, _ = self.run_sim(100_000, sample_rate=1e6, seed=9, gain=gain)
                ratio_db = 10 * np.log10(watts(amplified) / watts(reference))
                np.testing.assert_allclose(ratio_db, gain, atol=1e-5)
                self.assertAlmostEqual(
                    10 * math.log10(watts(amplified).sum() / watts(reference).sum()), gain, 6
                )

    # --- tones ---------------------------------------------------------------------

    def test_tone_has_exact_power_and_frequency(self):
        sample_rate = 14e6
        for offset, power in ((1.25e6, -30.0), (-3.3e6, -71.2), (0.0, 10.0)):
            with self.subTest(offset=offset, power=power):
                samples, _ = self.run_sim(
                    50_000,
                    sample_rate=sample_rate,
                    noise=False,
                    tones=[{"frequency_offset": offset, "power": power}],
                )
                np.testing.assert_allclose(dbm(watts(samples)), power, atol=1e-4)
                increments = np.angle(samples[1:].astype(np.complex128) * np.conj(samples[:-1]))
                frequencies = increments * sample_rate / (2 * np.pi)
                np.testing.assert_allclose(frequencies, offset, atol=5.0)  # per sample
                self.assertAlmostEqual(frequencies.mean(), offset, delta=0.01)
                self.assertAlmostEqual(np.angle(samples[0]), 0.0, 6)  # starts at phase 0

    def test_two_tones_add(self):
        first = {"frequency_offset": 1e5, "power": -40.0}
        second = {"frequency_offset": -2.5e5, "power": -46.0}
        common = {"sample_rate": 1e6, "noise": False}
        alone_1, _ = self.run_sim(20_000, tones=[first], **common)
        alone_2, _ = self.run_sim(20_000, tones=[second], **common)
        both, _ = self.run_sim(20_000, tones=[first, second], **common)
        np.testing.assert_allclose(both, alone_1 + alone_2, atol=1e-6 * amplitude(-40.0))
        # Over whole cycles of the difference frequency the powers add in watts.
        expected = 10 ** ((-40.0 - 30) / 10) + 10 ** ((-46.0 - 30) / 10)
        self.assertAlmostEqual(watts(both).mean() / expected, 1.0, 5)
        t = np.arange(20_000) / 1e6
        independent = amplitude(-40.0) * np.exp(2j * np.pi * 1e5 * t) + amplitude(-46.0) * np.exp(
            -2j * np.pi * 2.5e5 * t
        )
        np.testing.assert_allclose(both, independent, atol=1e-5 * amplitude(-40.0))

    def test_phase_continuous_across_work_calls(self):
        parameters = {
            "sample_rate": 3e6,
            "noise": False,
            "tones": [
                {"frequency_offset": 123_456.7, "power": -40.0},
                {"frequency_offset": -1.1e6, "power": -55.0},
            ],
        }
        large, _ = self.run_sim(100_000, **parameters)
        for max_noutput_items in (97, 1000, 4096):
            small, _ = self.run_sim(100_000, max_noutput_items=max_noutput_items, **parameters)
            np.testing.assert_array_equal(small, large)
        # and the waveform is the single continuous exponential sum
        t = np.arange(100_000) / 3e6
        expected = amplitude(-40.0) * np.exp(2j * np.pi * 123_456.7 * t) + amplitude(
            -55.0
        ) * np.exp(-2j * np.pi * 1.1e6 * t)
        np.testing.assert_allclose(small, expected, atol=2e-5 * amplitude(-40.0))

    # --- bursts --------------------------------------------------------------------

    def check_bursts(self, sample_rate, start, period, duration, count=60_000):
        samples, _ = self.run_sim(
            count,
            max_noutput_items=777,
            sample_rate=sample_rate,
            noise=False,
            bursts=[
                {
                    "frequency_offset": sample_rate / 8,
                    "power": -20.0,
                    "period": period,
                    "duration": duration,
                    "start": start,
                }
            ],
        )
        index = np.arange(count)
        first, every, length = (round(value * sample_rate) for value in (start, period, duration))
        expected_on = (index >= first) & ((index - first) % every < length)
        on = samples != 0
        mismatched = np.nonzero(on != expected_on)[0]
        self.assertEqual(len(mismatched), 0, f"burst gating wrong at samples {mismatched[:8]}")
        np.testing.assert_allclose(dbm(watts(samples[on])), -20.0, atol=1e-4)

    def test_bursts_on_exactly_during_their_windows(self):
        # Times that are exact in binary ...
        self.check_bursts(2.0**20, 150 / 2.0**20, 1000 / 2.0**20, 250 / 2.0**20)
        # ... and decimal times that land on whole samples only after rounding.
        self.check_bursts(1e6, 1.5e-4, 1e-3, 2.5e-4)
        self.check_bursts(1e6, 0.0, 1e-3, 1e-4)
        self.check_bursts(14e6, 0.1e-3, 0.7e-3, 0.3e-3)
        self.check_bursts(3e6, 1e-3, 1e-2, 3e-3)

    def test_burst_with_duration_equal_to_period_is_always_on_after_start(self):
        self.check_bursts(1e6, 2e-3, 1e-3, 1e-3, count=20_000)

    # --- determinism ---------------------------------------------------------------

    def test_same_seed_same_samples_different_seed_different(self):
        parameters = {
            "sample_rate": 1e6,
            "tones": [{"frequency_offset": 1e4, "power": -90.0}],
            "bursts": [{"frequency_offset": -2e4, "power": -80, "period": 1e-3, "duration": 5e-4}],
        }
        first, _ = self.run_sim(50_000, seed=42, **parameters)
        again, _ = self.run_sim(50_000, max_noutput_items=100, seed=42, **parameters)
        other, _ = self.run_sim(50_000, seed=43, **parameters)
        np.testing.assert_array_equal(first, again)
        self.assertGreater(np.count_nonzero(first != other), 49_000)

    # --- tags ----------------------------------------------------------------------

    def test_radio_tags_at_first_sample(self):
        _, sink_tags = self.run_sim(
            1000, sample_rate=2.5e6, frequency=3.55e9, start_time=START_TIME
        )
        (time_tag,) = tags_named(sink_tags, "rx_time")
        (frequency_tag,) = tags_named(sink_tags, "rx_freq")
        (rate_tag,) = tags_named(sink_tags, "rx_rate")
        self.assertEqual((time_tag.offset, frequency_tag.offset, rate_tag.offset), (0, 0, 0))
        self.assertEqual(radio_time(time_tag.value), (1_700_000_000, 0.25))
        self.assertEqual(pmt.to_double(frequency_tag.value), 3.55e9)
        self.assertEqual(pmt.to_double(rate_tag.value), 2.5e6)

    def test_rx_time_without_start_time_is_the_wall_clock_at_start_not_at_build(self):
        sim = scos.sigan_sim(sample_rate=1e6)
        head = blocks.head(gr.sizeof_gr_complex, 1000)
        sink = blocks.vector_sink_c()
        self.tb.connect(sim, head, sink)
        time.sleep(0.3)  # built ahead of its start, as the runner builds a task's flowgraph
        before = time.time()
        self.tb.run()
        (time_tag,) = tags_named(sink.tags(), "rx_time")
        seconds, fraction = radio_time(time_tag.value)
        self.assertGreaterEqual(seconds + fraction, before)
        self.assertLess(seconds + fraction, time.time())

    def test_set_frequency_while_running_retags(self):
        sample_rate, after = 1e6, 20_000
        sim = scos.sigan_sim(
            frequency=700e6, sample_rate=sample_rate, noise=False, start_time=START_TIME
        )
        middle = retuner(sim, after, 3.5e9)
        buffered = 2 * STREAM_BUFFER_BYTES // gr.sizeof_gr_complex  # with rounding up
        head = blocks.head(gr.sizeof_gr_complex, after + buffered + 10_000)
        sink = blocks.vector_sink_c()
        self.tb.connect(sim, middle, head, sink)
        self.tb.run(1024)
        self.assertTrue(middle.retuned)
        frequency_tags = tags_named(sink.tags(), "rx_freq")
        time_tags = tags_named(sink.tags(), "rx_time")
        self.assertEqual([tag.offset for tag in frequency_tags][:1], [0])
        self.assertEqual([pmt.to_double(tag.value) for tag in frequency_tags], [700e6, 3.5e9])
        retune = frequency_tags[1].offset
        # The sim cannot have run further ahead than the buffer between the blocks.
        self.assertGreaterEqual(retune, after)
        self.assertLess(retune, after + buffered)
        self.assertEqual([tag.offset for tag in time_tags], [0, retune])
        seconds, fraction = radio_time(time_tags[1].value)
        elapsed = 0.25 + retune / sample_rate
        self.assertEqual(seconds, 1_700_000_000 + math.floor(elapsed))
        self.assertAlmostEqual(fraction, elapsed - math.floor(elapsed), 9)
        self.assertEqual(len(tags_named(sink.tags(), "rx_rate")), 2)

    # --- overload ------------------------------------------------------------------

    def test_overload_clips_and_tags(self):
        samples, sink_tags = self.run_sim(
            10_000,
            sample_rate=1e6,
            noise=False,
            tones=[{"frequency_offset": 1e5, "power": -20.0}],
            max_input_power=-30.0,
        )
        np.testing.assert_allclose(np.abs(samples), amplitude(-30.0), rtol=1e-5)
        np.testing.assert_allclose(dbm(watts(samples)), -30.0, atol=1e-4)
        (sensor,) = tags_named(sink_tags, "scos_sensor")
        self.assertEqual(sensor.offset, 0)
        self.assertIs(
            overload_state(sensor),
            True,
        )

    def test_below_threshold_not_clipped_and_tagged_false(self):
        samples, sink_tags = self.run_sim(
            10_000,
            sample_rate=1e6,
            noise=False,
            tones=[{"frequency_offset": 1e5, "power": -40.0}],
            max_input_power=-30.0,
        )
        np.testing.assert_allclose(dbm(np.mean(watts(samples))), -40.0, atol=1e-4)
        (sensor,) = tags_named(sink_tags, "scos_sensor")
        self.assertEqual(sensor.offset, 0)
        self.assertIs(
            overload_state(sensor),
            False,
        )

    def test_overload_tag_marks_burst_onset(self):
        samples, sink_tags = self.run_sim(
            20_000,
            max_noutput_items=1000,
            sample_rate=1e6,
            noise=False,
            tones=[{"frequency_offset": 1e4, "power": -50.0}],
            bursts=[
                {
                    "frequency_offset": 2e5,
                    "power": -10.0,
                    "period": 1.0,
                    "duration": 3e-3,
                    "start": 5e-3,
                }
            ],
            max_input_power=-30.0,
        )
        states = [
            (
                tag.offset,
                overload_state(tag),
            )
            for tag in tags_named(sink_tags, "scos_sensor")
        ]
        self.assertEqual(states[:2], [(0, False), (5000, True)])
        self.assertEqual(len(states), 3)
        recovered, state = states[2]
        self.assertFalse(state)
        self.assertTrue(8000 <= recovered < 9000, recovered)
        self.assertLessEqual(np.abs(samples).max(), amplitude(-30.0) * (1 + 1e-6))
        np.testing.assert_allclose(dbm(watts(samples[:5000])), -50.0, atol=1e-4)

    def test_signals_outside_the_band_are_filtered_out(self):
        tones = [
            {"frequency_offset": 6e5, "power": -30},
            {"frequency_offset": -5e5, "power": -30},  # the band edge is outside too
            {"frequency_offset": 1e5, "power": -40},
        ]
        samples, _ = self.run_sim(10000, sample_rate=1e6, noise=False, tones=tones)
        np.testing.assert_allclose(dbm(np.mean(watts(samples))), -40.0, atol=1e-4)

    def test_rate_change_keeps_time_and_noise_right(self):
        self.tb = gr.top_block()
        sim = scos.sigan_sim(sample_rate=1e6, start_time=START_TIME, noise_figure=5.0)
        sim.set_sample_rate(4e6)  # applied at the first sample
        head = blocks.head(gr.sizeof_gr_complex, 40000)
        sink = blocks.vector_sink_c()
        self.tb.connect(sim, head, sink)
        self.tb.run()
        samples = np.array(sink.data(), dtype=np.complex64)
        expected = 1.380649e-23 * 290 * 4e6 * 10**0.5
        self.assertAlmostEqual(float(dbm(np.mean(watts(samples))) - dbm(expected)), 0.0, delta=0.1)
        rates = [pmt.to_double(tag.value) for tag in tags_named(sink.tags(), "rx_rate")]
        self.assertEqual(rates, [4e6])

    # --- parameters ----------------------------------------------------------------

    def test_bad_parameters_raise_value_error(self):
        cases = [
            ({"tones": [{"frequency_offset": 0.0}]}, r"tones\[0\].*missing \['power'\]"),
            (
                {"bursts": [{"frequency_offset": 0.0, "power": -3, "period": 1.0}]},
                r"bursts\[0\].*missing \['duration'\]",
            ),
            (
                {"tones": [{"frequency_offset": 0.0, "power": -3, "phase": 1}]},
                r"unknown \['phase'\]",
            ),
            (
                {"tones": [{"frequency_offset": 0.0, "power": "-30 dBm"}]},
                r"tones\[0\].*power must be a finite number",
            ),
            (
                {"tones": [{"frequency_offset": 0.0, "power": float("nan")}]},
                r"power must be a finite number",
            ),
            (
                {
                    "bursts": [
                        {"frequency_offset": 0, "power": -3, "period": 1e-3, "duration": 2e-3}
                    ]
                },
                r"bursts\[0\].*duration <= period",
            ),
            ({"sample_rate": 0.0}, r"sample_rate must be positive"),
            ({"sample_rate": -1e6}, r"sample_rate must be positive"),
        ]
        for parameters, message in cases:
            with self.subTest(parameters=parameters):
                with self.assertRaisesRegex(ValueError, message):
                    scos.sigan_sim(**parameters)


if __name__ == "__main__":
    gr_unittest.run(qa_sigan_sim)
