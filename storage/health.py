"""The sensor's health, from the database and the filesystem only, so that reading it
never touches the radio: the scheduler's state, disk usage and the problems that make
the sensor unhealthy. ``/status``, ``/metrics`` and ``gr-scos status`` all show this."""

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from .models import SCHEDULER_DEAD_AFTER_SECONDS, SchedulerState, utc_now

SCHEDULER_STATES = ("idle", "running", "dead")


@dataclass(frozen=True)
class DiskUsage:
    """The data directory's filesystem, and the MAX_DISK_USAGE limit on it."""

    total_bytes: int
    used_bytes: int
    free_bytes: int
    max_percent: float

    @property
    def percent(self) -> float:
        """Used, of what the sensor may use (as df shows it: root's reserve excluded)."""
        return round(100 * self.used_bytes / (self.used_bytes + self.free_bytes), 2)

    @classmethod
    def measure(
        cls, data_dir: Path, max_percent: float, usage: Callable = shutil.disk_usage
    ) -> "DiskUsage":
        total, used, free = usage(data_dir)
        return cls(total, used, free, max_percent)

    def as_dict(self) -> dict:
        return {
            "total_bytes": self.total_bytes,
            "used_bytes": self.used_bytes,
            "free_bytes": self.free_bytes,
            "percent": self.percent,
            "max_percent": self.max_percent,
        }


@dataclass(frozen=True)
class Health:
    scheduler: str  # one of SCHEDULER_STATES
    consecutive_failures: int
    sigan_error: str | None  # None also when the scheduler is not running
    disk: DiskUsage
    problems: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.problems


def scheduler_state(db: Session) -> tuple[str, SchedulerState | None]:
    """idle, running or dead, and the scheduler's row when it lives."""
    state = db.scalar(select(SchedulerState))
    if state is None:
        return "dead", None
    if (utc_now() - state.heartbeat).total_seconds() > SCHEDULER_DEAD_AFTER_SECONDS:
        return "dead", None
    return state.state, state


def health(db: Session, disk: DiskUsage) -> Health:
    """The scheduler's liveness, the tasks failed in a row, the signal analyzer and the
    disk, each problem as one sentence."""
    scheduler, state = scheduler_state(db)
    problems = []
    failures, sigan_error = 0, None
    if state is None:
        problems.append("the scheduler is not running")
    else:
        failures, sigan_error = state.consecutive_failures, state.sigan_error
        if failures:
            problems.append(f"{failures} task(s) in a row failed; the last: {state.last_failure}")
        if sigan_error:
            problems.append(sigan_error)
    if disk.percent >= disk.max_percent:
        problems.append(f"disk usage {disk.percent}% is at or above {disk.max_percent}%")
    return Health(scheduler, failures, sigan_error, disk, problems)
