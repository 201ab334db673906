"""The API while its database is unreachable: a PostgreSQL restart or failover, or an
SQLite write lock held by another process past the busy timeout.

A request whose database work fails that way (authentication included: tokens live in
the database) answers 503 with the usual error body, saying since when the database
is unreachable and, in ``Retry-After``, when to try again. The driver's message names
hosts and ports, so it never goes to the client: it goes to the log, once per outage
in each worker, and to the outage file that every process of the sensor shares
(``storage/outage.py``). Every request tries the database again, so the API answers
as soon as the database does; the worker that saw the outage then ends it.

gunicorn recycles its workers, so one may start during an outage. It must start all
the same (gunicorn stops when a worker fails to boot): its start-up work on the
database (migration, location) then runs on the first request that reaches it.
"""

import functools
import logging
import os
import threading
from collections.abc import Callable

from flask import Response, jsonify
from sqlalchemy.exc import SQLAlchemyError

from ..storage.models import format_utc
from ..storage.outage import Outage, OutageRecord, describe, unreachable
from .common import sensor_app

logger = logging.getLogger(__name__)

# What a 503 asks clients to wait: each request retries the database (a dropped
# PostgreSQL connection is replaced at once), so a restart shows within seconds.
RETRY_AFTER_SECONDS = 10


class DatabaseAvailability:
    """One API process's view of its database: whether its start-up work is done, and
    whether it has answered 503 since the database last answered."""

    def __init__(self, record: OutageRecord, prepare: Callable[[], None]):
        self.record = record
        self._prepare = prepare
        self._prepared = False
        # gunicorn's threads share the process: one prepares while the others wait.
        self._preparing = threading.Lock()
        self._outage_seen = False
        self._seeing = threading.Lock()

    def prepare(self) -> None:
        """Do the start-up work unless it is done; SQLAlchemyError if the database fails."""
        if self._prepared:
            return
        with self._preparing:
            if not self._prepared:
                self._prepare()
                self._prepared = True

    def start(self) -> None:
        """Do the start-up work now or, the database being unreachable, record the
        outage and leave the work to the first request that reaches the database."""
        try:
            self.prepare()
        except SQLAlchemyError as error:
            if not unreachable(error):
                raise
            self.failed(error)
            logger.warning(
                "the API starts without its database; migration and location wait for it"
            )

    def failed(self, error: SQLAlchemyError) -> Outage:
        """Record that ``error`` (an unreachable database) failed a request; the outage
        under way. Logged once per outage by each worker."""
        known = self.record.current()
        outage = self.record.failed(error)  # logs the outage when it records it
        with self._seeing:
            first = not self._outage_seen
            self._outage_seen = True
        if first and known is not None:
            logger.error(
                "API worker %d: the database is unreachable (since %s): %s",
                os.getpid(),
                format_utc(outage.since),
                describe(error),
            )
        return outage

    def reached(self) -> None:
        """A request's database work succeeded: end the outage this worker saw."""
        if not self._outage_seen:
            return
        with self._seeing:
            ended, self._outage_seen = self._outage_seen, False
        if ended:
            self.record.recovered()


def unreachable_response(outage: Outage) -> Response:
    """The 503 of a request the unreachable database failed."""
    since = format_utc(outage.since)
    response = jsonify(
        message=f"the database is unreachable since {since}; the sensor retries",
        errors={"database": f"unreachable since {since}"},
    )
    response.status_code = 503
    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def answers_503_while_unreachable(method: Callable) -> Callable:
    """Run a resource's ``method`` once the API's start-up work is done, and answer 503
    when the database is unreachable (instead of 500, and without logging a traceback
    per request). Other database errors propagate."""

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        availability = sensor_app().availability
        try:
            availability.prepare()
            result = method(*args, **kwargs)
        except SQLAlchemyError as error:
            if not unreachable(error):
                raise
            return unreachable_response(availability.failed(error))
        availability.reached()
        return result

    return wrapper
