"""Step the signal analyzer through a list of settings within one flowgraph run."""

import math
import time

import pmt

from . import tags
from .skip_after_tune import skip_after_tune

COMMAND_PORT = "command"


def _per_step(name: str, value, steps: int) -> list[float]:
    """``value`` for each of ``steps`` steps: a number for all, or a list of ``steps``."""
    values = list(value) if isinstance(value, list | tuple) else [value] * steps
    if len(values) != steps:
        raise ValueError(f"{name} has {len(values)} values for {steps} frequencies")
    for item in values:
        if isinstance(item, bool) or not isinstance(item, int | float) or not math.isfinite(item):
            raise ValueError(f"{name} must be finite numbers, got {item!r}")
    return [float(item) for item in values]


class step_tuner(skip_after_tune):
    """Passes ``duration_ms`` of samples at each of ``frequencies``, one after another.

    Input: complex64 samples of a ``sigan_source``, with its ``rx_freq`` / ``rx_rate``
    tags. Output: the same samples, ``nskip`` dropped after each retune (as
    ``skip_after_tune``, tags kept and ``rx_time`` restated), then ``duration_ms``
    of each step at its frequency, ``sample_rate`` and ``gain``. Message output
    ``command``: connect it to the sigan_source's ``command`` input; the block sends
    each step's ``{freq, rate, gain}`` there when the previous step is complete,
    and drops the samples that still come at the old settings until the source's
    ``rx_freq`` (and ``rx_rate``) tags show the new ones. After the last step the
    flowgraph ends. ``sample_rate``, ``gain`` and ``duration_ms`` are a number for
    every step or a list with one value per frequency.

    A SigMF sink with ``split_on_retune`` downstream writes one recording per
    frequency. If the source has not retuned ``retune_timeout`` seconds (wall
    clock) after a command, the block raises RuntimeError.
    """

    BLOCK_NAME = "scos_step_tuner"
    # Tolerances for recognising the tagged settings as the requested ones: devices
    # tune and clock to the nearest value they can make.
    FREQUENCY_TOLERANCE_HZ = 1e3
    RATE_TOLERANCE = 1e-3

    def __init__(
        self,
        frequencies=(700e6,),
        sample_rate=14e6,
        gain=0.0,
        duration_ms=10.0,
        nskip: int = 0,
        retune_timeout: float = 10.0,
    ):
        skip_after_tune.__init__(self, nskip)
        if not isinstance(frequencies, list | tuple) or not frequencies:
            raise ValueError(f"frequencies must be a non-empty list in Hz, got {frequencies!r}")
        self.frequencies = _per_step("frequencies", list(frequencies), len(frequencies))
        steps = len(self.frequencies)
        self.sample_rates = _per_step("sample_rate", sample_rate, steps)
        self.gains = _per_step("gain", gain, steps)
        durations = _per_step("duration_ms", duration_ms, steps)
        for name, values in (("frequencies", self.frequencies), ("sample_rate", self.sample_rates)):
            if min(values) <= 0:
                raise ValueError(f"{name} must be positive, got {min(values)!r}")
        self.counts = [
            round(ms * rate / 1e3) for ms, rate in zip(durations, self.sample_rates, strict=True)
        ]
        if min(self.counts) < 1:
            raise ValueError("duration_ms must be at least one sample at its sample rate")
        if not retune_timeout > 0:
            raise ValueError(f"retune_timeout must be positive seconds, got {retune_timeout!r}")
        self.retune_timeout = float(retune_timeout)
        self.message_port_register_out(pmt.intern(COMMAND_PORT))
        self.step = 0
        self._remaining = self.counts[0]
        self._waiting_since: float | None = None  # wall clock of the last unanswered command
        # What answers it: tags showing the step's settings, or (a gain-only step) the
        # next rx_freq tag, which the source restates when it applies any command.
        self._any_retag = False
        self._commanded = False  # whether this step's settings were sent to the source
        self._retag_seen = False  # an rx_freq tag came since the last command

    def start(self) -> bool:
        # The source normally starts at the first step's settings; it is commanded
        # only if its first tags say otherwise, so that no needless retune is in
        # flight (its tags would look like the answer to the next step's command).
        self._any_retag = self._commanded = self._retag_seen = False
        self._waiting_since = time.monotonic()
        return True

    def _command(self, step: int) -> None:
        settings = {
            "freq": self.frequencies[step],
            "rate": self.sample_rates[step],
            "gain": self.gains[step],
        }
        self._waiting_since = time.monotonic()
        self._commanded, self._retag_seen = True, False
        self.message_port_pub(pmt.intern(COMMAND_PORT), tags.dict_to_pmt(settings))

    def _settled(self) -> bool:
        step = self.step
        return (
            self._frequency is not None
            and self._rate is not None
            and abs(self._frequency - self.frequencies[step]) <= self.FREQUENCY_TOLERANCE_HZ
            and math.isclose(self._rate, self.sample_rates[step], rel_tol=self.RATE_TOLERANCE)
        )

    def _note(self, tag) -> None:
        skip_after_tune._note(self, tag)
        if pmt.eq(tag.key, tags.RX_FREQ):
            self._retag_seen = True

    def _retuned(self) -> None:
        """Skipping follows the steps, not every rx_freq change."""

    def _droppable(self, available: int) -> int:
        # Called once all tags at the current sample are noted.
        if self._waiting_since is None:
            return skip_after_tune._droppable(self, available)
        if self._settled() if not self._any_retag else self._retag_seen:
            self._waiting_since = None
            self._to_skip = self.nskip
            return skip_after_tune._droppable(self, available)
        if not self._commanded and self._retag_seen:
            self._command(self.step)  # the source started elsewhere than the first step
        waited = time.monotonic() - self._waiting_since
        if waited > self.retune_timeout:
            raise RuntimeError(
                f"step_tuner: the signal analyzer did not retune to {self.frequencies[self.step]:g} Hz "
                f"at {self.sample_rates[self.step]:g} S/s within {self.retune_timeout:g} s"
            )
        return available

    def _passable(self, available: int) -> int:
        return min(available, self._remaining)

    def _passed(self, count: int) -> None:
        self._remaining -= count
        if self._remaining == 0 and self.step + 1 < len(self.counts):
            previous, step = self.step, self.step + 1
            self.step, self._remaining = step, self.counts[step]
            same = [
                values[step] == values[previous]
                for values in (self.frequencies, self.sample_rates, self.gains)
            ]
            if all(same):
                return
            self._any_retag = same[0] and same[1]
            self._command(step)

    def _finished(self) -> bool:
        return self._remaining == 0

    @property
    def incomplete(self) -> str | None:
        """Why the steps did not all complete (the source ended early), or None."""
        if self._finished():
            return None
        return (
            f"step_tuner: the signal analyzer's stream ended during step {self.step + 1} of "
            f"{len(self.counts)} ({self.frequencies[self.step]:g} Hz)"
        )
