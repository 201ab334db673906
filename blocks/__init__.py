"""gr-scos GNU Radio blocks (``from gnuradio import scos``).

Signal-analyzer sources (``sigan_sim``, ``sigmf_source``, and ``sigan_source``, which
is one of them or a USRP or osmosdr device, as the configuration says) tag their
output like a radio (see ``tags``); the detectors (``m4s_detector``,
``time_domain_detector``), ``calibrate`` and ``sigmf_sink`` carry those tags through
to SCOS SigMF metadata.
"""

from .calibrate import calibrate
from .m4s_detector import FREQUENCY_DETECTORS, m4s_detector
from .sigan_sim import sigan_sim
from .sigan_source import SiganError, sigan_source
from .sigmf_sink import sigmf_sink
from .sigmf_source import SigMFReplayError, sigmf_source
from .skip_after_tune import skip_after_tune
from .step_tuner import step_tuner
from .time_domain_detector import TIME_DETECTORS, time_domain_detector

__all__ = [
    "FREQUENCY_DETECTORS",
    "TIME_DETECTORS",
    "SigMFReplayError",
    "SiganError",
    "calibrate",
    "m4s_detector",
    "sigan_sim",
    "sigan_source",
    "sigmf_sink",
    "sigmf_source",
    "skip_after_tune",
    "step_tuner",
    "time_domain_detector",
]
