"""Time-domain power detector: the five SCOS time-domain detectors over windows."""

import numpy as np
from gnuradio import gr

from .items import positive_int
from .m4s_detector import detect

TIME_DETECTORS = ("min_power", "max_power", "mean_power", "median_power", "sample_power")


class time_domain_detector(gr.decim_block):
    """Min, max, mean, median and sample of |x|^2 over windows of ``window_size`` samples.

    Input: complex64 samples (volts at the signal analyzer).
    Output: one float32 vector of ``5 * nwindows`` per ``window_size * nwindows``
    input samples: for ``nwindows`` consecutive windows, the detectors of Table 48
    one after another in the order of ``TIME_DETECTORS``:
    ``[min_power x nwindows | max_power x nwindows | ... | sample_power x nwindows]``.
    Values are |x|^2 in V^2 (the calibrate block turns them into dBm); the median is
    exact; the sample detector is the first sample of each window. Stream tags are
    carried over (offsets divided by ``window_size * nwindows``).
    """

    def __init__(self, window_size: int = 1000, nwindows: int = 1):
        self.window_size = positive_int("window_size", window_size)
        self.nwindows = positive_int("nwindows", nwindows)
        gr.decim_block.__init__(
            self,
            name="scos_time_domain_detector",
            in_sig=[np.complex64],
            out_sig=[(np.float32, len(TIME_DETECTORS) * self.nwindows)],
            decim=self.window_size * self.nwindows,
        )

    def work(self, input_items, output_items):
        output = output_items[0]
        records = len(output)
        samples = input_items[0][: records * self.nwindows * self.window_size]
        power = np.square(samples.real) + np.square(samples.imag)
        windows = power.reshape(records * self.nwindows, self.window_size, 1)
        detected = np.empty((records * self.nwindows, len(TIME_DETECTORS), 1), np.float32)
        detect(windows, detected)
        # (record, window, detector) -> (record, detector, window)
        output[:] = (
            detected.reshape(records, self.nwindows, len(TIME_DETECTORS))
            .transpose(0, 2, 1)
            .reshape(records, -1)
        )
        return records
