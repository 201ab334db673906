"""Storage without HTTP: SQLite's WAL mode and busy timeout across processes,
concurrent migrations on a fresh SQLite file, SigMF archive streaming, and the task
times of ``scheduler.series``.

The tests that run on PostgreSQL too (models against migrations, data files removed
with their acquisitions) are in ``tests/api/test_storage_db.py``, which has the
PostgreSQL fixtures.
"""

import datetime
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import sigmf
from sqlalchemy import select, text

from grscos.scheduler import series
from grscos.storage import archive as archive_module
from grscos.storage.archive import CHUNK, Archive, ArchiveError, Recording
from grscos.storage.database import SQLITE_BUSY_TIMEOUT_MS, Database
from grscos.storage.models import Location, utc_now
from tests.waiting import wait_for

REPO = Path(__file__).resolve().parents[1]
UTC = datetime.UTC
MiB = 1 << 20


@pytest.fixture
def database(tmp_path) -> Database:
    database = Database(f"sqlite:///{tmp_path / 'scos.sqlite3'}", tmp_path / "data")
    database.upgrade()
    with database.session() as db:
        db.add(Location(id=1, description="before"))
    yield database
    database.dispose()


def run_python(code: str, *args: str, **popen) -> subprocess.Popen:
    """``code`` in a new interpreter, with the repository's packages importable."""
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


# -- SQLite: WAL and the busy timeout -----------------------------------------------------


def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(database):
    with database.session() as db:
        assert db.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert db.execute(text("PRAGMA busy_timeout")).scalar() == SQLITE_BUSY_TIMEOUT_MS
        assert SQLITE_BUSY_TIMEOUT_MS >= 5000
        assert db.execute(text("PRAGMA foreign_keys")).scalar() == 1
    # WAL is a property of the file: a plain connection sees it too
    import sqlite3

    connection = sqlite3.connect(database.engine.url.database)
    try:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        connection.close()


# The second process: ``insert`` adds a row; ``update`` reads a row, then changes
# it, in one transaction (what the API and the scheduler do); ``read`` only reads.
OTHER_PROCESS = """
import sys
from sqlalchemy import select
from grscos.storage.database import Database
from grscos.storage.models import Location
url, data, mode = sys.argv[1:]
database = Database(url, data)
with database.engine.connect():
    pass
print("ready", flush=True)
sys.stdin.readline()  # the first process now holds its write transaction
print("going", flush=True)
if mode == "read":
    with database.sessions() as db:
        print("read", db.scalar(select(Location.description).where(Location.id == 1)))
else:
    with database.session() as db:
        if mode == "insert":
            db.add(Location(description="other process"))
        else:
            row = db.get(Location, 1)
            row.description = row.description + ", other process"
print("done", flush=True)
"""


def go(child: subprocess.Popen) -> None:
    """Let the second process go on, now that the first holds its transaction."""
    child.stdin.write("go\n")
    child.stdin.flush()
    assert child.stdout.readline().strip() == "going", child.stderr.read()


def asleep_or_gone(child: subprocess.Popen) -> bool:
    """Whether ``child`` has ended or is asleep (state S in /proc/PID/stat)."""
    if child.poll() is not None:
        return True
    try:
        stat = Path(f"/proc/{child.pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rpartition(")")[2].split()[0] == "S"


@pytest.mark.parametrize("mode", ["insert", "update"])
def test_a_writer_waits_for_another_process_instead_of_failing(database, mode):
    """The first process holds a write transaction until the second process's write is
    waiting for it; that write then succeeds (no "database is locked")."""
    child = run_python(
        OTHER_PROCESS, str(database.engine.url), str(database.data_dir), mode, stdin=subprocess.PIPE
    )
    try:
        assert child.stdout.readline().strip() == "ready", child.stderr.read()
        with database.session() as db:
            db.get(Location, 1).description = "first process"
            db.flush()  # holds SQLite's write lock until the commit
            go(child)
            # All it has left to do is its write: asleep, it is in SQLite's busy
            # handler, waiting for our lock (without a busy timeout it fails at once).
            wait_for(lambda: asleep_or_gone(child), what="the second process never waited")
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0, err
    assert "database is locked" not in err
    assert out.splitlines()[-1] == "done", out
    with database.session() as db:
        descriptions = db.scalars(select(Location.description).order_by(Location.id)).all()
    if mode == "insert":
        assert descriptions == ["first process", "other process"]
    else:
        assert descriptions == ["first process, other process"]


def test_a_reader_is_not_blocked_by_a_writer(database):
    """The second process reads, and ends, while the first still holds its write."""
    child = run_python(
        OTHER_PROCESS,
        str(database.engine.url),
        str(database.data_dir),
        "read",
        stdin=subprocess.PIPE,
    )
    try:
        assert child.stdout.readline().strip() == "ready", child.stderr.read()
        with database.sessions() as db:
            db.get(Location, 1).description = "uncommitted"
            db.flush()
            go(child)
            out, err = child.communicate(timeout=60)
            db.rollback()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0, err
    # the last committed state, not the pending one
    assert out.splitlines() == ["read before", "done"]


# -- SigMF archives ------------------------------------------------------------------------


def write_recording(folder: Path, name: str, samples: np.ndarray, created: float) -> Recording:
    """A SigMF recording (cf32_le) of ``samples`` on disk, as a Recording."""
    folder.mkdir(parents=True, exist_ok=True)
    data = samples.astype(np.complex64).tobytes()
    data_path = folder / f"{name}.sigmf-data"
    data_path.write_bytes(data)
    metadata = {
        "global": {
            "core:datatype": "cf32_le",
            "core:version": "1.2.0",
            "core:sample_rate": 1e6,
            "core:sha512": hashlib.sha512(data).hexdigest(),
            "core:description": name,
        },
        "captures": [{"core:sample_start": 0, "core:frequency": 7e8}],
        "annotations": [],
    }
    (folder / f"{name}.sigmf-meta").write_text(json.dumps(metadata))
    return Recording(
        name=name, metadata=metadata, data_path=data_path, data_size=len(data), mtime=created
    )


def produce(archive: Archive) -> bytes:
    return b"".join(archive.chunks())


def random_samples(count: int, seed: int = 0) -> np.ndarray:
    generator = np.random.default_rng(seed)
    return (generator.normal(size=count) + 1j * generator.normal(size=count)).astype(np.complex64)


def test_archive_is_a_tar_of_sigmf_archives(tmp_path):
    created = datetime.datetime(2026, 5, 1, 12, tzinfo=UTC).timestamp()
    long_name = "e" * 200 + "_12_0"  # schedule ids may have 200 characters: PAX headers
    names = ["entry_1_0", "entry_1_1", long_name]
    samples = [random_samples(count, seed) for seed, count in enumerate((1000, 33, 4097))]
    recordings = [
        write_recording(tmp_path / "data", name, values, created)
        for name, values in zip(names, samples, strict=True)
    ]
    archive = Archive(recordings)
    body = produce(archive)
    assert len(body) == archive.size
    assert len(body) % tarfile.RECORDSIZE == 0 or len(body) % tarfile.BLOCKSIZE == 0

    with tarfile.open(fileobj=io.BytesIO(body), mode="r:") as tar:
        members = tar.getmembers()
        assert [member.name for member in members] == [f"{name}.sigmf" for name in names]
        inners = [tar.extractfile(member).read() for member in members]
    for name, values, recording, inner in zip(names, samples, recordings, inners, strict=True):
        with tarfile.open(fileobj=io.BytesIO(inner), mode="r:") as tar:
            layout = [(member.name, member.type) for member in tar.getmembers()]
            assert layout == [
                (name, tarfile.DIRTYPE),
                (f"{name}/{name}.sigmf-meta", tarfile.REGTYPE),
                (f"{name}/{name}.sigmf-data", tarfile.REGTYPE),
            ]
            assert all(member.mtime == int(created) for member in tar.getmembers())
            meta = json.load(tar.extractfile(f"{name}/{name}.sigmf-meta"))
            data = tar.extractfile(f"{name}/{name}.sigmf-data").read()
        assert meta == recording.metadata
        assert data == recording.data_path.read_bytes()
        path = tmp_path / f"{name[:50]}.sigmf"
        path.write_bytes(inner)
        archived = sigmf.fromarchive(str(path))  # checks core:sha512
        assert archived.get_global_field("core:sha512") == hashlib.sha512(data).hexdigest()
        assert np.array_equal(archived.read_samples(), values)


@pytest.mark.parametrize(
    "size", [0, 1, 511, 512, 513, tarfile.BLOCKSIZE * 20 - 1, CHUNK - 1, CHUNK, CHUNK + 1]
)
def test_archive_size_is_the_bytes_produced(tmp_path, size):
    data_path = tmp_path / "r.sigmf-data"
    data_path.write_bytes(os.urandom(size))
    recording = Recording("r", {"global": {}}, data_path, size, 0.0)
    archive = Archive([recording, recording])
    body = produce(archive)
    assert len(body) == archive.size
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:") as tar:
        (first, second) = [tar.extractfile(member).read() for member in tar.getmembers()]
    assert first == second
    with tarfile.open(fileobj=io.BytesIO(first), mode="r:") as tar:
        assert tar.extractfile("r/r.sigmf-data").read() == data_path.read_bytes()


def test_empty_archive_is_an_empty_tar():
    archive = Archive([])
    body = produce(archive)
    assert len(body) == archive.size
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:") as tar:
        assert tar.getmembers() == []


class _CountingOs:
    """``os`` for the archive module, counting the bytes it reads."""

    def __init__(self):
        self.bytes_read = 0

    def __getattr__(self, name):
        return getattr(os, name)

    def read(self, descriptor, count):
        chunk = os.read(descriptor, count)
        self.bytes_read += len(chunk)
        return chunk


class _ChunkReader(io.RawIOBase):
    """A file object over an iterator of chunks, for tarfile's stream mode."""

    def __init__(self, chunks):
        self.chunks = iter(chunks)
        self.pending = b""

    def readable(self):
        return True

    def readinto(self, buffer):
        while not self.pending:
            self.pending = next(self.chunks, b"")
            if not self.pending:
                return 0
        count = min(len(buffer), len(self.pending))
        buffer[:count] = self.pending[:count]
        self.pending = self.pending[count:]
        return count


BIG = 300 * MiB


@pytest.fixture
def big_recording(tmp_path) -> Recording:
    """A 300 MB data file (sparse: it costs no disk)."""
    path = tmp_path / "big.sigmf-data"
    with path.open("wb") as file:
        file.truncate(BIG)
        file.seek(BIG - 8)
        file.write(b"the end!")
    return Recording("big", {"global": {"core:datatype": "cf32_le"}}, path, BIG, 0.0)


def test_archive_streams_a_large_file_with_flat_memory(big_recording, monkeypatch):
    counting = _CountingOs()
    monkeypatch.setattr(archive_module, "os", counting)
    archive = Archive([big_recording])
    chunks = archive.chunks()
    first = next(chunks)
    assert counting.bytes_read == 0  # the first bytes leave before any data is read
    assert len(first) < 4096  # a tar header

    tracemalloc.start()
    try:
        produced, largest = len(first), len(first)
        for chunk in chunks:
            produced += len(chunk)
            largest = max(largest, len(chunk))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert produced == archive.size
    assert archive.size > BIG
    assert counting.bytes_read == BIG
    assert largest <= CHUNK + 64 * 1024
    assert peak < 10 * MiB


def test_large_archive_parses(big_recording):
    """The stream of a 300 MB recording is a tar whose one member is a SigMF archive
    holding the whole data file (parsed as a stream: nothing is kept in memory)."""
    archive = Archive([big_recording])
    with tarfile.open(fileobj=_ChunkReader(archive.chunks()), mode="r|") as tar:
        member = tar.next()
        assert member.name == "big.sigmf"
        assert member.size > BIG
        with tarfile.open(fileobj=tar.extractfile(member), mode="r|") as sigmf_tar:
            found = {}
            for inner in sigmf_tar:
                if not inner.isfile():
                    continue
                content = sigmf_tar.extractfile(inner)
                tail, total = b"", 0
                while block := content.read(MiB):
                    total += len(block)
                    tail = (tail + block)[-8:]
                found[inner.name] = (inner.size, total, tail)
        assert tar.next() is None
    meta = big_recording.metadata_bytes
    assert found == {
        "big/big.sigmf-meta": (len(meta), len(meta), meta[-8:]),
        "big/big.sigmf-data": (BIG, BIG, b"the end!"),
    }


def test_data_file_that_shrinks_while_streaming_raises(big_recording):
    archive = Archive([big_recording])
    chunks = archive.chunks()
    for _ in range(4):  # headers and the first data chunks
        next(chunks)
    with big_recording.data_path.open("r+b") as file:
        file.truncate(MiB)
    with pytest.raises(ArchiveError, match="shorter than recorded"):
        for _ in chunks:
            pass


def test_data_file_removed_before_streaming_raises(tmp_path):
    recording = write_recording(tmp_path, "gone", random_samples(100), 0.0)
    archive = Archive([recording])
    recording.data_path.unlink()
    with pytest.raises(ArchiveError, match="cannot read"):
        produce(archive)


def test_missing_or_resized_data_file_is_refused_up_front(tmp_path):
    recording = write_recording(tmp_path, "rec", random_samples(100), 0.0)
    with recording.data_path.open("ab") as file:
        file.write(b"x")
    with pytest.raises(ArchiveError, match=f"{recording.data_size + 1} bytes"):
        Archive([recording])
    recording.data_path.unlink()
    with pytest.raises(ArchiveError, match="missing"):
        Archive([recording])


# -- scheduler.series ----------------------------------------------------------------------

T0 = datetime.datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("interval", "stop", "not_before", "expected"),
    [
        # one-shot: its start, if not yet passed
        (None, None, -10, 0),
        (None, None, 0, 0),
        (None, None, 0.000001, None),
        (None, None, 3600, None),
        # interval: the first multiple of it at or after not_before
        (60, None, -3600, 0),
        (60, None, 0, 0),
        (60, None, 0.000001, 60),
        (60, None, 59.999999, 60),
        (60, None, 60, 60),
        (60, None, 61, 120),
        (60, None, 86400 * 365 + 1, 86400 * 365 + 60),
        # stop is exclusive: a task time equal to stop is not scheduled
        (60, 120, 61, None),
        (60, 120.000001, 61, 120),
        (60, 120, 60, 60),
        (60, 60.5, 0.5, 60),
        (60, 60, 0.5, None),
        (60, 60, 0, 0),
        (60, 30, 0, 0),
        (60, 0.5, 0, 0),
        (60, 120, 1000, None),
        # a one-shot with a stop at or before its start has no time
        (None, 0, -1, None),
        (None, 1, -1, 0),
        (1, None, 0.5, 1),
        (3600, None, 7200, 7200),
    ],
)
def test_first_time_at_or_after(interval, stop, not_before, expected):
    stop_time = None if stop is None else at(stop)
    found = series.first_time_at_or_after(T0, interval, stop_time, at(not_before))
    assert found == (None if expected is None else at(expected))


@pytest.mark.parametrize(
    ("interval", "stop", "last", "expected"),
    [
        # nothing consumed yet: the start, even when it has passed (due now)
        (None, None, None, 0),
        (60, None, None, 0),
        (60, 120, None, 0),
        # after the last task time consumed
        (None, None, 0, None),
        (60, None, 0, 60),
        (60, None, 60, 120),
        (60, None, 150, 180),  # collapsed times: the next one after the last consumed
        (60, None, 59.999999, 60),
        (1, None, 1, 2),
        # stop exclusive
        (60, 120, 60, None),
        (60, 121, 60, 120),
        (60, 120, 0, 60),
        # no time left
        (60, 120, 119, None),
        (60, 120, 500, None),
    ],
)
def test_next_task_time(interval, stop, last, expected):
    stop_time = None if stop is None else at(stop)
    last_time = None if last is None else at(last)
    found = series.next_task_time(T0, interval, stop_time, last_time)
    assert found == (None if expected is None else at(expected))


def test_start_in_the_future():
    start = utc_now() + datetime.timedelta(days=3)
    assert series.next_task_time(start, None, None, None) == start
    assert series.next_task_time(start, 600, None, None) == start
    assert series.first_time_at_or_after(start, 600, None, utc_now()) == start
    assert series.first_time_at_or_after(start, None, None, utc_now()) == start
    stop = start + datetime.timedelta(seconds=600)
    assert series.next_task_time(start, 600, stop, None) == start
    assert series.next_task_time(start, 600, stop, start) is None


@pytest.mark.parametrize("interval", [1, 7, 60, 86400])
def test_next_task_time_is_strictly_after_the_last_even_far_away(interval):
    """Far from the start (float arithmetic), the next time stays on the grid and
    strictly after the last one, never the same task twice."""
    start = datetime.datetime(1970, 1, 1, tzinfo=UTC)
    step = datetime.timedelta(seconds=interval)
    for periods in (10**9 // interval, 7 * 10**9 // interval, 2**32 // interval):
        last = start + periods * step
        assert series.next_task_time(start, interval, None, last) == last + step
        inside = last + datetime.timedelta(microseconds=1)
        assert series.first_time_at_or_after(start, interval, None, inside) == last + step
        assert series.first_time_at_or_after(start, interval, None, last) == last
