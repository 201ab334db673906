#!/usr/bin/env python3
# -*- coding: utf-8 -*-

#
# SPDX-License-Identifier: GPL-3.0
#
# GNU Radio Python Flow Graph
# Title: SCOS IQ acquisition
# Author: gr-scos
# Description: duration_ms of complex baseband IQ at one frequency, calibrated to the reference point (cf32_le).
# GNU Radio version: 3.10.5.1

from gnuradio import blocks
from gnuradio import gr
from gnuradio.filter import firdes
from gnuradio.fft import window
import sys
import signal
from argparse import ArgumentParser
from gnuradio.eng_arg import eng_float, intx
from gnuradio import eng_notation
from gnuradio import scos
from gnuradio.scos import windows




class acquire_iq(gr.top_block):

    def __init__(self, calibration_file='', device='sim', duration_ms=10, frequency=700e6, gain=0, global_extensions={}, nskip=0, output='acquisition', reference='signal analyzer input', sample_rate=14e6, sim_bursts=(), sim_tones=()):
        gr.top_block.__init__(self, "SCOS IQ acquisition", catch_exceptions=False)

        ##################################################
        # Parameters
        ##################################################
        self.calibration_file = calibration_file
        self.device = device
        self.duration_ms = duration_ms
        self.frequency = frequency
        self.gain = gain
        self.global_extensions = global_extensions
        self.nskip = nskip
        self.output = output
        self.reference = reference
        self.sample_rate = sample_rate
        self.sim_bursts = sim_bursts
        self.sim_tones = sim_tones

        ##################################################
        # Variables
        ##################################################
        self.nsamples = nsamples = round(duration_ms * sample_rate / 1e3)

        ##################################################
        # Blocks
        ##################################################

        self.skip = scos.skip_after_tune(nskip=nskip)
        self.sink = scos.sigmf_sink(
            path=output,
            input_type='complex',
            vlen=1,
            detection=None,
            global_extensions=global_extensions,
            description='',
            split_on_retune=False,
            sample_rate=0.0,
            frequency=None,
            on_recording=None,
        )
        self.sigan_source = scos.sigan_source(
            device=device,
            frequency=frequency,
            sample_rate=sample_rate,
            gain=gain,
            calibration_file=calibration_file,
            sim_tones=sim_tones,
            sim_bursts=sim_bursts,
            seed=0,
            paced=False,
            channel=0,
            antenna='',
        )
        self.iq = scos.calibrate(
            mode='iq',
            vlen=1,
            calibration_file=calibration_file,
            frequency=frequency,
            sample_rate=sample_rate,
            fft_size=0,
            window='flattop',
            load_ohms=50.0,
        )
        self.head = blocks.head(gr.sizeof_gr_complex*1, nsamples)


        ##################################################
        # Connections
        ##################################################
        self.connect((self.head, 0), (self.iq, 0))
        self.connect((self.iq, 0), (self.sink, 0))
        self.connect((self.sigan_source, 0), (self.skip, 0))
        self.connect((self.skip, 0), (self.head, 0))


    def get_calibration_file(self):
        return self.calibration_file

    def set_calibration_file(self, calibration_file):
        self.calibration_file = calibration_file

    def get_device(self):
        return self.device

    def set_device(self, device):
        self.device = device

    def get_duration_ms(self):
        return self.duration_ms

    def set_duration_ms(self, duration_ms):
        self.duration_ms = duration_ms
        self.set_nsamples(round(self.duration_ms * self.sample_rate / 1e3))

    def get_frequency(self):
        return self.frequency

    def set_frequency(self, frequency):
        self.frequency = frequency
        self.sigan_source.set_frequency(self.frequency)

    def get_gain(self):
        return self.gain

    def set_gain(self, gain):
        self.gain = gain
        self.sigan_source.set_gain(self.gain)

    def get_global_extensions(self):
        return self.global_extensions

    def set_global_extensions(self, global_extensions):
        self.global_extensions = global_extensions

    def get_nskip(self):
        return self.nskip

    def set_nskip(self, nskip):
        self.nskip = nskip

    def get_output(self):
        return self.output

    def set_output(self, output):
        self.output = output

    def get_reference(self):
        return self.reference

    def set_reference(self, reference):
        self.reference = reference

    def get_sample_rate(self):
        return self.sample_rate

    def set_sample_rate(self, sample_rate):
        self.sample_rate = sample_rate
        self.set_nsamples(round(self.duration_ms * self.sample_rate / 1e3))
        self.sigan_source.set_sample_rate(self.sample_rate)

    def get_sim_bursts(self):
        return self.sim_bursts

    def set_sim_bursts(self, sim_bursts):
        self.sim_bursts = sim_bursts

    def get_sim_tones(self):
        return self.sim_tones

    def set_sim_tones(self, sim_tones):
        self.sim_tones = sim_tones

    def get_nsamples(self):
        return self.nsamples

    def set_nsamples(self, nsamples):
        self.nsamples = nsamples
        self.head.set_length(self.nsamples)



def argument_parser():
    description = 'duration_ms of complex baseband IQ at one frequency, calibrated to the reference point (cf32_le).'
    parser = ArgumentParser(description=description)
    parser.add_argument(
        "--calibration-file", dest="calibration_file", type=str, default='',
        help="Set Calibration file (empty: uncalibrated, or a replay) [default=%(default)r]")
    parser.add_argument(
        "--device", dest="device", type=str, default='sim',
        help="Set Signal analyzer: sim, replay:<meta>, uhd:<args>, osmosdr:<args> [default=%(default)r]")
    parser.add_argument(
        "--duration-ms", dest="duration_ms", type=eng_float, default=eng_notation.num_to_str(float(10)),
        help="Set Duration (ms) [default=%(default)r]")
    parser.add_argument(
        "--frequency", dest="frequency", type=eng_float, default=eng_notation.num_to_str(float(700e6)),
        help="Set Centre frequency (Hz) [default=%(default)r]")
    parser.add_argument(
        "--gain", dest="gain", type=eng_float, default=eng_notation.num_to_str(float(0)),
        help="Set Gain (dB) [default=%(default)r]")
    parser.add_argument(
        "--nskip", dest="nskip", type=intx, default=0,
        help="Set Samples skipped after tuning [default=%(default)r]")
    parser.add_argument(
        "--output", dest="output", type=str, default='acquisition',
        help="Set Recording path, without .sigmf-meta [default=%(default)r]")
    parser.add_argument(
        "--reference", dest="reference", type=str, default='signal analyzer input',
        help="Set Reference point of the calibrated data [default=%(default)r]")
    parser.add_argument(
        "--sample-rate", dest="sample_rate", type=eng_float, default=eng_notation.num_to_str(float(14e6)),
        help="Set Sample rate (S/s) [default=%(default)r]")
    return parser


def main(top_block_cls=acquire_iq, options=None):
    if options is None:
        options = argument_parser().parse_args()
    tb = top_block_cls(calibration_file=options.calibration_file, device=options.device, duration_ms=options.duration_ms, frequency=options.frequency, gain=options.gain, nskip=options.nskip, output=options.output, reference=options.reference, sample_rate=options.sample_rate)

    def sig_handler(sig=None, frame=None):
        tb.stop()
        tb.wait()

        sys.exit(0)

    signal.signal(signal.SIGINT, sig_handler)
    signal.signal(signal.SIGTERM, sig_handler)

    tb.start()

    tb.wait()


if __name__ == '__main__':
    main()
