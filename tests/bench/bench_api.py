"""Benchmark: the sensor API under gunicorn on loopback.

* ``GET /api/v1/schedule?limit=100`` with 10,000 schedule entries in the database,
  ``GET /api/v1/status`` and ``GET /api/v1/metrics``, each under 32 concurrent clients (``wrk -c 32 -t 2
  -d 10s --latency``, after a short warm-up): requests/s and p50/p99 latency, on
  SQLite and, when the PostgreSQL binaries are installed, on a throwaway
  PostgreSQL server (``tests.pg_server``);
* the SigMF archive of a task whose recording is 1 GiB, then 4 GiB (random bytes,
  in the page cache: this measures the server, not the disk), downloaded by a
  streaming client reading 1 MiB at a time: throughput, time to first byte, and
  the serving gunicorn worker's RSS before the download and its peak (VmHWM,
  reset just before) during it. A size that does not fit on the disk is skipped.

gunicorn runs as in production: ``grscos.gunicorn_conf`` (only the bind is
overridden). Needs ``wrk`` (Debian package ``wrk``). Run with
``make bench``.
"""

import argparse
import datetime
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from sqlalchemy import insert

from grscos.scheduler import series
from grscos.storage import users
from grscos.storage.database import Database
from grscos.storage.models import ScheduleEntry, TaskResult, utc_now
from grscos.storage.results import add_recordings

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # for tests.pg_server, when run as a script

GUNICORN = REPO / ".venv" / "bin" / "gunicorn"
GUNICORN_CONF = "python:grscos.gunicorn_conf"
APP = "grscos.webapi.wsgi:app"
ENDPOINTS = ("/api/v1/schedule?limit=100", "/api/v1/status", "/api/v1/metrics")
MiB = 1 << 20
GiB = 1 << 30
DISK_MARGIN = 512 * MiB
READY_TIMEOUT_S = 60
STOP_TIMEOUT_S = 30
WARMUP = "3s"


# -- database ---------------------------------------------------------------------


def prepare_database(url: str, data_dir: Path, entries: int) -> str:
    """Migrate the database, add an admin (whose token is returned) and alice, and
    ``entries`` schedule entries of alice's in one bulk insert."""
    database = Database(url, data_dir)
    try:
        database.upgrade()
        with database.session() as db:
            _, token = users.create_user(db, "admin", is_admin=True)
            alice, _ = users.create_user(db, "alice")
            db.flush()
            owner_id = alice.id
        began = time.perf_counter()
        with database.engine.begin() as connection:
            connection.execute(insert(ScheduleEntry.__table__), schedule_rows(entries, owner_id))
        print(f"  inserted {entries} schedule entries in {time.perf_counter() - began:.2f} s")
    finally:
        database.dispose()
    return token


def schedule_rows(count: int, owner_id: int) -> list[dict]:
    """Valid entries as the API would store them: acquire_iq, every other one
    repeating hourly, starting a minute apart, created a millisecond apart."""
    now = utc_now()
    rows = []
    for index in range(count):
        start = now + datetime.timedelta(minutes=index)
        interval = 3600 if index % 2 else None
        created = now + datetime.timedelta(milliseconds=index)
        rows.append(
            {
                "id": f"bench-{index:05d}",
                "name": f"bench entry {index}",
                "action": "acquire_iq",
                "start": start,
                "stop": None,
                "interval": interval,
                "priority": 10,
                "is_active": True,
                "is_private": False,
                "callback_url": None,
                "next_task_time": series.next_task_time(start, interval, None, None),
                "next_task_id": 1,
                "last_task_time": None,
                "created": created,
                "modified": created,
                "owner_id": owner_id,
            }
        )
    return rows


# -- gunicorn ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def gunicorn_command(port: int) -> list[str]:
    """gunicorn with the sensor's own configuration; only the bind differs."""
    return [str(GUNICORN), "-c", GUNICORN_CONF, "-b", f"127.0.0.1:{port}", APP]


@dataclass
class Server:
    process: subprocess.Popen
    port: int
    token: str
    log: Path

    def workers(self) -> list[int]:
        """The pids of the master's children (its workers)."""
        children = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
            if int(stat.rsplit(")", 1)[1].split()[1]) == self.process.pid:
                children.append(int(entry.name))
        return sorted(children)

    def get(self, path: str) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.request("GET", path, headers=auth_header(self.token))
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()


def auth_header(token: str) -> dict[str, str]:
    return {"Authorization": f"Token {token}"}


@contextmanager
def gunicorn(home: Path, database_url: str, token: str) -> Iterator[Server]:
    """gunicorn serving the sensor of ``home`` until the block ends."""
    port = free_port()
    env = {name: value for name, value in os.environ.items() if not name.startswith("SCOS_")}
    env |= {
        "SCOS_HOME": str(home),
        "SCOS_DATABASE_URL": database_url,
        "SCOS_DATA_DIR": str(home / "data"),
    }
    log = home / "gunicorn.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            gunicorn_command(port),
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    server = Server(process, port, token, log)
    try:
        wait_ready(server)
        yield server
    finally:
        stop(process)


def wait_ready(server: Server) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"gunicorn exited ({server.process.returncode}):\n{tail(server.log)}"
            )
        try:
            if server.get("/api/v1/status")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"gunicorn did not answer in {READY_TIMEOUT_S} s:\n{tail(server.log)}")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


# -- wrk ----------------------------------------------------------------------------


@dataclass
class LoadResult:
    backend: str
    endpoint: str
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    timeouts: int
    socket_errors: int


_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(value) * _UNITS_MS[unit]


def parse_wrk(output: str) -> dict:
    """Requests, requests/s, p50 and p99 (ms), non-2xx/3xx answers, timeouts (no
    answer within wrk's 2 s) and other socket errors from wrk's --latency report."""

    def number(pattern: str) -> str:
        match = re.search(pattern, output, re.MULTILINE)
        if match is None:
            raise ValueError(f"no {pattern!r} in wrk's output:\n{output}")
        return match.group(1)

    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    connect, read, write, timeouts = map(int, sockets.groups()) if sockets else (0, 0, 0, 0)
    return {
        "requests": int(number(r"^\s*(\d+) requests in")),
        "rps": float(number(r"^Requests/sec:\s+([\d.]+)")),
        "p50_ms": _ms(number(r"^\s+50%\s+(\S+)")),
        "p99_ms": _ms(number(r"^\s+99%\s+(\S+)")),
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "timeouts": timeouts,
        "socket_errors": connect + read + write,
    }


def wrk(server: Server, path: str, arguments: argparse.Namespace, duration: str) -> dict:
    command = [
        "wrk",
        "-c",
        str(arguments.connections),
        "-t",
        str(arguments.threads),
        "-d",
        duration,
        "--latency",
        "-H",
        f"Authorization: Token {server.token}",
        f"http://127.0.0.1:{server.port}{path}",
    ]
    return parse_wrk(subprocess.run(command, check=True, capture_output=True, text=True).stdout)


def bench_endpoints(server: Server, backend: str, arguments: argparse.Namespace) -> list[dict]:
    results = []
    for path in ENDPOINTS:
        status, body = server.get(path)
        if status != 200:
            raise RuntimeError(f"GET {path}: {status} {body[:300]!r}")
        if path.startswith("/api/v1/schedule"):
            page = json.loads(body)
            print(f"  {path}: count {page['count']}, {len(page['results'])} results/page")
        wrk(server, path, arguments, WARMUP)
        result = LoadResult(backend, path, **wrk(server, path, arguments, arguments.duration))
        print(f"  {path}: {result.rps:.0f} req/s, p50 {result.p50_ms:.1f} ms")
        results.append(asdict(result))
    return results


# -- archives -----------------------------------------------------------------------


@dataclass
class ArchiveResult:
    size_gib: int
    archive_bytes: int
    seconds: float
    mb_per_s: float
    ttfb_ms: float
    rss_before_mib: float
    peak_mib: float
    worker_pid: int


def template_metadata(directory: Path) -> dict:
    """The SigMF metadata of a real, small acquire_iq recording of the simulator."""
    from grscos.acquire import acquire
    from grscos.config import Config

    result = acquire(Config.load(None), "acquire_iq", {}, "sim", directory / "template")
    metadata = json.loads(Path(result.recordings[0]).read_text())
    Path(result.recordings[0]).with_suffix(".sigmf-data").unlink()
    return metadata


def sized_metadata(template: dict, size: int) -> dict:
    """``template`` describing ``size`` bytes of cf32_le samples (no sha512: it is
    not checked when serving and would take a long time to compute)."""
    metadata = json.loads(json.dumps(template))
    metadata["global"].pop("core:sha512", None)
    for annotation in metadata.get("annotations", []):
        annotation["core:sample_count"] = size // 8
    return metadata


def write_data(path: Path, size: int) -> None:
    """``size`` bytes: one random MiB, repeated; on disk (and in the page cache)."""
    block = os.urandom(MiB)
    with path.open("wb") as data:
        for offset in range(0, size, MiB):
            data.write(block[: min(MiB, size - offset)])
        data.flush()
        os.fsync(data.fileno())


def add_task(database: Database, data_dir: Path, meta_path: Path) -> tuple[str, int]:
    """An entry with one successful task whose recording is ``meta_path``."""
    entry_id = meta_path.parent.parent.name
    now = utc_now()
    with database.session() as db:
        owner = users.find_user(db, "admin")
        entry = ScheduleEntry(
            id=entry_id,
            name=entry_id,
            action="acquire_iq",
            start=now,
            is_active=False,
            next_task_id=2,
            last_task_time=now,
            created=now,
            modified=now,
            owner=owner,
        )
        result = TaskResult(
            task_id=1, scheduled=now, started=now, finished=now, status="success", detail=""
        )
        entry.task_results.append(result)
        db.add(entry)
        add_recordings(result, [meta_path], data_dir)
    return entry_id, 1


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of ``pid`` in kB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0])
    return values


def reset_peak(pid: int) -> bool:
    """Set the peak RSS (VmHWM) of ``pid`` back to its current RSS."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def socket_owner(pids: list[int], local_port: int, remote_port: int) -> int | None:
    """Which of ``pids`` holds the loopback TCP connection local_port <-> remote_port."""
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = (int(address.split(":")[1], 16) for address in fields[1:3])
        if (local, remote) == (local_port, remote_port):
            inode = fields[9]
    if inode is None:
        return None
    for pid in pids:
        try:
            descriptors = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for descriptor in descriptors:
            try:
                if os.readlink(descriptor) == f"socket:[{inode}]":
                    return pid
            except OSError:
                continue
    return None


def download(server: Server, path: str, size_gib: int) -> ArchiveResult:
    """Stream ``path`` 1 MiB at a time; throughput, TTFB and the serving worker's RSS."""
    workers = server.workers()
    before = {pid: proc_status(pid)["VmRSS"] for pid in workers}
    resettable = all(reset_peak(pid) for pid in workers)
    buffer = memoryview(bytearray(MiB))
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        began = time.perf_counter()
        connection.request("GET", path, headers=auth_header(server.token))
        response = connection.getresponse()
        ttfb = time.perf_counter() - began
        if response.status != 200:
            raise RuntimeError(f"GET {path}: {response.status} {response.read(300)!r}")
        expected = int(response.getheader("Content-Length"))
        worker = socket_owner(workers, server.port, connection.sock.getsockname()[1])
        received = 0
        while count := response.readinto(buffer):
            received += count
        seconds = time.perf_counter() - began
    finally:
        connection.close()
    if received != expected:
        raise RuntimeError(f"GET {path}: {received} bytes of {expected}")
    if worker is None:  # not found: the worker whose peak grew most
        worker = max(workers, key=lambda pid: proc_status(pid)["VmHWM"] - before[pid])
    if not resettable:
        print("  (cannot reset VmHWM: the peak is the worker's lifetime peak)")
    return ArchiveResult(
        size_gib=size_gib,
        archive_bytes=received,
        seconds=seconds,
        mb_per_s=received / seconds / 1e6,
        ttfb_ms=ttfb * 1e3,
        rss_before_mib=before[worker] / 1024,
        peak_mib=proc_status(worker)["VmHWM"] / 1024,
        worker_pid=worker,
    )


def bench_archives(server: Server, home: Path, sizes_gib: list[int]) -> list[dict]:
    data_dir = home / "data"
    database = Database(f"sqlite:///{home / 'scos.sqlite3'}", data_dir)
    template = template_metadata(home)
    results = []
    try:
        for size_gib in sizes_gib:
            size = size_gib * GiB
            free = shutil.disk_usage(data_dir).free
            if free < size + DISK_MARGIN:
                print(
                    f"  SKIPPED the {size_gib} GiB archive: {free / GiB:.1f} GiB free in "
                    f"{data_dir}, {(size + DISK_MARGIN) / GiB:.1f} GiB needed"
                )
                continue
            folder = data_dir / f"archive-{size_gib}gib" / "1"
            folder.mkdir(parents=True)
            meta_path = folder / f"iq-{size_gib}gib.sigmf-meta"
            data_path = meta_path.with_suffix(".sigmf-data")
            try:
                meta_path.write_text(json.dumps(sized_metadata(template, size)))
                began = time.perf_counter()
                write_data(data_path, size)
                print(f"  wrote {size_gib} GiB in {time.perf_counter() - began:.1f} s")
                entry_id, task_id = add_task(database, data_dir, meta_path)
                url = f"/api/v1/schedule/{entry_id}/tasks/{task_id}/archive"
                result = download(server, url, size_gib)
                print(
                    f"  {size_gib} GiB archive: {result.mb_per_s:.0f} MB/s, "
                    f"served by worker {result.worker_pid}"
                )
                results.append(asdict(result))
            finally:
                data_path.unlink(missing_ok=True)
    finally:
        database.dispose()
    return results


# -- runs ---------------------------------------------------------------------------


def run_backend(
    backend: str, database_url: str, home: Path, arguments: argparse.Namespace
) -> tuple[list[dict], list[dict]]:
    print(f"{backend}:")
    token = prepare_database(database_url, home / "data", arguments.entries)
    with gunicorn(home, database_url, token) as server:
        print(f"  gunicorn on port {server.port}, {len(server.workers())} workers")
        load = bench_endpoints(server, backend, arguments)
        archives = bench_archives(server, home, arguments.sizes) if backend == "sqlite" else []
    return load, archives


def run_postgres(base: Path, arguments: argparse.Namespace) -> list[dict]:
    from tests.pg_server import PostgresServer, find_bin_dir

    try:
        find_bin_dir()
    except RuntimeError as error:
        print(f"PostgreSQL: SKIPPED ({error})")
        return []
    home = base / "postgresql"
    home.mkdir()
    with PostgresServer(base / "pg") as postgres:
        return run_backend("postgresql", postgres.url(), home, arguments)[0]


def print_tables(load: list[dict], archives: list[dict], arguments: argparse.Namespace) -> None:
    print()
    print(
        f"{arguments.entries} schedule entries; wrk -c {arguments.connections} "
        f"-t {arguments.threads} -d {arguments.duration}; gunicorn -c {GUNICORN_CONF}; "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
    )
    print()
    print(
        "| backend    | endpoint                   |   req/s | p50 ms | p99 ms | requests "
        "| non-2xx | timeouts (>2 s) | socket errors |"
    )
    print(
        "|------------|----------------------------|--------:|-------:|-------:|---------:"
        "|--------:|----------------:|--------------:|"
    )
    for row in load:
        print(
            f"| {row['backend']:<10} | {row['endpoint']:<26} | {row['rps']:>7.0f} | "
            f"{row['p50_ms']:>6.1f} | {row['p99_ms']:>6.1f} | {row['requests']:>8} | "
            f"{row['non_2xx']:>7} | {row['timeouts']:>15} | {row['socket_errors']:>13} |"
        )
    if any(row["timeouts"] for row in load):
        print(
            "(wrk leaves requests unanswered after 2 s out of its percentiles: p99 is a lower bound)"
        )
    if not archives:
        return
    print()
    print(
        "| archive | seconds |  MB/s | TTFB ms | worker RSS before MiB | worker peak MiB | growth MiB |"
    )
    print(
        "|---------|--------:|------:|--------:|----------------------:|----------------:|-----------:|"
    )
    for row in archives:
        growth = row["peak_mib"] - row["rss_before_mib"]
        print(
            f"| {row['size_gib']} GiB   | {row['seconds']:>7.2f} | {row['mb_per_s']:>5.0f} | "
            f"{row['ttfb_ms']:>7.1f} | {row['rss_before_mib']:>21.0f} | "
            f"{row['peak_mib']:>15.0f} | {growth:>10.1f} |"
        )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--entries", type=int, default=10_000, help="schedule entries")
    parser.add_argument("--connections", type=int, default=32, help="wrk -c")
    parser.add_argument("--threads", type=int, default=2, help="wrk -t")
    parser.add_argument("--duration", default="10s", help="wrk -d")
    parser.add_argument("--sizes", type=int, nargs="*", default=[1, 4], help="archive sizes in GiB")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    parser.add_argument("--json", help="also write the results to this file")
    arguments = parser.parse_args()
    if shutil.which("wrk") is None:
        print(
            "bench_api needs wrk: `sudo apt-get install wrk` (or `bash deploy/bootstrap.sh`)",
            file=sys.stderr,
        )
        return 1
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-api-") as directory:
        base = Path(directory)
        home = base / "sqlite"
        home.mkdir()
        load, archives = run_backend(
            "sqlite", f"sqlite:///{home / 'scos.sqlite3'}", home, arguments
        )
        failed = False
        if not arguments.no_postgres:
            try:
                load += run_postgres(base, arguments)
            except RuntimeError as error:  # the SQLite results are still worth printing
                print(f"PostgreSQL: FAILED: {error}", file=sys.stderr)
                failed = True
    print_tables(load, archives, arguments)
    print(f"\nbench time {time.perf_counter() - began:.0f} s")
    if arguments.json:
        Path(arguments.json).write_text(json.dumps({"load": load, "archives": archives}, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
