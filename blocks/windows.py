"""Spectral windows for the FFT path and the corrections that go with them.

Windows are the periodic (DFT-even) generalized-cosine forms used for spectrum
analysis. The names are the ones Table 49 (FrequencyDomainDetection ``window``)
gives as examples, so the metadata names exactly the taps that were applied.
"""

from functools import lru_cache

import numpy as np

# Generalized-cosine coefficients a_k of w[n] = sum_k (-1)^k a_k cos(2 pi k n / N).
_COSINE_COEFFICIENTS: dict[str, tuple[float, ...]] = {
    "rectangular": (1.0,),
    "hanning": (0.5, 0.5),
    "hamming": (0.54, 0.46),
    "blackman-harris": (0.35875, 0.48829, 0.14128, 0.01168),
    # The flat-top of the Matlab/SciPy family, as NTIA's scos-sensor uses.
    "flattop": (0.21557895, 0.41663158, 0.277263158, 0.083578947, 0.006947368),
}

WINDOW_NAMES: tuple[str, ...] = tuple(_COSINE_COEFFICIENTS)


def taps(name: str, size: int) -> np.ndarray:
    """Return the ``size`` float64 taps of the named window."""
    if name not in _COSINE_COEFFICIENTS:
        raise ValueError(f"unknown window {name!r}; choose one of {', '.join(WINDOW_NAMES)}")
    if int(size) != size or size < 1:
        raise ValueError(f"window size must be a positive integer, got {size!r}")
    phase = 2.0 * np.pi * np.arange(size) / size
    window = np.zeros(size)
    for k, a_k in enumerate(_COSINE_COEFFICIENTS[name]):
        window += (-1) ** k * a_k * np.cos(k * phase)
    return window


def amplitude_correction(window: np.ndarray) -> float:
    """Factor that makes |FFT|^2 of a bin-centred tone equal its |amplitude|^2."""
    return float(1.0 / np.sum(window) ** 2)


def enbw_bins(window: np.ndarray) -> float:
    """Equivalent noise bandwidth of the window in FFT bins."""
    return float(len(window) * np.sum(window**2) / np.sum(window) ** 2)


@lru_cache(maxsize=64)
def enbw_hz(name: str, fft_size: int, sample_rate: float) -> float:
    """Equivalent noise bandwidth in Hz of one bin of an amplitude-corrected FFT."""
    return enbw_bins(taps(name, fft_size)) * sample_rate / fft_size
