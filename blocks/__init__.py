"""gr-scos GNU Radio blocks (``from gnuradio import scos``).

Signal-analyzer sources (``sigan_sim``, ``sigmf_source``) tag their output like a
radio (see ``tags``); the detectors (``m4s_detector``, ``time_domain_detector``),
``calibrate`` and ``sigmf_sink`` carry those tags through to SCOS SigMF metadata.
"""

from .calibrate import calibrate
from .m4s_detector import FREQUENCY_DETECTORS, m4s_detector
from .sigan_sim import sigan_sim
from .sigmf_sink import sigmf_sink
from .sigmf_source import SigMFReplayError, sigmf_source
from .time_domain_detector import TIME_DETECTORS, time_domain_detector

__all__ = [
    "FREQUENCY_DETECTORS",
    "TIME_DETECTORS",
    "SigMFReplayError",
    "calibrate",
    "m4s_detector",
    "sigan_sim",
    "sigmf_sink",
    "sigmf_source",
    "time_domain_detector",
]
