#!/usr/bin/env python3
# -*- coding: utf-8 -*-

#
# SPDX-License-Identifier: GPL-3.0
#
# GNU Radio Python Flow Graph
# Title: SCOS power vs time
# Author: gr-scos
# Description: Max, min, mean, median and sample power detectors over nwindows windows of window_size samples (IEEE 802.15.22.3 TimeDomainDetection).
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




class acquire_power_vs_time(gr.top_block):

    def __init__(self, calibration_file='', device='sim', frequency=700e6, gain=0, global_extensions={}, nskip=0, nwindows=100, output='acquisition', reference='signal analyzer input', sample_rate=14e6, sim_bursts=(), sim_tones=(), window_size=1400):
        gr.top_block.__init__(self, "SCOS power vs time", catch_exceptions=False)

        ##################################################
        # Parameters
        ##################################################
        self.calibration_file = calibration_file
        self.device = device
        self.frequency = frequency
        self.gain = gain
        self.global_extensions = global_extensions
        self.nskip = nskip
        self.nwindows = nwindows
        self.output = output
        self.reference = reference
        self.sample_rate = sample_rate
        self.sim_bursts = sim_bursts
        self.sim_tones = sim_tones
        self.window_size = window_size

        ##################################################
        # Variables
        ##################################################
        self.detection = detection = {"domain": "time", "window_size": window_size, "nwindows": nwindows, "reference": reference}

        ##################################################
        # Blocks
        ##################################################

        self.skip = scos.skip_after_tune(nskip=nskip)
        self.sink = scos.sigmf_sink(
            path=output,
            input_type='float',
            vlen=(5 * nwindows),
            detection=detection,
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
        self.head = blocks.head(gr.sizeof_gr_complex*1, (window_size * nwindows))
        self.detector = scos.time_domain_detector(window_size=window_size, nwindows=nwindows)
        self.dbm = scos.calibrate(
            mode='dbm',
            vlen=(5 * nwindows),
            calibration_file=calibration_file,
            frequency=frequency,
            sample_rate=sample_rate,
            fft_size=0,
            window='flattop',
            load_ohms=50.0,
        )


        ##################################################
        # Connections
        ##################################################
        self.connect((self.dbm, 0), (self.sink, 0))
        self.connect((self.detector, 0), (self.dbm, 0))
        self.connect((self.head, 0), (self.detector, 0))
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

    def get_nwindows(self):
        return self.nwindows

    def set_nwindows(self, nwindows):
        self.nwindows = nwindows
        self.set_detection({"domain": "time", "window_size": self.window_size, "nwindows": self.nwindows, "reference": self.reference})
        self.head.set_length((self.window_size * self.nwindows))

    def get_output(self):
        return self.output

    def set_output(self, output):
        self.output = output

    def get_reference(self):
        return self.reference

    def set_reference(self, reference):
        self.reference = reference
        self.set_detection({"domain": "time", "window_size": self.window_size, "nwindows": self.nwindows, "reference": self.reference})

    def get_sample_rate(self):
        return self.sample_rate

    def set_sample_rate(self, sample_rate):
        self.sample_rate = sample_rate
        self.sigan_source.set_sample_rate(self.sample_rate)

    def get_sim_bursts(self):
        return self.sim_bursts

    def set_sim_bursts(self, sim_bursts):
        self.sim_bursts = sim_bursts

    def get_sim_tones(self):
        return self.sim_tones

    def set_sim_tones(self, sim_tones):
        self.sim_tones = sim_tones

    def get_window_size(self):
        return self.window_size

    def set_window_size(self, window_size):
        self.window_size = window_size
        self.set_detection({"domain": "time", "window_size": self.window_size, "nwindows": self.nwindows, "reference": self.reference})
        self.head.set_length((self.window_size * self.nwindows))

    def get_detection(self):
        return self.detection

    def set_detection(self, detection):
        self.detection = detection



def argument_parser():
    description = 'Max, min, mean, median and sample power detectors over nwindows windows of window_size samples (IEEE 802.15.22.3 TimeDomainDetection).'
    parser = ArgumentParser(description=description)
    parser.add_argument(
        "--calibration-file", dest="calibration_file", type=str, default='',
        help="Set Calibration file (empty: uncalibrated, or a replay) [default=%(default)r]")
    parser.add_argument(
        "--device", dest="device", type=str, default='sim',
        help="Set Signal analyzer: sim, replay:<meta>, uhd:<args>, osmosdr:<args> [default=%(default)r]")
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
        "--nwindows", dest="nwindows", type=intx, default=100,
        help="Set Detector windows [default=%(default)r]")
    parser.add_argument(
        "--output", dest="output", type=str, default='acquisition',
        help="Set Recording path, without .sigmf-meta [default=%(default)r]")
    parser.add_argument(
        "--reference", dest="reference", type=str, default='signal analyzer input',
        help="Set Reference point of the calibrated data [default=%(default)r]")
    parser.add_argument(
        "--sample-rate", dest="sample_rate", type=eng_float, default=eng_notation.num_to_str(float(14e6)),
        help="Set Sample rate (S/s) [default=%(default)r]")
    parser.add_argument(
        "--window-size", dest="window_size", type=intx, default=1400,
        help="Set Samples per detector window [default=%(default)r]")
    return parser


def main(top_block_cls=acquire_power_vs_time, options=None):
    if options is None:
        options = argument_parser().parse_args()
    tb = top_block_cls(calibration_file=options.calibration_file, device=options.device, frequency=options.frequency, gain=options.gain, nskip=options.nskip, nwindows=options.nwindows, output=options.output, reference=options.reference, sample_rate=options.sample_rate, window_size=options.window_size)

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
