"""The disk quota: keep the data directory's filesystem below ``MAX_DISK_USAGE``
percent by deleting the oldest acquisitions, whatever their schedule entry."""

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from .database import Database
from .models import Acquisition

logger = logging.getLogger(__name__)

BATCH = 20  # acquisitions deleted per transaction


@dataclass(frozen=True)
class QuotaResult:
    percent: float  # of the filesystem in use afterwards
    deleted: int  # acquisitions deleted
    within: bool  # below the quota afterwards


def used_percent(path: Path, usage: Callable = shutil.disk_usage) -> float:
    total, used, _free = usage(path)
    return 100.0 * used / total


def enforce(
    database: Database, max_percent: float, usage: Callable = shutil.disk_usage
) -> QuotaResult:
    """Delete the oldest acquisitions (their files go at each commit) until the data
    filesystem is below ``max_percent``, or none is left."""
    deleted = 0
    percent = used_percent(database.data_dir, usage)
    while percent > max_percent:
        with database.session() as db:
            oldest = db.scalars(
                select(Acquisition).order_by(Acquisition.created, Acquisition.id).limit(BATCH)
            ).all()
            for acquisition in oldest:
                db.delete(acquisition)
        if not oldest:
            break
        deleted += len(oldest)
        percent = used_percent(database.data_dir, usage)
    if deleted:
        logger.warning(
            "disk quota: deleted the %d oldest acquisition(s); the data filesystem is %.1f%% full "
            "(MAX_DISK_USAGE %g%%)",
            deleted,
            percent,
            max_percent,
        )
    return QuotaResult(percent, deleted, percent <= max_percent)
