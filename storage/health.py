"""The sensor's health, from the database and the filesystem only, so that reading it
never touches the radio: the scheduler's state, disk usage and the problems that make
the sensor unhealthy. ``/status``, ``/metrics`` and ``gr-scos status`` all show this."""

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .models import SCHEDULER_DEAD_AFTER_SECONDS, Acquisition, SchedulerState, utc_now
from .outage import Outage

SCHEDULER_STATES = ("idle", "running", "dead")
# What the quota does when deleting the sensor's recordings could not make room.
NOTHING_DELETED = "deleting them all could not bring it below the limit, so none were deleted"
_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def format_bytes(count: float) -> str:
    """``count`` bytes in binary units with one decimal, as df -h counts: 41.3 GiB."""
    power = 0
    while abs(count) >= 1024 and power < len(_UNITS) - 1:
        count /= 1024
        power += 1
    return f"{count:.0f} B" if power == 0 else f"{count:.1f} {_UNITS[power]}"


@dataclass(frozen=True)
class DiskUsage:
    """The data directory's filesystem, and the MAX_DISK_USAGE limit on it."""

    total_bytes: int
    used_bytes: int
    free_bytes: int
    max_percent: float

    @property
    def usable_bytes(self) -> int:
        """What the sensor may use, as df counts it: root's reserved blocks are not."""
        return self.used_bytes + self.free_bytes

    @property
    def percent(self) -> float:
        return round(100 * self.used_bytes / self.usable_bytes, 2)

    @property
    def excess_bytes(self) -> float:
        """How much must go to be within MAX_DISK_USAGE (0 or less: within)."""
        return self.used_bytes - self.usable_bytes * self.max_percent / 100

    @classmethod
    def measure(
        cls, data_dir: Path, max_percent: float, usage: Callable = shutil.disk_usage
    ) -> "DiskUsage":
        total, used, free = usage(data_dir)
        return cls(total, used, free, max_percent)

    def above_limit(self, stored_bytes: int, outcome: str) -> str:
        """One line: how full, the limit, how much of the disk is not the sensor's data
        (``stored_bytes`` is what its recordings hold), and what the quota did."""
        others = format_bytes(max(self.used_bytes - stored_bytes, 0))
        return (
            f"the data filesystem is {self.percent:.1f}% full, above MAX_DISK_USAGE "
            f"{self.max_percent:g}%, and {others} of its {format_bytes(self.usable_bytes)} is "
            f"not the sensor's data (its recordings hold {format_bytes(stored_bytes)}): {outcome}"
        )

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
    state: SchedulerState | None  # the scheduler's row while it lives
    disk: DiskUsage
    problems: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.problems

    @property
    def consecutive_failures(self) -> int:
        return self.state.consecutive_failures if self.state else 0

    @property
    def sigan_error(self) -> str | None:
        """The signal analyzer's problem; None also when the scheduler is not running."""
        return self.state.sigan_error if self.state else None


def stored_bytes(db: Session) -> int:
    """What deleting every acquisition can free: the sizes of their data files."""
    return db.scalar(select(func.coalesce(func.sum(Acquisition.data_size), 0)))


def count_by(db: Session, column) -> dict:
    """How many rows have each value of ``column``."""
    rows = db.execute(select(column, func.count()).group_by(column))
    return {value: number for value, number in rows}


def scheduler_state(db: Session) -> tuple[str, SchedulerState | None]:
    """idle, running or dead, and the scheduler's row when it lives."""
    state = db.scalar(select(SchedulerState))
    if state is None:
        return "dead", None
    if (utc_now() - state.heartbeat).total_seconds() > SCHEDULER_DEAD_AFTER_SECONDS:
        return "dead", None
    return state.state, state


def health(db: Session, disk: DiskUsage, outage: Outage | None = None) -> Health:
    """The scheduler's liveness, the tasks failed in a row, the signal analyzer, the
    last database check (``check.py``) and the disk, each problem as one sentence;
    first a database outage some process of the sensor has recorded (``outage.py``:
    the scheduler may be unable to write while a reader still can)."""
    scheduler, state = scheduler_state(db)
    problems = [] if outage is None else [outage.problem()]
    if state is None:
        problems.append("the scheduler is not running")
    else:
        if state.consecutive_failures:
            problems.append(
                f"{state.consecutive_failures} task(s) in a row failed; the last: "
                f"{state.last_failure}"
            )
        if state.sigan_error:
            problems.append(state.sigan_error)
        if state.check_summary:
            problems.append(state.check_summary)
    # A disk at the limit is the quota's steady state; above it, a problem only when
    # deleting the sensor's recordings could not help (other files fill it).
    if disk.excess_bytes > 0 and (stored := stored_bytes(db)) < disk.excess_bytes:
        problems.append(disk.above_limit(stored, NOTHING_DELETED))
    return Health(scheduler, state, disk, problems)
