"""Waking the scheduler when the schedule changes, so it never polls.

The scheduler binds a Unix datagram socket in ``SCOS_HOME``; the API sends it one
byte after every committed change that may move a task time. A scheduler that is
not running simply misses the datagram: it reads the schedule when it starts.
"""

import logging
import socket
from pathlib import Path

logger = logging.getLogger(__name__)

SOCKET_NAME = "scheduler.wake"


def socket_path(home: Path) -> Path:
    return home / SOCKET_NAME


def wake(home: Path) -> bool:
    """Tell the scheduler of ``home`` to re-read the schedule; False if none listens."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
        sender.setblocking(False)
        try:
            sender.sendto(b"w", str(socket_path(home)))
        except (FileNotFoundError, ConnectionRefusedError):
            return False
        except BlockingIOError:
            # Its queue is full of wake-ups it has not read yet: it will re-read anyway.
            return True
        except OSError as error:
            logger.warning("cannot wake the scheduler: %s", error)
            return False
    return True


class WakeListener:
    """The scheduler's end: ``wait(timeout)`` returns True when woken, and reads
    every queued wake-up so that one re-read answers them all."""

    def __init__(self, home: Path):
        self.path = socket_path(home)
        self.path.unlink(missing_ok=True)
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.bind(str(self.path))

    def fileno(self) -> int:
        return self.socket.fileno()

    def wait(self, timeout: float | None) -> bool:
        """Wait up to ``timeout`` seconds (None: for ever; 0 or less: not at all) for a
        wake-up; True if there was one."""
        woken = False
        if timeout is None or timeout > 0:
            # A timeout of 0 would make the socket non-blocking: recv() would raise
            # BlockingIOError instead of TimeoutError.
            self.socket.settimeout(timeout)
            try:
                self.socket.recv(64)
                woken = True
            except TimeoutError:
                return False
        self.socket.setblocking(False)
        try:
            while True:
                self.socket.recv(64)
                woken = True
        except BlockingIOError:
            pass
        return woken

    def close(self) -> None:
        self.socket.close()
        self.path.unlink(missing_ok=True)
