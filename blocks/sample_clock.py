"""Pacing of source blocks to a sample rate, for real-time lab replay and simulation."""

import time


class SampleClock:
    """Tells a source how many samples it may emit now to keep to ``rate`` samples/s."""

    # Longest single sleep, so that a flowgraph stop is honoured promptly.
    MAX_SLEEP = 0.05

    def __init__(self, rate: float):
        self.rate = float(rate)
        self._start: float | None = None
        self._emitted = 0

    def allowance(self, wanted: int) -> int:
        """Sleep as needed, then return how many of ``wanted`` samples are due (>= 1)."""
        now = time.monotonic()
        if self._start is None:
            self._start = now
        due = int((now - self._start) * self.rate) - self._emitted
        if due < 1:
            time.sleep(min((1 - due) / self.rate, self.MAX_SLEEP))
            due = int((time.monotonic() - self._start) * self.rate) - self._emitted
        return max(1, min(wanted, due))

    def emitted(self, count: int) -> None:
        self._emitted += count

    def restart(self, rate: float) -> None:
        self.rate = float(rate)
        self._start = None
        self._emitted = 0
