"""A process that ends when the process that started it does, however that one ends
(SIGKILL included): Linux's parent-death signal (``PR_SET_PDEATHSIG``).

``gr-scos run`` names itself in ``LIFELINE_ENV`` when it starts gunicorn; gunicorn's
master calls :func:`hold` as it starts (``gunicorn_conf.on_starting``), after its
exec, rather than in a ``preexec_fn`` between fork and exec, which is not safe in a
process with threads. The kernel sends the signal when the *thread* that started the
process ends: ``gr-scos run`` starts gunicorn from a thread that lives as long as it.
"""

import ctypes
import os
import signal

LIFELINE_ENV = "GRSCOS_LIFELINE_PID"
_PR_SET_PDEATHSIG = 1


def hold(parent: int) -> None:
    """Be SIGKILLed when ``parent`` (this process's parent) ends; exit at once if it has
    ended already."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    if prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
    if os.getppid() != parent:  # it died before the prctl: this process is an orphan
        os._exit(1)


def hold_if_asked() -> None:
    """:func:`hold` the parent that ``LIFELINE_ENV`` names, if it names one."""
    parent = os.environ.get(LIFELINE_ENV)
    if parent:
        hold(int(parent))
