"""The processes of a sensor under test, found through /proc: by command line, parent
and session, as a user would find them with ps."""

import os
import signal
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Stat:
    state: str  # R, S, D, T, Z (zombie: gone, its parent has not reaped it) ...
    ppid: int
    session: int


def stat(pid: int) -> Stat | None:
    """A process's state, parent and session; None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # After the command name in parentheses (which may hold anything): state, ppid,
    # process group, session.
    fields = text[text.rindex(")") + 2 :].split()
    return Stat(fields[0], int(fields[1]), int(fields[3]))


def alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting for its parent)."""
    found = stat(pid)
    return found is not None and found.state not in ("Z", "X")


def _living() -> list[tuple[int, bytes]]:
    """(pid, command line) of every live process."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if alive(int(entry.name)):
            found.append((int(entry.name), cmdline))
    return found


def children(pid: int, marker: bytes = b"") -> list[int]:
    """The live children of ``pid`` with ``marker`` in their command line."""
    return sorted(
        child
        for child, cmdline in _living()
        if marker in cmdline and getattr(stat(child), "ppid", None) == pid
    )


def session(leader: int) -> list[int]:
    """The live processes of the session ``leader`` started (start_new_session)."""
    return sorted(pid for pid, _ in _living() if getattr(stat(pid), "session", None) == leader)


def runner_pids(home: Path) -> list[int]:
    """The live runner processes of the sensor in ``home`` (their socket is in it)."""
    marker = f"ipc://{home / 'run'}/".encode()
    return sorted(
        pid
        for pid, cmdline in _living()
        if b"grscos.scheduler.runner" in cmdline and marker in cmdline
    )


def kill(pids: list[int]) -> None:
    """SIGKILL each of ``pids`` that is still there."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
