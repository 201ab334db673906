"""Benchmark: the database check (``storage/check.py``) of a sensor with many
acquisitions, as the scheduler runs it at start-up and while idle (``check.record``:
SQLite's quick check) and as ``gr-scos db check`` runs it (``inspect(thorough=True)``:
SQLite's full integrity check).

The sensor state is ``--acquisitions`` (default 10,000) tasks of one recording each,
in 100 schedule entries, with the metadata of a real recording of the simulator;
their data files are sparse (the check reads no data), and the page cache is warm
(each measurement is the best of ``--repeat``). On SQLite and, when the PostgreSQL
binaries are installed, on a throwaway PostgreSQL server (``tests.pg_server``).
Run with ``python tests/bench/bench_db_check.py``.
"""

import argparse
import datetime
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import insert

from grscos.acquire import acquire
from grscos.config import Config
from grscos.storage import check, users
from grscos.storage.database import Database
from grscos.storage.models import Acquisition, ScheduleEntry, SchedulerState, TaskResult, utc_now

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # for tests.pg_server, when run as a script

ENTRIES = 100


def real_metadata(work: Path) -> tuple[dict, int]:
    """The metadata of one acquire_iq recording of the simulator, and its data size."""
    result = acquire(Config.load(None), "acquire_iq", {}, "sim", work / "acquire_iq")
    meta = Path(result.recordings[0])
    return json.loads(meta.read_text()), meta.with_suffix(".sigmf-data").stat().st_size


def fill(database: Database, acquisitions: int, metadata: dict, data_size: int) -> None:
    """``acquisitions`` tasks of one recording each, their files on disk (sparse data)."""
    database.upgrade()
    with database.session() as db:
        owner, _ = users.create_user(db, "bench")
        db.flush()
        owner_id = owner.id
        now = utc_now()
        db.add(SchedulerState(id=1, pid=0, state="idle", started=now, heartbeat=now))
    per_entry = -(-acquisitions // ENTRIES)
    entries, results, recordings = [], [], []
    for index in range(acquisitions):
        schedule_id, task_id = f"bench-{index % ENTRIES:03d}", index // ENTRIES + 1
        made = now - datetime.timedelta(seconds=acquisitions - index)
        folder = database.data_dir / schedule_id / str(task_id)
        folder.mkdir(parents=True)
        folder.joinpath("acquire_iq.sigmf-meta").write_text(json.dumps(metadata))
        with open(folder / "acquire_iq.sigmf-data", "wb") as data:
            data.truncate(data_size)
        results.append(
            {
                "id": index + 1,
                "schedule_entry_id": schedule_id,
                "task_id": task_id,
                "scheduled": made,
                "started": made,
                "finished": made,
                "status": "success",
                "detail": "",
            }
        )
        recordings.append(
            {
                "task_result_id": index + 1,
                "recording_id": 0,
                "metadata": metadata,
                "data_path": f"{schedule_id}/{task_id}/acquire_iq.sigmf-data",
                "data_size": data_size,
                "created": made,
            }
        )
    for index in range(ENTRIES):
        entries.append(
            {
                "id": f"bench-{index:03d}",
                "name": f"bench {index}",
                "action": "acquire_iq",
                "start": now,
                "next_task_id": per_entry + 1,
                "created": now,
                "modified": now,
                "owner_id": owner_id,
            }
        )
    with database.engine.begin() as connection:
        connection.execute(insert(ScheduleEntry.__table__), entries)
        connection.execute(insert(TaskResult.__table__), results)
        connection.execute(insert(Acquisition.__table__), recordings)


def best_of(repeat: int, run: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        run()
        times.append(time.perf_counter() - began)
    return min(times)


def bench(backend: str, url: str, base: Path, arguments, metadata: dict, size: int) -> None:
    database = Database(url, base / f"data-{backend}")
    try:
        began = time.perf_counter()
        fill(database, arguments.acquisitions, metadata, size)
        print(
            f"{backend}: {arguments.acquisitions} acquisitions stored in "
            f"{time.perf_counter() - began:.1f} s"
        )
        findings = check.inspect(database).findings()
        assert not findings, findings[:3]
        for name, run in (
            ("check.record(database)", lambda: check.record(database)),
            ("check.inspect(database)", lambda: check.inspect(database)),
            (
                "check.inspect(database, thorough=True)",
                lambda: check.inspect(database, thorough=True),
            ),
        ):
            print(f"  {name:<40} {best_of(arguments.repeat, run) * 1000:8.0f} ms")
    finally:
        database.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--acquisitions", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-db-check-") as work:
        base = Path(work)
        metadata, size = real_metadata(base)
        sqlite = base / "scos.sqlite3"
        bench("sqlite", f"sqlite:///{sqlite}", base, arguments, metadata, size)
        print(f"  (database file {sqlite.stat().st_size / 2**20:.0f} MiB)")
        from tests.pg_server import PostgresServer, find_bin_dir

        try:
            find_bin_dir()
        except RuntimeError as error:
            print(f"postgresql: skipped ({error})")
            return 0
        with PostgresServer(base / "pg") as postgres:
            bench("postgresql", postgres.url(), base, arguments, metadata, size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
