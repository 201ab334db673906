"""The sensor's database: users and their tokens, the schedule, task results,
acquisitions and their notifications, the location and the scheduler's heartbeat.

Times are stored as UTC and always come back timezone-aware (``UTCDateTime``), on
SQLite as on PostgreSQL. Schema changes are Alembic migrations in ``migrations/``.
"""

import datetime
from typing import ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    func,
    select,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, column_property, mapped_column, relationship

SCHEDULE_ID_LENGTH = 200
NAME_LENGTH = 200
URL_LENGTH = 2000
USERNAME_LENGTH = 150


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def format_utc(moment: datetime.datetime) -> str:
    """ISO 8601 UTC with milliseconds and ``Z``, as the API, SigMF and notifications
    write times."""
    moment = moment.astimezone(datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def format_duration(delta: datetime.timedelta) -> str:
    """``HH:MM:SS.ffffff``, as NTIA's scos-sensor writes task durations."""
    hours, rest = divmod(delta.total_seconds(), 3600)
    minutes, rest = divmod(rest, 60)
    return f"{int(hours):02d}:{int(minutes):02d}:{rest:09.6f}"


class UTCDateTime(TypeDecorator):
    """An aware UTC datetime, stored without zone (SQLite has none)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; use UTC-aware datetimes")
        return value.astimezone(datetime.UTC).replace(tzinfo=None)

    def process_result_value(self, value, dialect):
        return None if value is None else value.replace(tzinfo=datetime.UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict] = {datetime.datetime: UTCDateTime, dict: JSON}


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(USERNAME_LENGTH), unique=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created: Mapped[datetime.datetime] = mapped_column(default=utc_now)

    tokens: Mapped[list["Token"]] = relationship(
        back_populates="user", cascade="all, delete-orphan", passive_deletes=True
    )


class Token(Base):
    """An API token; only its SHA-256 digest is stored."""

    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    created: Mapped[datetime.datetime] = mapped_column(default=utc_now)

    user: Mapped[User] = relationship(back_populates="tokens")


class ScheduleEntry(Base):
    """Table 7/8/23. ``stop`` holds the absolute end, also when the client gave
    ``relative_stop``; ``last_task_time`` is the latest task time the scheduler has
    consumed (run or collapsed), from which the next one is computed."""

    __tablename__ = "schedule_entries"
    __table_args__ = (Index("ix_schedule_due", "is_active", "next_task_time", "priority"),)

    id: Mapped[str] = mapped_column(String(SCHEDULE_ID_LENGTH), primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    action: Mapped[str] = mapped_column(String(100))
    start: Mapped[datetime.datetime]
    stop: Mapped[datetime.datetime | None]
    interval: Mapped[int | None] = mapped_column(BigInteger)
    priority: Mapped[int] = mapped_column(Integer, default=10)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    is_private: Mapped[bool] = mapped_column(Boolean, default=False)
    callback_url: Mapped[str | None] = mapped_column(String(URL_LENGTH))
    # The token that set callback_url, Fernet-encrypted (``storage/credentials.py``):
    # acquisition notifications send it back as ``Authorization: Token ...``.
    callback_credential: Mapped[str | None] = mapped_column(Text)
    next_task_time: Mapped[datetime.datetime | None]
    next_task_id: Mapped[int] = mapped_column(Integer, default=1)
    last_task_time: Mapped[datetime.datetime | None]
    created: Mapped[datetime.datetime] = mapped_column(default=utc_now, index=True)
    modified: Mapped[datetime.datetime] = mapped_column(default=utc_now)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)

    owner: Mapped[User] = relationship(lazy="joined")
    task_results: Mapped[list["TaskResult"]] = relationship(
        back_populates="schedule_entry",
        cascade="all, delete-orphan",
        order_by="TaskResult.task_id",
    )


class TaskResult(Base):
    """Table 24: one task of a schedule entry, running or finished."""

    __tablename__ = "task_results"
    __table_args__ = (UniqueConstraint("schedule_entry_id", "task_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    schedule_entry_id: Mapped[str] = mapped_column(
        ForeignKey("schedule_entries.id", ondelete="CASCADE")
    )
    task_id: Mapped[int] = mapped_column(Integer)
    scheduled: Mapped[datetime.datetime]
    started: Mapped[datetime.datetime]
    finished: Mapped[datetime.datetime | None] = mapped_column(index=True)
    status: Mapped[str] = mapped_column(String(20))
    detail: Mapped[str] = mapped_column(Text, default="")

    schedule_entry: Mapped[ScheduleEntry] = relationship(
        back_populates="task_results", lazy="joined"
    )
    acquisitions: Mapped[list["Acquisition"]] = relationship(
        back_populates="task_result",
        cascade="all, delete-orphan",
        order_by="Acquisition.recording_id",
    )
    notification: Mapped["Notification | None"] = relationship(
        back_populates="task_result",
        cascade="all, delete-orphan",
        passive_deletes=True,
        lazy="selectin",
    )


class Acquisition(Base):
    """One SigMF recording of a task: its metadata here, its data in a file under
    the data directory (``data_path`` is relative to it)."""

    __tablename__ = "acquisitions"
    __table_args__ = (UniqueConstraint("task_result_id", "recording_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    task_result_id: Mapped[int] = mapped_column(
        ForeignKey("task_results.id", ondelete="CASCADE"), index=True
    )
    recording_id: Mapped[int] = mapped_column(Integer)
    sigmf_metadata: Mapped[dict] = mapped_column("metadata")
    data_path: Mapped[str] = mapped_column(String(1000))
    data_size: Mapped[int] = mapped_column(BigInteger)
    created: Mapped[datetime.datetime] = mapped_column(default=utc_now, index=True)

    task_result: Mapped[TaskResult] = relationship(back_populates="acquisitions")


NOTIFICATION_STATES = ("pending", "delivered", "failed")


class Notification(Base):
    """The acquisition notification (Table 13) of a task whose entry has a
    callback_url: its JSON, as POSTed, and its delivery (``scheduler/callbacks.py``).
    ``pending`` ones are retried from ``next_attempt`` on, also after a restart."""

    __tablename__ = "notifications"
    __table_args__ = (Index("ix_notifications_due", "state", "next_attempt"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    task_result_id: Mapped[int] = mapped_column(
        ForeignKey("task_results.id", ondelete="CASCADE"), unique=True
    )
    url: Mapped[str] = mapped_column(String(URL_LENGTH))
    payload: Mapped[dict]
    state: Mapped[str] = mapped_column(String(20), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt: Mapped[datetime.datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    created: Mapped[datetime.datetime] = mapped_column(default=utc_now)
    delivered: Mapped[datetime.datetime | None]

    task_result: Mapped[TaskResult] = relationship(back_populates="notification")


# Counted in SQL, so that listing tasks does not load every recording's metadata.
TaskResult.recording_count = column_property(
    select(func.count(Acquisition.id))
    .where(Acquisition.task_result_id == TaskResult.id)
    .correlate_except(Acquisition)
    .scalar_subquery()
)


class Location(Base):
    """Table 21; one row, the sensor's current location."""

    __tablename__ = "location"

    id: Mapped[int] = mapped_column(primary_key=True)
    gps: Mapped[bool] = mapped_column(Boolean, default=False)
    description: Mapped[str] = mapped_column(Text, default="")
    latitude: Mapped[float | None] = mapped_column(Float)
    longitude: Mapped[float | None] = mapped_column(Float)
    altitude: Mapped[float | None] = mapped_column(Float)
    modified: Mapped[datetime.datetime] = mapped_column(default=utc_now)


# The scheduler refreshes its row this often; the API calls it dead after
# SCHEDULER_DEAD_AFTER_SECONDS without.
SCHEDULER_HEARTBEAT_SECONDS = 2.0
SCHEDULER_DEAD_AFTER_SECONDS = 5 * SCHEDULER_HEARTBEAT_SECONDS


class SchedulerState(Base):
    """One row the scheduler keeps current, so the API can tell idle, running, dead."""

    __tablename__ = "scheduler_state"

    id: Mapped[int] = mapped_column(primary_key=True)
    pid: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(20))
    started: Mapped[datetime.datetime]
    heartbeat: Mapped[datetime.datetime]
    # Tasks failed in a row by a fault of the sensor (not a deleted entry or a stop),
    # the last one's detail, and the signal analyzer's problem; a success clears them.
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_failure: Mapped[str | None] = mapped_column(Text)
    sigan_error: Mapped[str | None] = mapped_column(Text)
    # What the last consistency check of the database and the data directory found
    # (``storage/check.py``), in brief; None when it found nothing.
    check_summary: Mapped[str | None] = mapped_column(Text)


class MetricCounter(Base):
    """One monotonic counter of ``/metrics`` (``storage/metrics.py``): kept apart from
    the results it counts, so deleting entries or data never makes it go down."""

    __tablename__ = "metric_counters"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    # The label values as compact JSON with sorted keys; "{}" for none.
    labels: Mapped[str] = mapped_column(String(500), primary_key=True)
    value: Mapped[float] = mapped_column(Float, default=0.0)
