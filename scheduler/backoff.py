"""The one backoff of the sensor's retries: acquisition notifications, the manager
association, and every wait for a database that cannot be reached."""

from dataclasses import dataclass

MAX_EXPONENT = 1000  # 2.0**1024 overflows; any cap is reached long before


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff: after ``failures`` failures in a row, wait ``base``,
    ``2 base``, ``4 base``, ... seconds, at most ``cap``."""

    base: float
    cap: float

    def delay(self, failures: int) -> float:
        """Seconds from the ``failures``-th failure in a row to the next attempt."""
        exponent = min(max(failures - 1, 0), MAX_EXPONENT)
        return min(self.cap, self.base * 2.0**exponent)


# A database outage (a restart, a failover, a lock) may last hours: keep trying, every
# 5 s at most, so that the sensor resumes (and /status says so) within seconds of the
# database; an attempt costs one connection.
DATABASE_RETRY = Backoff(1.0, 5.0)
