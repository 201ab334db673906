"""Waiting for a condition in tests, instead of sleeping a fixed time."""

import time
from collections.abc import Callable

POLL_SECONDS = 0.02


def wait_for(
    condition: Callable[[], object],
    timeout: float = 15.0,
    what: str | Callable[[], str] | None = None,
) -> object:
    """``condition()``'s first truthy value, polled every 20 ms; fails after ``timeout``
    seconds saying ``what`` (or what it returns: the state seen)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            seen = what() if callable(what) else what or condition
            raise AssertionError(f"not within {timeout:g} s: {seen}")
        time.sleep(POLL_SECONDS)
