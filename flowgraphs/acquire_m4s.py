#!/usr/bin/env python3
# -*- coding: utf-8 -*-

#
# SPDX-License-Identifier: GPL-3.0
#
# GNU Radio Python Flow Graph
# Title: SCOS M4S acquisition
# Author: gr-scos
# Description: Mean, max, min, median and sample detectors of power spectra (IEEE 802.15.22.3 FrequencyDomainDetection), nffts FFTs per detection, nrecords detections.
# GNU Radio version: 3.10.5.1

from gnuradio import blocks
from gnuradio import fft
from gnuradio.fft import window
from gnuradio import gr
from gnuradio.filter import firdes
import sys
import signal
from argparse import ArgumentParser
from gnuradio.eng_arg import eng_float, intx
from gnuradio import eng_notation
from gnuradio import scos
from gnuradio.scos import windows




class acquire_m4s(gr.top_block):

    def __init__(self, calibration_file='', device='sim', fft_size=1024, fft_window='flattop', frequency=700e6, gain=0, global_extensions={}, nffts=300, nrecords=1, nskip=0, output='acquisition', reference='signal analyzer input', sample_rate=14e6, sim_bursts=(), sim_tones=()):
        gr.top_block.__init__(self, "SCOS M4S acquisition", catch_exceptions=False)

        ##################################################
        # Parameters
        ##################################################
        self.calibration_file = calibration_file
        self.device = device
        self.fft_size = fft_size
        self.fft_window = fft_window
        self.frequency = frequency
        self.gain = gain
        self.global_extensions = global_extensions
        self.nffts = nffts
        self.nrecords = nrecords
        self.nskip = nskip
        self.output = output
        self.reference = reference
        self.sample_rate = sample_rate
        self.sim_bursts = sim_bursts
        self.sim_tones = sim_tones

        ##################################################
        # Variables
        ##################################################
        self.detection = detection = {"domain": "frequency", "fft_size": fft_size, "nffts": nffts, "window": fft_window, "reference": reference}

        ##################################################
        # Blocks
        ##################################################

        self.to_vectors = blocks.stream_to_vector(gr.sizeof_gr_complex*1, fft_size)
        self.spectrum = fft.fft_vcc(fft_size, True, windows.taps(fft_window, fft_size).tolist(), True, 1)
        self.skip = scos.skip_after_tune(nskip=nskip)
        self.sink = scos.sigmf_sink(
            path=output,
            input_type='float',
            vlen=(5 * fft_size),
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
        self.power = blocks.complex_to_mag_squared(fft_size)
        self.m4s = scos.m4s_detector(fft_size=fft_size, nffts=nffts)
        self.head = blocks.head(gr.sizeof_gr_complex*1, (fft_size * nffts * nrecords))
        self.dbm = scos.calibrate(
            mode='dbm',
            vlen=(5 * fft_size),
            calibration_file=calibration_file,
            frequency=frequency,
            sample_rate=sample_rate,
            fft_size=fft_size,
            window=fft_window,
            load_ohms=50.0,
        )


        ##################################################
        # Connections
        ##################################################
        self.connect((self.dbm, 0), (self.sink, 0))
        self.connect((self.head, 0), (self.to_vectors, 0))
        self.connect((self.m4s, 0), (self.dbm, 0))
        self.connect((self.power, 0), (self.m4s, 0))
        self.connect((self.sigan_source, 0), (self.skip, 0))
        self.connect((self.skip, 0), (self.head, 0))
        self.connect((self.spectrum, 0), (self.power, 0))
        self.connect((self.to_vectors, 0), (self.spectrum, 0))


    def get_calibration_file(self):
        return self.calibration_file

    def set_calibration_file(self, calibration_file):
        self.calibration_file = calibration_file

    def get_device(self):
        return self.device

    def set_device(self, device):
        self.device = device

    def get_fft_size(self):
        return self.fft_size

    def set_fft_size(self, fft_size):
        self.fft_size = fft_size
        self.set_detection({"domain": "frequency", "fft_size": self.fft_size, "nffts": self.nffts, "window": self.fft_window, "reference": self.reference})
        self.head.set_length((self.fft_size * self.nffts * self.nrecords))

    def get_fft_window(self):
        return self.fft_window

    def set_fft_window(self, fft_window):
        self.fft_window = fft_window
        self.set_detection({"domain": "frequency", "fft_size": self.fft_size, "nffts": self.nffts, "window": self.fft_window, "reference": self.reference})

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

    def get_nffts(self):
        return self.nffts

    def set_nffts(self, nffts):
        self.nffts = nffts
        self.set_detection({"domain": "frequency", "fft_size": self.fft_size, "nffts": self.nffts, "window": self.fft_window, "reference": self.reference})
        self.head.set_length((self.fft_size * self.nffts * self.nrecords))

    def get_nrecords(self):
        return self.nrecords

    def set_nrecords(self, nrecords):
        self.nrecords = nrecords
        self.head.set_length((self.fft_size * self.nffts * self.nrecords))

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
        self.set_detection({"domain": "frequency", "fft_size": self.fft_size, "nffts": self.nffts, "window": self.fft_window, "reference": self.reference})

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

    def get_detection(self):
        return self.detection

    def set_detection(self, detection):
        self.detection = detection



def argument_parser():
    description = 'Mean, max, min, median and sample detectors of power spectra (IEEE 802.15.22.3 FrequencyDomainDetection), nffts FFTs per detection, nrecords detections.'
    parser = ArgumentParser(description=description)
    parser.add_argument(
        "--calibration-file", dest="calibration_file", type=str, default='',
        help="Set Calibration file (empty: uncalibrated, or a replay) [default=%(default)r]")
    parser.add_argument(
        "--device", dest="device", type=str, default='sim',
        help="Set Signal analyzer: sim, replay:<meta>, uhd:<args>, osmosdr:<args> [default=%(default)r]")
    parser.add_argument(
        "--fft-size", dest="fft_size", type=intx, default=1024,
        help="Set FFT size [default=%(default)r]")
    parser.add_argument(
        "--fft-window", dest="fft_window", type=str, default='flattop',
        help="Set FFT window [default=%(default)r]")
    parser.add_argument(
        "--frequency", dest="frequency", type=eng_float, default=eng_notation.num_to_str(float(700e6)),
        help="Set Centre frequency (Hz) [default=%(default)r]")
    parser.add_argument(
        "--gain", dest="gain", type=eng_float, default=eng_notation.num_to_str(float(0)),
        help="Set Gain (dB) [default=%(default)r]")
    parser.add_argument(
        "--nffts", dest="nffts", type=intx, default=300,
        help="Set FFTs per detection [default=%(default)r]")
    parser.add_argument(
        "--nrecords", dest="nrecords", type=intx, default=1,
        help="Set Detections, one after another [default=%(default)r]")
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


def main(top_block_cls=acquire_m4s, options=None):
    if options is None:
        options = argument_parser().parse_args()
    tb = top_block_cls(calibration_file=options.calibration_file, device=options.device, fft_size=options.fft_size, fft_window=options.fft_window, frequency=options.frequency, gain=options.gain, nffts=options.nffts, nrecords=options.nrecords, nskip=options.nskip, output=options.output, reference=options.reference, sample_rate=options.sample_rate)

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
