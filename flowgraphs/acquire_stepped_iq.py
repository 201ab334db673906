#!/usr/bin/env python3
# -*- coding: utf-8 -*-

#
# SPDX-License-Identifier: GPL-3.0
#
# GNU Radio Python Flow Graph
# Title: SCOS stepped IQ acquisition
# Author: gr-scos
# Description: IQ at each of frequencies in turn, one recording per frequency, retuning within one run. sample_rates, gains and durations_ms, when not empty, give one value per frequency.
# GNU Radio version: 3.10.5.1

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




class acquire_stepped_iq(gr.top_block):

    def __init__(self, calibration_file='', device='sim', duration_ms=10, durations_ms=[], frequencies=[700e6, 1.5e9, 3.5e9], gain=0, gains=[], global_extensions={}, nskip=0, output='acquisition', reference='signal analyzer input', sample_rate=14e6, sample_rates=[], sim_bursts=(), sim_tones=()):
        gr.top_block.__init__(self, "SCOS stepped IQ acquisition", catch_exceptions=False)

        ##################################################
        # Parameters
        ##################################################
        self.calibration_file = calibration_file
        self.device = device
        self.duration_ms = duration_ms
        self.durations_ms = durations_ms
        self.frequencies = frequencies
        self.gain = gain
        self.gains = gains
        self.global_extensions = global_extensions
        self.nskip = nskip
        self.output = output
        self.reference = reference
        self.sample_rate = sample_rate
        self.sample_rates = sample_rates
        self.sim_bursts = sim_bursts
        self.sim_tones = sim_tones

        ##################################################
        # Variables
        ##################################################
        self.step_rates = step_rates = sample_rates or sample_rate
        self.step_gains = step_gains = gains or gain
        self.first_rate = first_rate = (sample_rates or [sample_rate])[0]
        self.first_gain = first_gain = (gains or [gain])[0]

        ##################################################
        # Blocks
        ##################################################

        self.steps = scos.step_tuner(
            frequencies=frequencies,
            sample_rate=step_rates,
            gain=step_gains,
            duration_ms=durations_ms or duration_ms,
            nskip=nskip,
            retune_timeout=10.0,
        )
        self.sink = scos.sigmf_sink(
            path=output,
            input_type='complex',
            vlen=1,
            detection=None,
            global_extensions=global_extensions,
            description='',
            split_on_retune=True,
            sample_rate=0.0,
            frequency=None,
            on_recording=None,
        )
        self.sigan_source = scos.sigan_source(
            device=device,
            frequency=frequencies[0],
            sample_rate=first_rate,
            gain=first_gain,
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
            frequency=frequencies[0],
            sample_rate=first_rate,
            fft_size=0,
            window='flattop',
            load_ohms=50.0,
        )


        ##################################################
        # Connections
        ##################################################
        self.msg_connect((self.steps, 'command'), (self.sigan_source, 'command'))
        self.connect((self.iq, 0), (self.sink, 0))
        self.connect((self.sigan_source, 0), (self.steps, 0))
        self.connect((self.steps, 0), (self.iq, 0))


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

    def get_durations_ms(self):
        return self.durations_ms

    def set_durations_ms(self, durations_ms):
        self.durations_ms = durations_ms

    def get_frequencies(self):
        return self.frequencies

    def set_frequencies(self, frequencies):
        self.frequencies = frequencies
        self.sigan_source.set_frequency(self.frequencies[0])

    def get_gain(self):
        return self.gain

    def set_gain(self, gain):
        self.gain = gain
        self.set_first_gain((self.gains or [self.gain])[0])
        self.set_step_gains(self.gains or self.gain)

    def get_gains(self):
        return self.gains

    def set_gains(self, gains):
        self.gains = gains
        self.set_first_gain((self.gains or [self.gain])[0])
        self.set_step_gains(self.gains or self.gain)

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
        self.set_first_rate((self.sample_rates or [self.sample_rate])[0])
        self.set_step_rates(self.sample_rates or self.sample_rate)

    def get_sample_rates(self):
        return self.sample_rates

    def set_sample_rates(self, sample_rates):
        self.sample_rates = sample_rates
        self.set_first_rate((self.sample_rates or [self.sample_rate])[0])
        self.set_step_rates(self.sample_rates or self.sample_rate)

    def get_sim_bursts(self):
        return self.sim_bursts

    def set_sim_bursts(self, sim_bursts):
        self.sim_bursts = sim_bursts

    def get_sim_tones(self):
        return self.sim_tones

    def set_sim_tones(self, sim_tones):
        self.sim_tones = sim_tones

    def get_step_rates(self):
        return self.step_rates

    def set_step_rates(self, step_rates):
        self.step_rates = step_rates

    def get_step_gains(self):
        return self.step_gains

    def set_step_gains(self, step_gains):
        self.step_gains = step_gains

    def get_first_rate(self):
        return self.first_rate

    def set_first_rate(self, first_rate):
        self.first_rate = first_rate
        self.sigan_source.set_sample_rate(self.first_rate)

    def get_first_gain(self):
        return self.first_gain

    def set_first_gain(self, first_gain):
        self.first_gain = first_gain
        self.sigan_source.set_gain(self.first_gain)



def argument_parser():
    description = 'IQ at each of frequencies in turn, one recording per frequency, retuning within one run. sample_rates, gains and durations_ms, when not empty, give one value per frequency.'
    parser = ArgumentParser(description=description)
    parser.add_argument(
        "--calibration-file", dest="calibration_file", type=str, default='',
        help="Set Calibration file (empty: uncalibrated, or a replay) [default=%(default)r]")
    parser.add_argument(
        "--device", dest="device", type=str, default='sim',
        help="Set Signal analyzer: sim, replay:<meta>, uhd:<args>, osmosdr:<args> [default=%(default)r]")
    parser.add_argument(
        "--duration-ms", dest="duration_ms", type=eng_float, default=eng_notation.num_to_str(float(10)),
        help="Set Duration per frequency (ms) [default=%(default)r]")
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


def main(top_block_cls=acquire_stepped_iq, options=None):
    if options is None:
        options = argument_parser().parse_args()
    tb = top_block_cls(calibration_file=options.calibration_file, device=options.device, duration_ms=options.duration_ms, gain=options.gain, nskip=options.nskip, output=options.output, reference=options.reference, sample_rate=options.sample_rate)

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
