"""The disk quota: keep the data directory's filesystem below ``MAX_DISK_USAGE``
percent by deleting the oldest acquisitions, whatever their schedule entry.

Deleting can free only what the sensor's acquisitions hold. When other files fill
the disk so that deleting every recording would still leave it above the limit,
nothing is deleted: the result says how much of the disk is not the sensor's, and
the scheduler fails its task with that instead of losing the data for nothing.
"""

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select

from . import metrics
from .database import Database
from .health import NOTHING_DELETED, DiskUsage, stored_bytes
from .models import Acquisition

logger = logging.getLogger(__name__)

BATCH = 100  # oldest acquisitions considered per transaction
FREED_LESS = "deleting the oldest recordings freed less than their recorded sizes"


@dataclass(frozen=True)
class QuotaResult:
    percent: float  # of the filesystem in use afterwards
    deleted: int  # acquisitions deleted
    problem: str | None  # why the filesystem is still above the quota; None: within it

    @property
    def within(self) -> bool:
        """Below the quota afterwards."""
        return self.problem is None


def enforce(
    database: Database, max_percent: float, usage: Callable = shutil.disk_usage
) -> QuotaResult:
    """Delete the oldest acquisitions (their files go at each commit), as few as make
    the data filesystem fall below ``max_percent``; none when deleting them all could
    not (the result's ``problem`` says why)."""
    deleted = 0
    disk = DiskUsage.measure(database.data_dir, max_percent, usage)
    if disk.excess_bytes <= 0:
        return QuotaResult(disk.percent, 0, None)
    stored = _stored(database)
    if stored < disk.excess_bytes:
        return QuotaResult(disk.percent, 0, disk.above_limit(stored, NOTHING_DELETED))
    while disk.excess_bytes > 0:
        freed = batch = 0
        with database.session() as db:
            oldest = db.scalars(
                select(Acquisition).order_by(Acquisition.created, Acquisition.id).limit(BATCH)
            )
            for acquisition in oldest:
                db.delete(acquisition)
                batch += 1
                freed += acquisition.data_size
                if freed >= disk.excess_bytes:
                    break
            metrics.count(db, metrics.QUOTA_DELETIONS, batch)
        deleted += batch
        if not freed:
            break
        disk = DiskUsage.measure(database.data_dir, max_percent, usage)
    if deleted:
        logger.warning(
            "disk quota: deleted the %d oldest acquisition(s); the data filesystem is %.1f%% full "
            "(MAX_DISK_USAGE %g%%)",
            deleted,
            disk.percent,
            max_percent,
        )
    if disk.excess_bytes <= 0:
        return QuotaResult(disk.percent, deleted, None)
    # The recorded sizes promised more than deleting freed (files already gone).
    return QuotaResult(disk.percent, deleted, disk.above_limit(_stored(database), FREED_LESS))


def _stored(database: Database) -> int:
    with database.sessions() as db:
        return stored_bytes(db)
