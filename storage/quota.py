"""The disk quota: keep the data directory's filesystem below ``MAX_DISK_USAGE``
percent by deleting the oldest acquisitions, whatever their schedule entry."""

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select

from . import metrics
from .database import Database
from .health import DiskUsage
from .models import Acquisition

logger = logging.getLogger(__name__)

BATCH = 100  # oldest acquisitions considered per transaction


@dataclass(frozen=True)
class QuotaResult:
    percent: float  # of the filesystem in use afterwards
    deleted: int  # acquisitions deleted
    within: bool  # below the quota afterwards


def enforce(
    database: Database, max_percent: float, usage: Callable = shutil.disk_usage
) -> QuotaResult:
    """Delete the oldest acquisitions (their files go at each commit), as few as make
    the data filesystem fall below ``max_percent``, or all when that is not enough."""
    deleted = 0
    disk = DiskUsage.measure(database.data_dir, max_percent, usage)
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
    return QuotaResult(disk.percent, deleted, disk.excess_bytes <= 0)
