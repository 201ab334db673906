"""Database outages as every process of the sensor sees them: since when the database
has been unreachable, and why.

The first process that cannot reach the database (the scheduler, its notifier, an API
worker) records the outage in ``SCOS_HOME/database-outage.json``; the first that
reaches it again removes the file. So ``/status``, ``/metrics`` and ``gr-scos status``
all give the same "since", whichever process noticed first, and a sensor restarted
during an outage still knows when it began.

Recording never raises: a sensor whose home is not writable still rides through the
outage, it only cannot share when it began (each process then keeps its own).
"""

import datetime
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from .models import format_utc, utc_now

logger = logging.getLogger(__name__)

OUTAGE_FILE = "database-outage.json"
ERROR_LENGTH = 300  # characters of the driver's message kept


def unreachable(error: BaseException) -> bool:
    """Whether ``error`` means the database cannot be used right now (down,
    restarting, failing over, locked past the busy timeout), as opposed to a bug or a
    bad statement: such errors are retried, never fatal."""
    if isinstance(error, OperationalError | InterfaceError):
        return True
    return isinstance(error, DBAPIError) and bool(error.connection_invalidated)


def describe(error: BaseException) -> str:
    """The driver's message on one line, without SQLAlchemy's statement and link."""
    original = getattr(error, "orig", None) or error
    text = " ".join(str(original).split()) or type(original).__name__
    return text[:ERROR_LENGTH]


@dataclass(frozen=True)
class Outage:
    since: datetime.datetime
    error: str

    def problem(self) -> str:
        """The sentence ``/status`` shows."""
        return f"the database is unreachable since {format_utc(self.since)}: {self.error}"

    def as_dict(self) -> dict:
        return {"since": format_utc(self.since), "error": self.error}


class OutageRecord:
    """The outage file of one ``SCOS_HOME``."""

    def __init__(self, home: Path):
        self.path = Path(home) / OUTAGE_FILE
        self._own: Outage | None = None  # when the file cannot be written

    def current(self) -> Outage | None:
        """The outage under way, or None."""
        try:
            data = json.loads(self.path.read_text())
            return Outage(datetime.datetime.fromisoformat(data["since"]), str(data["error"]))
        except FileNotFoundError:
            return self._own
        except (OSError, ValueError, KeyError, TypeError) as problem:
            logger.warning("unreadable %s (%s): taken as an outage from now", self.path, problem)
            return Outage(utc_now(), "unknown (the outage record is unreadable)")

    def failed(self, error: BaseException) -> Outage:
        """Record that the database is unreachable (unless an outage is recorded
        already); the outage under way."""
        known = self.current()
        if known is not None:
            return known
        outage = Outage(utc_now(), describe(error))
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(
                "w", dir=self.path.parent, prefix=".outage-", delete=False
            ) as temporary:
                json.dump({"since": outage.since.isoformat(), "error": outage.error}, temporary)
            try:
                os.link(temporary.name, self.path)  # atomic, and only if none is recorded
            except FileExistsError:
                outage = self.current() or outage
            finally:
                os.unlink(temporary.name)
        except OSError as problem:
            logger.warning("cannot record the database outage in %s: %s", self.path, problem)
            self._own = outage
            return outage
        logger.error("%s", outage.problem())
        return outage

    def recovered(self) -> Outage | None:
        """Record that the database answers again; the outage that ended, if any."""
        ended = self.current()
        if ended is None:
            return None
        self._own = None
        try:
            self.path.unlink(missing_ok=True)
        except OSError as problem:
            logger.warning("cannot remove %s: %s", self.path, problem)
        seconds = (utc_now() - ended.since).total_seconds()
        logger.warning("the database answers again, after %.1f s unreachable", seconds)
        return ended
