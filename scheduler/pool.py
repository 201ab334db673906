"""The scheduler's runner processes, started ahead of their tasks.

A runner imports GNU Radio and the flowgraphs (a quarter of a second or more) before
it is given a task, so the pool keeps ``SPARE_RUNNERS`` of them importing or ready:
two, so that a task shorter than one runner's import still finds the next one ready.
A spare is checked at hand-over: one that died, froze (SIGSTOP, a deadlock) or hangs
in its import is killed and replaced, instead of failing the task it would be given.
"""

import collections
import logging
import threading
from pathlib import Path

from .supervisor import RunnerProcess

logger = logging.getLogger(__name__)

SPARE_RUNNERS = 2
# How long a runner that has finished its task may take to exit (GNU Radio's teardown
# on a loaded machine can take seconds) before it is killed; it is waited for in the
# background, so waiting costs nothing.
REAP_GRACE_SECONDS = 15.0


class RunnerPool:
    """Spare runner processes whose sockets are in ``socket_dir``."""

    def __init__(self, socket_dir: Path, size: int = SPARE_RUNNERS):
        self.socket_dir = Path(socket_dir)
        self.size = size
        self.spares: collections.deque[RunnerProcess] = collections.deque()

    def fill(self) -> None:
        """Start runners for the next tasks, up to ``size``."""
        while len(self.spares) < self.size:
            self.spares.append(RunnerProcess(self.socket_dir))

    def take(self) -> RunnerProcess:
        """The oldest spare that answers (the likeliest to be ready), else a new one."""
        while self.spares:
            runner = self.spares.popleft()
            # A healthy runner answers within milliseconds; a broken one is killed.
            problem = runner.why_unresponsive()
            if problem is None:
                return runner
            logger.warning("spare runner (pid %d) replaced: %s", runner.pid, problem)
            self.release(runner)
        return RunnerProcess(self.socket_dir)

    def release(self, runner: RunnerProcess) -> None:
        """End ``runner`` in the background (one that finished its task exits by
        itself), without holding up the caller."""
        threading.Thread(
            target=runner.close, args=(REAP_GRACE_SECONDS,), name="reap-runner", daemon=True
        ).start()

    def close(self) -> None:
        while self.spares:
            self.spares.popleft().close()
