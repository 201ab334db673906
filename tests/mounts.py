"""Filesystems of the tests' own: a small tmpfs that a test can fill or make read-only,
as a data directory on its own disk would be. The tests run as root (PostgreSQL and
the services' tests need it too); mounting fails loudly otherwise."""

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def tmpfs(directory: Path, size: str = "64m") -> Iterator[Path]:
    """``directory`` (created if needed) as a tmpfs of ``size``, unmounted afterwards."""
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)], check=True
    )
    try:
        yield directory
    finally:
        # Lazily: a process of the test that still has a file open there must not
        # leave the mount behind.
        subprocess.run(["umount", "--lazy", str(directory)], check=True)


def remount(directory: Path, mode: str) -> None:
    """Make the tmpfs at ``directory`` ``ro`` or ``rw``."""
    subprocess.run(["mount", "-o", f"remount,{mode}", str(directory)], check=True)
