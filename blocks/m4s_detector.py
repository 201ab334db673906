"""M4S detector: the five SCOS frequency-domain detectors over groups of spectra."""

import numpy as np
from gnuradio import gr

from .items import item_type, positive_int

FREQUENCY_DETECTORS = (
    "fft_min_power",
    "fft_max_power",
    "fft_mean_power",
    "fft_median_power",
    "fft_sample_power",
)


class m4s_detector(gr.decim_block):
    """Min, max, mean, median and sample of every bin over ``nffts`` power spectra.

    Input: float32 vectors of ``fft_size`` power values (e.g. |FFT|^2).
    Output: one float32 vector of ``5 * fft_size`` per ``nffts`` input vectors, the
    detectors of Table 49 one after another in the order of ``FREQUENCY_DETECTORS``:
    ``[fft_min_power | fft_max_power | fft_mean_power | fft_median_power |
    fft_sample_power]``. The median is exact (the mean of the two middle values for
    an even ``nffts``); the sample detector is the first spectrum of the group.
    Units are those of the input. Stream tags are carried over (offsets divided by
    ``nffts``).
    """

    def __init__(self, fft_size: int = 1024, nffts: int = 300):
        self.fft_size = positive_int("fft_size", fft_size)
        self.nffts = positive_int("nffts", nffts)
        gr.decim_block.__init__(
            self,
            name="scos_m4s_detector",
            in_sig=[item_type(np.float32, self.fft_size)],
            out_sig=[(np.float32, len(FREQUENCY_DETECTORS) * self.fft_size)],
            decim=self.nffts,
        )

    def work(self, input_items, output_items):
        output = output_items[0]
        groups = len(output)
        spectra = input_items[0][: groups * self.nffts].reshape(groups, self.nffts, self.fft_size)
        detect(spectra, output.reshape(groups, len(FREQUENCY_DETECTORS), self.fft_size))
        return groups


def detect(groups: np.ndarray, out: np.ndarray) -> None:
    """Write min, max, mean, median, sample of ``groups`` (n, count, width) along
    axis 1 into ``out`` (n, 5, width)."""
    np.min(groups, axis=1, out=out[:, 0])
    np.max(groups, axis=1, out=out[:, 1])
    out[:, 2] = np.mean(groups, axis=1, dtype=np.float64)
    out[:, 3] = np.median(groups, axis=1)
    out[:, 4] = groups[:, 0]
