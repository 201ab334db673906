"""SigMF archives streamed from the data files, with no temporary copy.

A download is a tar with one member per recording, ``<name>.sigmf``; each member is
itself a SigMF archive (``<name>/<name>.sigmf-meta`` and ``<name>/<name>.sigmf-data``)
that ``sigmf.fromarchive`` reads. The metadata comes from the database, the data
straight from its file in chunks, so memory stays flat and the first byte leaves at
once whatever the size. Every size is known before the first byte, so the response
carries a Content-Length and a client can show progress.
"""

import json
import os
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

BLOCK = tarfile.BLOCKSIZE
CHUNK = 1 << 20
_END = bytes(2 * BLOCK)


class ArchiveError(RuntimeError):
    """A data file that is missing or changed size; the archive cannot be built."""


@dataclass(frozen=True)
class Recording:
    """One recording to archive: its member name (no suffix), metadata and data file."""

    name: str
    metadata: dict
    data_path: Path
    data_size: int
    mtime: float

    @property
    def metadata_bytes(self) -> bytes:
        return json.dumps(self.metadata, indent=2, sort_keys=True).encode()


def _header(name: str, size: int, mtime: float, directory: bool = False) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = 0 if directory else size
    info.mtime = int(mtime)
    info.mode = 0o755 if directory else 0o644
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _padding(size: int) -> bytes:
    return bytes(-size % BLOCK)


class _Member:
    """The inner SigMF archive of one recording: its layout and its bytes."""

    def __init__(self, recording: Recording):
        self.recording = recording
        name = recording.name
        self.meta = recording.metadata_bytes
        self.head = (
            _header(f"{name}/", 0, recording.mtime, directory=True)
            + _header(f"{name}/{name}.sigmf-meta", len(self.meta), recording.mtime)
            + self.meta
            + _padding(len(self.meta))
            + _header(f"{name}/{name}.sigmf-data", recording.data_size, recording.mtime)
        )
        self.tail = _padding(recording.data_size) + _END
        self.size = len(self.head) + recording.data_size + len(self.tail)

    def chunks(self) -> Iterator[bytes]:
        yield self.head
        recording = self.recording
        remaining = recording.data_size
        try:
            descriptor = os.open(recording.data_path, os.O_RDONLY)
        except OSError as error:
            raise ArchiveError(f"cannot read {recording.data_path}: {error.strerror}") from None
        try:
            while remaining:
                chunk = os.read(descriptor, min(CHUNK, remaining))
                if not chunk:
                    raise ArchiveError(f"{recording.data_path} is shorter than recorded")
                remaining -= len(chunk)
                yield chunk
        finally:
            os.close(descriptor)
        yield self.tail


class Archive:
    """The tar of ``recordings``: ``size`` in bytes, and ``chunks()`` to send."""

    def __init__(self, recordings: Iterable[Recording]):
        self.members: list[tuple[bytes, _Member]] = []
        for recording in recordings:
            actual = _size(recording.data_path)
            if actual != recording.data_size:
                raise ArchiveError(
                    f"data file of recording {recording.name} has {actual} bytes, "
                    f"{recording.data_size} recorded"
                    if actual is not None
                    else f"data file of recording {recording.name} is missing"
                )
            member = _Member(recording)
            header = _header(f"{recording.name}.sigmf", member.size, recording.mtime)
            self.members.append((header, member))
        self.size = sum(
            len(header) + member.size + len(_padding(member.size))
            for header, member in self.members
        )
        self.size += len(_END)

    def chunks(self) -> Iterator[bytes]:
        for header, member in self.members:
            yield header
            yield from member.chunks()
            yield _padding(member.size)
        yield _END


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None
