#!/usr/bin/env python3
"""QA for the signal-analyzer source: simulator, replay, osmosdr (IQ file), absent devices."""

import importlib
import math
import socket
import tempfile
import time
from pathlib import Path

import numpy as np
import pmt
from gnuradio import blocks, gr, gr_unittest, scos, uhd
from gnuradio.scos import tags
from gnuradio.scos.items import STREAM_BUFFER_BYTES
from gnuradio.scos.tags import RadioTime

# The module (``scos.sigan_source`` is the block class) for its helpers and constants.
module = importlib.import_module("gnuradio.scos.sigan_source")

K_BOLTZMANN = 1.380649e-23
LOAD_OHMS = 50.0
START_TIME = 1_700_000_000.25

# Two sample rates by two frequencies; at 700 MHz the gain and noise figure are the
# averages of their neighbours, at 1.5 MS/s the averages of the two rates.
CALIBRATION = """\
calibration_datetime: "2026-10-01T12:00:00Z"
reference: "antenna terminal"
points:
  - {sample_rate: 1.0e6, frequency: 600.0e6, gain_preselector: 10.0, gain_sigan: 20.0,
     noise_figure_sensor: 4.0, 1db_compression_point_sigan: -10.0}
  - {sample_rate: 1.0e6, frequency: 800.0e6, gain_preselector: 10.0, gain_sigan: 30.0,
     noise_figure_sensor: 8.0, 1db_compression_point_sigan: -20.0}
  - {sample_rate: 2.0e6, frequency: 600.0e6, gain_preselector: 10.0, gain_sigan: 24.0,
     noise_figure_sensor: 6.0, 1db_compression_point_sigan: -10.0}
  - {sample_rate: 2.0e6, frequency: 800.0e6, gain_preselector: 10.0, gain_sigan: 34.0,
     noise_figure_sensor: 10.0, 1db_compression_point_sigan: -20.0}
"""

# A retune reaches the samples after those already in the source's output buffer.
RETUNE_LATENCY = 2 * STREAM_BUFFER_BYTES // gr.sizeof_gr_complex


def watts(samples: np.ndarray) -> np.ndarray:
    samples = samples.astype(np.complex128)
    return (samples.real**2 + samples.imag**2) / (2.0 * LOAD_OHMS)


def dbm(power_watts):
    return 10.0 * np.log10(power_watts) + 30.0


def thermal_watts(sample_rate: float, noise_figure_db: float, gain_db: float) -> float:
    return K_BOLTZMANN * 290.0 * sample_rate * 10 ** (noise_figure_db / 10) * 10 ** (gain_db / 10)


def tags_named(sink_tags, name: str):
    return [tag for tag in sink_tags if pmt.symbol_to_string(tag.key) == name]


def seconds(value) -> float:
    """An rx_time tuple (uint64 seconds, double fraction) as float seconds, checking types."""
    assert pmt.is_tuple(value) and pmt.length(value) == 2
    whole, fraction = pmt.tuple_ref(value, 0), pmt.tuple_ref(value, 1)
    assert pmt.is_uint64(whole) and pmt.is_real(fraction)
    return pmt.to_uint64(whole) + pmt.to_double(fraction)


def radio_tags_at(sink_tags, offset: int) -> dict:
    """{key: value} of the rx_time/rx_freq/rx_rate tags at ``offset``."""
    found = {}
    for tag in sink_tags:
        key = pmt.symbol_to_string(tag.key)
        if tag.offset == offset and key in ("rx_time", "rx_freq", "rx_rate"):
            found[key] = seconds(tag.value) if key == "rx_time" else pmt.to_double(tag.value)
    return found


class actions_after(gr.sync_block):
    """Pass-through that calls each ``(after, action)`` once ``after`` samples went past."""

    def __init__(self, schedule):
        gr.sync_block.__init__(
            self, name="actions_after", in_sig=[np.complex64], out_sig=[np.complex64]
        )
        self.schedule = list(schedule)
        self.done = 0

    def work(self, input_items, output_items):
        output_items[0][:] = input_items[0]
        while self.done < len(self.schedule) and self.nitems_read(0) >= self.schedule[self.done][0]:
            self.schedule[self.done][1]()
            self.done += 1
        return len(output_items[0])


class fake_usrp(gr.sync_block):
    """Stands in for gr-uhd's usrp_source: the calls sigan_source makes, tagged like UHD.

    Its master clock is 61.44 MHz, so it runs at 61.44e6 / n samples/s; its own clock
    counts from power-up until it is set.
    """

    def __init__(self, device_addr, stream_args):
        gr.sync_block.__init__(self, name="fake_usrp", in_sig=None, out_sig=[np.complex64])
        self.device_addr, self.channels = device_addr, list(stream_args.channels)
        self.settings = {}
        self.clock = RadioTime(12, 0.5)

    def get_freq_range(self, chan=0):
        return uhd.meta_range_t(70e6, 6e9, 0.0)

    def get_samp_rates(self):
        return uhd.meta_range_t(62.5e3, 56e6, 0.0)

    def get_gain_range(self, chan=0):
        return uhd.meta_range_t(0.0, 76.0, 1.0)

    def get_antennas(self, chan=0):
        return ["TX/RX", "RX2"]

    def get_usrp_info(self, chan=0):
        return {"mboard_id": "B210", "mboard_serial": "31F00D", "rx_subdev_name": "FE-RX2"}

    def set_samp_rate(self, rate):
        self.settings["rate"] = 61.44e6 / max(1, round(61.44e6 / rate))

    def get_samp_rate(self):
        return self.settings["rate"]

    def set_center_freq(self, request, chan=0):
        self.settings["frequency"] = request.target_freq

    def get_center_freq(self, chan=0):
        return self.settings["frequency"]

    def set_gain(self, gain, chan=0):
        self.settings["gain"] = gain

    def set_antenna(self, antenna, chan=0):
        self.settings["antenna"] = antenna

    def get_time_now(self, mboard=0):
        return uhd.time_spec(self.clock.seconds, self.clock.fraction)

    def set_time_now(self, spec, mboard=0):
        self.clock = RadioTime(spec.get_full_secs(), spec.get_frac_secs())

    def work(self, input_items, output_items):
        if self.nitems_written(0) == 0:
            settings = self.settings
            tags.add_radio_tags(self, 0, self.clock, settings["frequency"], settings["rate"])
        output_items[0][:] = 0
        return len(output_items[0])


class qa_sigan_source(gr_unittest.TestCase):
    def setUp(self):
        self.tb = gr.top_block()
        self._folder = tempfile.TemporaryDirectory()
        self.folder = Path(self._folder.name)

    def tearDown(self):
        self.tb = None
        self._folder.cleanup()

    def run_source(self, source, count: int, max_noutput_items=None):
        """Run source -> head(count) -> sink in a fresh flowgraph; return (samples, tags)."""
        self.tb = gr.top_block()
        head = blocks.head(gr.sizeof_gr_complex, count)
        sink = blocks.vector_sink_c()
        self.tb.connect(source, head, sink)
        if max_noutput_items is None:
            self.tb.run()
        else:
            self.tb.run(max_noutput_items)
        return np.array(sink.data(), dtype=np.complex64), sink.tags()

    def calibration_file(self) -> str:
        path = self.folder / "calibration.yml"
        path.write_text(CALIBRATION)
        return str(path)

    def record(self, frequency=700e6, sample_rate=1e6, count=25_000) -> tuple[str, np.ndarray]:
        """A recording written by sigmf_sink from the simulator; (meta path, samples)."""
        base = self.folder / "recording"
        top = gr.top_block()
        sim = scos.sigan_sim(
            frequency=frequency,
            sample_rate=sample_rate,
            start_time=START_TIME,
            seed=4,
            tones=[{"frequency_offset": 1e5, "power": -40.0}],
        )
        head = blocks.head(gr.sizeof_gr_complex, count)
        sink = scos.sigmf_sink(path=str(base), input_type="complex")
        copy = blocks.vector_sink_c()
        top.connect(sim, head, sink)
        top.connect(head, copy)
        top.run()
        return f"{base}.sigmf-meta", np.array(copy.data(), dtype=np.complex64)

    def iq_file(self, count=30_000) -> tuple[str, np.ndarray]:
        samples = (np.arange(count) * (1 - 0.5j)).astype(np.complex64)
        path = self.folder / "iq.cfile"
        samples.tofile(path)
        return str(path), samples

    # --- simulator -------------------------------------------------------------------

    def test_sim_is_sigan_sim_with_the_same_settings(self):
        settings = {
            "frequency": 3.5e9,
            "sample_rate": 2e6,
            "gain": 12.0,
            "seed": 3,
        }
        tones = [{"frequency_offset": 2e5, "power": -50.0}]
        bursts = [{"frequency_offset": -3e5, "power": -60.0, "period": 1e-3, "duration": 2e-4}]
        source = scos.sigan_source(device="sim", sim_tones=tones, sim_bursts=bursts, **settings)
        self.assertEqual(source.description, "simulated signal analyzer")
        ours, _ = self.run_source(source, 50_000, max_noutput_items=999)
        sim = scos.sigan_sim(noise_figure=5.0, tones=tones, bursts=bursts, **settings)
        theirs, _ = self.run_source(sim, 50_000)
        np.testing.assert_array_equal(ours, theirs)

    def test_sim_tags_rx_time_freq_rate_at_offset_zero(self):
        before = time.time()
        source = scos.sigan_source(frequency=3.55e9, sample_rate=2.5e6)
        _, sink_tags = self.run_source(source, 1000)
        found = radio_tags_at(sink_tags, 0)
        self.assertEqual(found["rx_freq"], 3.55e9)
        self.assertEqual(found["rx_rate"], 2.5e6)
        self.assertLessEqual(before - 1.0, found["rx_time"])
        self.assertLessEqual(found["rx_time"], time.time() + 1.0)

    def test_sim_without_calibration_has_gain_and_5_db_noise_figure(self):
        rate = 1e6
        source = scos.sigan_source(frequency=700e6, sample_rate=rate, gain=20.0, seed=5)
        samples, _ = self.run_source(source, 1_000_000)
        measured = watts(samples).mean()
        self.assertAlmostEqual(measured / thermal_watts(rate, 5.0, 20.0), 1.0, delta=0.02)

    def test_sim_with_calibration_uses_interpolated_gain_and_noise_figure(self):
        calibration = self.calibration_file()
        # (frequency, sample rate, gain dB, noise figure dB), interpolated by hand.
        cases = [
            (700e6, 1e6, 10.0 + 25.0, 6.0),
            (650e6, 1e6, 10.0 + 22.5, 5.0),
            (700e6, 1.5e6, 10.0 + 27.0, 7.0),
        ]
        for frequency, rate, gain, noise_figure in cases:
            with self.subTest(frequency=frequency, rate=rate):
                # Build at 700 MHz and 1 MS/s, then move to the case with the setters
                # (before the flowgraph starts), so that they re-look-up the table.
                source = scos.sigan_source(
                    frequency=700e6,
                    sample_rate=1e6,
                    gain=-3.0,  # recorded, but the calibrated gain rules the simulator
                    calibration_file=calibration,
                    seed=8,
                )
                source.set_frequency(frequency)
                source.set_sample_rate(rate)
                samples, _ = self.run_source(source, 1_000_000)
                ratio = watts(samples).mean() / thermal_watts(rate, noise_figure, gain)
                print(
                    f"calibrated sim at {frequency:g} Hz, {rate:g} S/s: measured/expected {ratio:.4f}"
                )
                self.assertAlmostEqual(ratio, 1.0, delta=0.02)

    def test_sim_clips_at_the_calibrated_compression_point(self):
        # At 700 MHz and 1 MS/s: P1dB of the analyzer -15 dBm, preselector gain 10 dB,
        # so -25 dBm at the reference point; the output carries the 35 dB gain.
        source = scos.sigan_source(
            frequency=700e6,
            sample_rate=1e6,
            calibration_file=self.calibration_file(),
            sim_tones=[{"frequency_offset": 1e5, "power": -20.0}],
        )
        samples, sink_tags = self.run_source(source, 10_000)
        np.testing.assert_allclose(dbm(watts(samples)) - 35.0, -25.0, atol=1e-3)
        (sensor,) = tags_named(sink_tags, "scos_sensor")
        overload = pmt.dict_ref(sensor.value, pmt.intern("overload_sigan"), pmt.PMT_NIL)
        self.assertIs(pmt.to_python(overload), True)

    def test_sim_set_frequency_while_running_retags(self):
        rate, after = 1e6, 20_000
        source = scos.sigan_source(frequency=700e6, sample_rate=rate)
        middle = actions_after([(after, lambda: source.set_frequency(3.5e9))])
        head = blocks.head(gr.sizeof_gr_complex, after + RETUNE_LATENCY + 10_000)
        sink = blocks.vector_sink_c()
        self.tb.connect(source, middle, head, sink)
        self.tb.run(1024)
        self.assertEqual(middle.done, 1)
        frequency_tags = tags_named(sink.tags(), "rx_freq")
        self.assertEqual([pmt.to_double(tag.value) for tag in frequency_tags], [700e6, 3.5e9])
        retune = frequency_tags[1].offset
        self.assertTrue(after <= retune < after + RETUNE_LATENCY, retune)
        first, again = radio_tags_at(sink.tags(), 0), radio_tags_at(sink.tags(), retune)
        self.assertEqual(set(again), {"rx_time", "rx_freq", "rx_rate"})
        self.assertAlmostEqual(again["rx_time"] - first["rx_time"], retune / rate, delta=1e-6)
        self.assertEqual(source.frequency, 3.5e9)

    def test_calibrated_sim_follows_a_retune_while_running(self):
        rate, count = 1e6, 200_000 + RETUNE_LATENCY
        source = scos.sigan_source(
            frequency=700e6, sample_rate=rate, calibration_file=self.calibration_file(), seed=6
        )
        middle = actions_after([(100_000, lambda: source.set_frequency(650e6))])
        head = blocks.head(gr.sizeof_gr_complex, count)
        sink = blocks.vector_sink_c()
        self.tb.connect(source, middle, head, sink)
        self.tb.run(4096)
        samples = np.array(sink.data(), dtype=np.complex64)
        retune = tags_named(sink.tags(), "rx_freq")[1].offset
        self.assertTrue(100_000 <= retune <= 100_000 + RETUNE_LATENCY, retune)
        # Leave out the work call around the retag, which may have either setting.
        before = watts(samples[: retune - 4096]).mean() / thermal_watts(rate, 6.0, 35.0)
        after = watts(samples[retune + 4096 :]).mean() / thermal_watts(rate, 5.0, 32.5)
        print(f"calibrated sim retuned while running: before {before:.4f}, after {after:.4f}")
        self.assertAlmostEqual(before, 1.0, delta=0.02)
        self.assertAlmostEqual(after, 1.0, delta=0.02)
        gains = [
            pmt.to_python(pmt.dict_ref(tag.value, pmt.intern("gain_setting_sigan"), pmt.PMT_NIL))
            for tag in tags_named(sink.tags(), "scos_sensor")
        ]
        self.assertEqual(gains, [35.0, 32.5])

    def test_sim_rejects_bad_settings(self):
        cases = [
            ({"frequency": -1e6}, r"sim: frequency must be positive"),
            ({"frequency": 0.0}, r"sim: frequency must be positive"),
            ({"sample_rate": 0.0}, r"sim: sample_rate must be positive"),
            ({"gain": float("nan")}, r"sim: gain must be finite"),
            ({"frequency": "a lot"}, r"sim: frequency must be a number"),
            ({"sim_tones": [{"frequency_offset": 9e6}]}, r"sim: tones\[0\]: missing"),
            ({"calibration_file": "/nonexistent/cal.yml"}, r"sim: cannot read calibration"),
            ({"channel": -1}, r"channel must be >= 0"),
        ]
        for parameters, message in cases:
            with self.subTest(parameters=parameters):
                with self.assertRaisesRegex(scos.SiganError, message):
                    scos.sigan_source(**parameters)
        source = scos.sigan_source(frequency=700e6)
        with self.assertRaisesRegex(scos.SiganError, r"frequency must be positive, got -5 Hz"):
            source.set_frequency(-5.0)
        self.assertEqual(source.frequency, 700e6)
        with self.assertRaisesRegex(scos.SiganError, r"sample_rate must be positive"):
            source.set_sample_rate(-1.0)
        self.run_source(source, 100)
        self.assertTrue(issubclass(scos.SiganError, ValueError))

    # --- replay ----------------------------------------------------------------------

    def test_replay_reproduces_a_sigmf_sink_recording(self):
        meta, recorded = self.record(frequency=700e6, sample_rate=1e6)
        for frequency, rate in ((0.0, 0.0), (700e6, 1e6)):
            with self.subTest(frequency=frequency, rate=rate):
                source = scos.sigan_source(
                    device=f"replay:{meta}", frequency=frequency, sample_rate=rate
                )
                self.assertEqual((source.frequency, source.sample_rate), (700e6, 1e6))
                self.assertIn(meta, source.description)
                self.tb = gr.top_block()
                sink = blocks.vector_sink_c()
                self.tb.connect(source, sink)
                self.tb.run()  # ends at the end of the recording
                replayed = np.array(sink.data(), dtype=np.complex64)
                np.testing.assert_array_equal(replayed, recorded)
                found = radio_tags_at(sink.tags(), 0)
                self.assertEqual((found["rx_freq"], found["rx_rate"]), (700e6, 1e6))
                self.assertAlmostEqual(found["rx_time"], START_TIME, delta=1e-6)

    def test_replay_refuses_another_frequency_or_rate(self):
        meta, _ = self.record(frequency=700e6, sample_rate=1e6)
        with self.assertRaises(scos.SiganError) as caught:
            scos.sigan_source(device=f"replay:{meta}", frequency=3.5e9, sample_rate=0)
        message = str(caught.exception)
        self.assertEqual(
            message, f"replay: recording {meta} was made at 700 MHz, not the requested 3.5 GHz"
        )
        with self.assertRaisesRegex(scos.SiganError, r"made at 1 MS/s, not the requested 2 MS/s"):
            scos.sigan_source(device=f"replay:{meta}", frequency=700e6, sample_rate=2e6)
        with self.assertRaisesRegex(scos.SiganError, r"made at 700 MHz.*700.001 MHz"):
            scos.sigan_source(device=f"replay:{meta}", frequency=700.001e6, sample_rate=1e6)
        source = scos.sigan_source(device=f"replay:{meta}", frequency=700e6, sample_rate=1e6)
        for change, message in (
            (lambda: source.set_frequency(3.5e9), r"cannot change the frequency"),
            (lambda: source.set_sample_rate(2e6), r"cannot change the sample rate"),
            (lambda: source.set_gain(10.0), r"cannot change the gain"),
        ):
            with self.subTest(message=message):
                with self.assertRaisesRegex(scos.SiganError, message):
                    change()
        # Unchanged settings (GRC calls its callbacks with them) are fine.
        source.set_frequency(700e6)
        source.set_sample_rate(1e6)
        source.set_gain(0.0)

    def test_replay_of_a_missing_recording(self):
        with self.assertRaisesRegex(scos.SiganError, r"replay: no such SigMF recording"):
            scos.sigan_source(device=f"replay:{self.folder / 'absent.sigmf-meta'}")

    def test_probe_without_a_flowgraph(self):
        sim = module.probe("sim")
        self.assertEqual(sim["description"], "simulated signal analyzer")
        self.assertEqual(sim["frequency"], (0.0, math.inf))
        meta, _ = self.record(frequency=2.5e9, sample_rate=1e6, count=100)
        replay = scos.sigan_source.probe(f"replay:{meta}")
        self.assertEqual(replay["frequency"], (2.5e9, 2.5e9))
        self.assertEqual(replay["sample_rate"], [1e6])
        module.check_settings(replay, frequency=2.5e9, sample_rate=1e6, gain=3.0)
        with self.assertRaisesRegex(scos.SiganError, r"frequency 3 GHz is outside.*2.5 GHz"):
            module.check_settings(replay, frequency=3e9, where="replay")

    # --- devices that are not there, and bad specs -------------------------------------

    def test_absent_usrp_fails_quickly_naming_the_device(self):
        started = time.monotonic()
        with self.assertRaises(scos.SiganError) as caught:
            scos.sigan_source(device="uhd:type=b200,serial=QA00042", frequency=1e9, sample_rate=1e6)
        elapsed = time.monotonic() - started
        message = str(caught.exception)
        print(f"absent USRP: {elapsed:.2f} s: {message}")
        self.assertLess(elapsed, 30.0)
        self.assertIn("type=b200,serial=QA00042", message)
        self.assertIn("No devices found", message)
        self.assertNotIn("\n", message)

    def test_absent_osmosdr_device_is_an_error_not_a_fake_source(self):
        for args in ("rtl=99", "hackrf=7"):
            with self.subTest(args=args):
                started = time.monotonic()
                with self.assertRaises(scos.SiganError) as caught:
                    scos.sigan_source(device=f"osmosdr:{args}", frequency=1e9, sample_rate=1e6)
                elapsed = time.monotonic() - started
                print(f"absent osmosdr {args}: {elapsed:.2f} s: {caught.exception}")
                self.assertLess(elapsed, 30.0)
                self.assertIn(args, str(caught.exception))

    def test_unknown_device_spec_lists_the_valid_forms(self):
        for device in ("foo:bar", "", "usrp", "sim:extra", "replay:"):
            with self.subTest(device=device):
                with self.assertRaises(scos.SiganError) as caught:
                    scos.sigan_source(device=device)
                if device in ("foo:bar", "", "usrp"):
                    for form in module.SPEC_FORMS:
                        self.assertIn(form, str(caught.exception))
        with self.assertRaisesRegex(scos.SiganError, r"device must be a string"):
            scos.sigan_source(device=None)

    def test_device_that_hangs_is_given_up_after_the_probe_timeout(self):
        # An rtl_tcp "server" that accepts the connection and never says a word:
        # osmosdr's constructor waits for it forever.
        with socket.socket() as server:
            server.bind(("127.0.0.1", 0))
            server.listen(4)
            device = f"osmosdr:rtl_tcp=127.0.0.1:{server.getsockname()[1]}"
            saved = module.PROBE_TIMEOUT
            module.PROBE_TIMEOUT = 3.0
            try:
                started = time.monotonic()
                with self.assertRaises(scos.SiganError) as caught:
                    scos.sigan_source(device=device, frequency=100e6, sample_rate=1e6)
                elapsed = time.monotonic() - started
            finally:
                module.PROBE_TIMEOUT = saved
        print(f"hanging rtl_tcp server: {elapsed:.2f} s: {caught.exception}")
        self.assertEqual(
            str(caught.exception),
            f"device '{device}' did not answer within 3 s (is it connected, powered and not in use?)",
        )
        self.assertLess(elapsed, 10.0)

    # --- USRP: the glue to gr-uhd, with a stand-in device ----------------------------

    def test_usrp_settings_ranges_and_clock_with_a_stand_in_device(self):
        def probe_here(device, channel=0, timeout=None):
            return module._open_uhd(module.parse_device(device)[1], channel)[1]

        saved = uhd.usrp_source, module.probe
        uhd.usrp_source, module.probe = fake_usrp, probe_here
        try:
            before = time.time()
            source = scos.sigan_source(
                device="uhd:type=b200",
                frequency=3.5e9,
                sample_rate=15.36e6,
                gain=40.0,
                antenna="RX2",
                channel=1,
            )
            radio = source._radio
            self.assertEqual((radio.device_addr, radio.channels), ("type=b200", [1]))
            self.assertEqual(source.description, "USRP B210 serial 31F00D (FE-RX2)")
            self.assertEqual(
                source.ranges,
                {
                    "frequency": (70e6, 6e9),
                    "sample_rate": (62.5e3, 56e6),
                    "gain": (0.0, 76.0),
                    "antennas": ["TX/RX", "RX2"],
                },
            )
            self.assertEqual(
                radio.settings,
                {"rate": 15.36e6, "frequency": 3.5e9, "gain": 40.0, "antenna": "RX2"},
            )
            # The device clock counted from power-up, so it was set to Unix time.
            self.assertTrue(before - 1.0 <= radio.clock.seconds <= time.time() + 1.0)
            _, sink_tags = self.run_source(source, 1000)
            found = radio_tags_at(sink_tags, 0)
            self.assertEqual((found["rx_freq"], found["rx_rate"]), (3.5e9, 15.36e6))
            self.assertTrue(before - 1.0 <= found["rx_time"] <= time.time() + 1.0)

            source.set_frequency(1e9)
            source.set_gain(10.0)
            with self.assertLogs("gnuradio.scos.sigan_source", "WARNING") as logged:
                source.set_sample_rate(10e6)  # the device runs at 61.44e6 / 6 instead
            self.assertIn("asked for 10 MS/s, the device runs at 10.24 MS/s", logged.output[0])
            self.assertEqual(
                (source.frequency, source.gain, source.sample_rate), (1e9, 10.0, 10.24e6)
            )
            self.assertEqual((radio.settings["frequency"], radio.settings["gain"]), (1e9, 10.0))

            where = "device 'uhd:type=b200': "
            cases = [
                (
                    {"frequency": 7e9},
                    "frequency 7 GHz is outside the device's range 70 MHz .. 6 GHz",
                ),
                (
                    {"sample_rate": 100e6},
                    "sample_rate 100 MS/s is outside the device's range 62.5 kS/s .. 56 MS/s",
                ),
                ({"gain": 80.0}, "gain 80 dB is outside the device's range 0 .. 76 dB"),
                ({"antenna": "RX1"}, "antenna 'RX1' is not one of TX/RX, RX2"),
            ]
            for parameters, message in cases:
                settings = {"frequency": 1e9, "sample_rate": 1e6, **parameters}
                with self.subTest(parameters=parameters):
                    with self.assertRaises(scos.SiganError) as caught:
                        scos.sigan_source(device="uhd:type=b200", **settings)
                    self.assertEqual(str(caught.exception), where + message)
            with self.assertRaisesRegex(scos.SiganError, "gain -1 dB is outside"):
                source.set_gain(-1.0)
            with self.assertRaisesRegex(scos.SiganError, "frequency 10 MHz is outside"):
                source.set_frequency(10e6)
            self.assertEqual(radio.settings["frequency"], 1e9)
        finally:
            uhd.usrp_source, module.probe = saved

    # --- osmosdr, through its IQ-file device -----------------------------------------

    def test_osmosdr_file_device_is_tagged_like_a_radio(self):
        path, samples = self.iq_file()
        device = f"osmosdr:file={path},rate=1e6,freq=100e6,repeat=false,throttle=false"
        before = time.time()
        source = scos.sigan_source(device=device, frequency=100e6, sample_rate=1e6)
        self.assertEqual(source.ranges["frequency"], (100e6, 100e6))
        self.assertEqual(source.ranges["sample_rate"], [1e6])
        self.assertEqual(source.ranges["gain"], (0.0, 0.0))
        self.tb = gr.top_block()
        sink = blocks.vector_sink_c()
        self.tb.connect(source, sink)
        self.tb.run()  # repeat=false: ends at the end of the file
        np.testing.assert_array_equal(np.array(sink.data(), dtype=np.complex64), samples)
        found = radio_tags_at(sink.tags(), 0)
        self.assertEqual((found["rx_freq"], found["rx_rate"]), (100e6, 1e6))
        self.assertTrue(before - 1.0 <= found["rx_time"] <= time.time() + 1.0)
        self.assertEqual(len(tags_named(sink.tags(), "rx_time")), 1)

    def test_osmosdr_channel_selects_an_output_of_a_multi_channel_device(self):
        first, _ = self.iq_file(1000)
        second = str(self.folder / "second.cfile")
        samples = (np.arange(1000) * 1j).astype(np.complex64)
        samples.tofile(second)
        options = "rate=1e6,freq=100e6,repeat=false,throttle=false"
        device = f"osmosdr:file={first},{options} file={second},{options}"
        source = scos.sigan_source(device=device, frequency=100e6, sample_rate=1e6, channel=1)
        self.tb = gr.top_block()
        sink = blocks.vector_sink_c()
        self.tb.connect(source, sink)
        self.tb.run()
        np.testing.assert_array_equal(np.array(sink.data(), dtype=np.complex64), samples)
        self.assertEqual(radio_tags_at(sink.tags(), 0)["rx_freq"], 100e6)

    def test_osmosdr_settings_are_checked_against_the_device(self):
        path, _ = self.iq_file(100)
        device = f"osmosdr:file={path},rate=1e6,freq=100e6"
        cases = [
            ({"frequency": 200e6}, r"frequency 200 MHz is outside the device's range 100 MHz"),
            ({"sample_rate": 2e6}, r"sample_rate 2 MS/s is not one of the device's rates 1 MS/s"),
            ({"gain": 10.0}, r"gain 10 dB requested, but the gain is fixed at 0 dB"),
            ({"antenna": "RX2"}, r"antenna 'RX2' is not one of none"),
            ({"channel": 3}, r"channel 3 does not exist"),
        ]
        for parameters, message in cases:
            settings = {"frequency": 100e6, "sample_rate": 1e6, **parameters}
            with self.subTest(parameters=parameters):
                with self.assertRaisesRegex(scos.SiganError, f"device '{device}': {message}"):
                    scos.sigan_source(device=device, **settings)
        source = scos.sigan_source(device=device, frequency=100e6, sample_rate=1e6)
        with self.assertRaisesRegex(scos.SiganError, r"frequency 101 MHz is outside"):
            source.set_frequency(101e6)
        with self.assertRaisesRegex(scos.SiganError, r"gain 1 dB requested"):
            source.set_gain(1.0)

    # --- the tagging stage osmosdr devices get ---------------------------------------

    def test_host_clock_tagger_tags_start_and_retunes(self):
        rate, count = 2e6, 200_000
        clock = RadioTime(1_800_000_000, 0.5)
        samples = (np.arange(count) % 1000).astype(np.complex64)
        # An upstream tag (a stale rx_time) must not get through.
        stale = gr.tag_t()
        stale.offset, stale.key, stale.value = 500, pmt.intern("rx_time"), pmt.PMT_T
        source = blocks.vector_source_c(samples.tolist(), False, 1, [stale])
        tagger = module._host_clock_tagger(1e9, rate, clock=lambda: clock)
        middle = actions_after(
            [
                (30_000, lambda: tagger.retune(frequency=2e9)),
                (60_000, lambda: tagger.retune(sample_rate=4e6)),
                (90_000, lambda: tagger.retune(frequency=3e9)),
            ]
        )
        sink = blocks.vector_sink_c()
        self.tb.connect(source, tagger, middle, sink)
        self.tb.run(1024)
        np.testing.assert_array_equal(np.array(sink.data(), dtype=np.complex64), samples)
        frequency_tags = tags_named(sink.tags(), "rx_freq")
        rate_tags = tags_named(sink.tags(), "rx_rate")
        time_tags = tags_named(sink.tags(), "rx_time")
        self.assertEqual([pmt.to_double(tag.value) for tag in frequency_tags], [1e9, 2e9, 2e9, 3e9])
        self.assertEqual([pmt.to_double(tag.value) for tag in rate_tags], [rate, rate, 4e6, 4e6])
        offsets = [tag.offset for tag in frequency_tags]
        self.assertEqual(offsets, [tag.offset for tag in time_tags])
        self.assertEqual(offsets, [tag.offset for tag in rate_tags])
        self.assertEqual(offsets[0], 0)
        self.assertTrue(30_000 <= offsets[1] < offsets[2] < offsets[3] < count, offsets)
        for tag in time_tags:
            seconds(tag.value)  # checks the UHD types
        times = [RadioTime.from_pmt(tag.value) for tag in time_tags]
        # The first sample is stamped before the clock reading by the duration of the
        # samples the first work call got: a whole number of samples, at most a buffer.
        lead = clock.minus(times[0]) * rate
        self.assertAlmostEqual(lead, round(lead), delta=1e-3)
        self.assertTrue(1 <= round(lead) <= 65536, lead)
        # Then the time advances by samples / rate, at the rate in force.
        self.assertAlmostEqual(times[1].minus(times[0]), offsets[1] / rate, delta=1e-12)
        self.assertAlmostEqual(times[2].minus(times[0]), offsets[2] / rate, delta=1e-12)
        self.assertAlmostEqual(
            times[3].minus(times[2]), (offsets[3] - offsets[2]) / 4e6, delta=1e-12
        )


if __name__ == "__main__":
    gr_unittest.run(qa_sigan_source)
