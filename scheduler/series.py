"""The task times of a schedule entry (the rules of NTIA's scos-sensor README).

An entry's tasks are due at ``start``, ``start + interval``, ``start + 2 interval``,
... while earlier than ``stop``. Without ``interval`` the entry is one-shot: one task
at ``start``. Without ``stop`` an interval entry repeats until it is deactivated.
Times that pass while the sensor is busy or down are collapsed into one task.
"""

import datetime
import math

_TICK = datetime.timedelta(microseconds=1)


def first_time_at_or_after(
    start: datetime.datetime,
    interval: int | None,
    stop: datetime.datetime | None,
    not_before: datetime.datetime,
) -> datetime.datetime | None:
    """The first task time not earlier than ``not_before``; None when none is left."""
    if interval is None:
        candidate = start if start >= not_before else None
    else:
        step = datetime.timedelta(seconds=interval)
        periods = max(0, math.ceil((not_before - start) / step))
        candidate = start + periods * step
    if candidate is None or (stop is not None and candidate >= stop):
        return None
    return candidate


def next_task_time(
    start: datetime.datetime,
    interval: int | None,
    stop: datetime.datetime | None,
    last_task_time: datetime.datetime | None,
) -> datetime.datetime | None:
    """The earliest task time after the last one consumed (``last_task_time``), or
    ``start`` when none has been; it may be in the past, which means due now."""
    not_before = start if last_task_time is None else last_task_time + _TICK
    return first_time_at_or_after(start, interval, stop, not_before)
