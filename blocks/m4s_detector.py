"""M4S detector: the five SCOS frequency-domain detectors over groups of spectra."""

import functools
import time

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
    axis 1 into ``out`` (n, 5, width).

    Min, max and median equal ``np.min``, ``np.max`` and ``np.median`` of the same float32
    values (the median of an even count is the float32 mean of the two middle values, as
    in ``np.median``); the mean is accumulated in float64. ``groups`` is not modified.
    """
    count = groups.shape[1]
    lower_middle, upper_middle = (count - 1) // 2, count // 2
    # A copy with each bin's values in one contiguous row: numpy sorts and partitions
    # contiguous rows several times faster than the strided columns np.median works on,
    # and the copy leaves the caller's buffer untouched.
    by_bin = groups.transpose(0, 2, 1).copy()
    if _sort_is_faster(count):
        by_bin.sort(axis=-1)
    else:
        by_bin.partition((lower_middle, upper_middle), axis=-1)
    median = out[:, 3]
    if lower_middle == upper_middle:
        median[...] = by_bin[..., upper_middle]
    else:
        # Rounded as np.median does: the float32 sum of the two middle values, halved.
        np.add(by_bin[..., lower_middle], by_bin[..., upper_middle], out=median)
        np.divide(median, 2, out=median)
    np.min(groups, axis=1, out=out[:, 0])
    np.max(groups, axis=1, out=out[:, 1])
    # np.median gives NaN for a bin holding a NaN, which sorting would move out of the
    # middle; the max is NaN exactly for those bins.
    np.copyto(median, out[:, 1], where=np.isnan(out[:, 1]))
    out[:, 2] = np.mean(groups, axis=1, dtype=np.float64)
    out[:, 4] = groups[:, 0]


@functools.cache
def _sort_is_faster(count: int) -> bool:
    """Whether sorting float32 rows of ``count`` values beats partitioning them here.

    Where numpy has a SIMD float32 sort for the CPU (x86-simd-sort on AVX-512), a full
    sort of a few hundred values is about 3x faster than np.partition's introselect;
    elsewhere it is about 3x slower, and the balance shifts with ``count``. Both give the
    same order statistics, so a one-off timing only picks the speed, never the result.
    """
    rows = np.random.default_rng(0).random((max(1, 2**16 // count), count), dtype=np.float32)
    middle = count // 2

    def seconds(order_in_place) -> float:
        scratch = rows.copy()
        start = time.perf_counter()
        order_in_place(scratch)
        return time.perf_counter() - start

    # Best of interleaved rounds, so a burst of load from other threads skews neither side.
    sort_seconds = partition_seconds = float("inf")
    for _ in range(3):
        sort_seconds = min(sort_seconds, seconds(lambda scratch: scratch.sort(axis=-1)))
        partition_seconds = min(
            partition_seconds, seconds(lambda scratch: scratch.partition(middle, axis=-1))
        )
    return sort_seconds < partition_seconds
