"""The gr-scos command line as an operator uses it."""

import datetime
import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sigmf
from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from grscos import cli
from grscos.config import Config
from grscos.settings import SETTINGS_FILE_ENV, Settings
from grscos.storage import users
from grscos.storage.database import MIGRATIONS, Database
from grscos.storage.models import (
    Notification,
    ScheduleEntry,
    SchedulerState,
    TaskResult,
    format_utc,
    utc_now,
)

GR_SCOS = [str(Path(sys.executable).with_name("gr-scos"))]


def run(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([*GR_SCOS, *arguments], capture_output=True, text=True, timeout=120)


def test_selftest_passes_and_leaves_valid_recordings(tmp_path):
    result = run("selftest", "--out", str(tmp_path), "--nffts", "50")
    assert result.returncode == 0, result.stderr
    assert "selftest passed: 5 checks" in result.stdout
    metas = sorted(tmp_path.rglob("*.sigmf-meta"))
    assert [path.relative_to(tmp_path).as_posix() for path in metas] == [
        "noise/m4s.sigmf-meta",
        "noise/power_vs_time.sigmf-meta",
        "tone/m4s.sigmf-meta",
        "tone/power_vs_time.sigmf-meta",
    ]
    for meta in metas:
        sigmf.fromfile(str(meta)).validate()
        assert json.loads(meta.read_text())["global"]["core:recorder"] == "gr-scos"


def test_selftest_with_a_calibration_file(tmp_path):
    calibration = tmp_path / "cal.yaml"
    calibration.write_text(
        "points:\n  - {sample_rate: 14.0e6, frequency: 700.0e6, gain_sigan: 25.0, noise_figure_sensor: 3.0}\n"
    )
    result = run(
        "selftest",
        "--out",
        str(tmp_path / "out"),
        "--nffts",
        "50",
        "--calibration",
        str(calibration),
    )
    assert result.returncode == 0, result.stderr


def test_bad_input_gives_a_one_line_error_and_nonzero_exit(tmp_path):
    missing = run("selftest", "--out", str(tmp_path), "--calibration", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2
    assert missing.stderr.strip().count("\n") == 0
    assert "cannot read calibration file" in missing.stderr
    bad_size = run("selftest", "--out", str(tmp_path), "--fft-size", "0")
    assert bad_size.returncode == 2 and "fft_size must be a positive integer" in bad_size.stderr
    bad_window = run("selftest", "--window", "kaiser")
    assert bad_window.returncode == 2 and "invalid choice" in bad_window.stderr


# --- gr-scos status, run in this process against a database in a temporary SCOS_HOME ---


@pytest.fixture
def sensor_home(tmp_path, monkeypatch) -> Iterator[Path]:
    """SCOS_HOME for ``cli.main``, with no other setting from the test's environment
    (but a disk limit the test machine cannot reach); the settings are read afresh,
    and the root logger (which ``cli.main`` reconfigures) is restored afterwards."""
    home = tmp_path / "home"
    for name in list(os.environ):
        if name.startswith("SCOS_") and name != SETTINGS_FILE_ENV:
            monkeypatch.delenv(name)
    monkeypatch.setenv("SCOS_HOME", str(home))
    monkeypatch.setenv("SCOS_MAX_DISK_USAGE", "100")
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    cli._settings.cache_clear()
    yield home
    cli._settings.cache_clear()
    root.handlers[:] = handlers
    root.setLevel(level)


def gr_scos(capsys, *arguments: str) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of ``gr-scos ARGUMENTS``."""
    code = cli.main(list(arguments))
    out, err = capsys.readouterr()
    return code, out, err


def migrated(capsys) -> Database:
    code, _, err = gr_scos(capsys, "db", "upgrade")
    assert code == 0, err
    settings = Settings.load()
    return Database(settings.database_url, settings.data_dir)


def lines_of(out: str) -> dict[str, list[str]]:
    """``key: value`` lines by key."""
    lines: dict[str, list[str]] = {}
    for line in out.splitlines():
        key, _, value = line.partition(": ")
        lines.setdefault(key, []).append(value)
    return lines


def test_status_of_a_fresh_database_without_scheduler_is_unhealthy(sensor_home, capsys):
    migrated(capsys).dispose()
    code, out, err = gr_scos(capsys, "status")
    assert code == 1, err
    shown = lines_of(out)
    assert shown["sensor"] == [Config.load(None).sensor_id]
    assert shown["scheduler"] == ["dead"]
    assert shown["healthy"] == ["no"]
    assert shown["problem"] == ["the scheduler is not running"]
    assert shown["schedule"] == ["0 active of 0 entries; next: none"]
    assert shown["tasks"] == ["0 succeeded, 0 failed, 0 in progress; last: none"]
    assert shown["notifications"] == ["0 pending, 0 failed, 0 delivered"]
    assert re.fullmatch(r"\d+\.\d% used of \d+\.\d GiB \(MAX_DISK_USAGE 100%\)", shown["disk"][0])


def test_status_of_a_working_sensor(sensor_home, capsys):
    database = migrated(capsys)
    now = utc_now()
    started, upcoming = now - datetime.timedelta(hours=3), now + datetime.timedelta(minutes=50)
    last = now - datetime.timedelta(minutes=10)
    with database.session() as db:
        owner, _ = users.create_user(db, "operator", is_admin=True)
        db.flush()

        def entry(schedule_id: str, next_time, next_id: int, active: bool = True):
            made = ScheduleEntry(
                id=schedule_id,
                name=schedule_id,
                action="acquire_iq",
                start=started,
                interval=3600,
                next_task_time=next_time,
                next_task_id=next_id,
                is_active=active,
                owner_id=owner.id,
            )
            db.add(made)
            return made

        def task(on: ScheduleEntry, task_id: int, status: str, finished) -> TaskResult:
            result = TaskResult(
                task_id=task_id,
                scheduled=started,
                started=started,
                finished=finished,
                status=status,
            )
            on.task_results.append(result)
            return result

        hourly = entry("hourly", upcoming, 5)
        entry("daily", now + datetime.timedelta(days=1), 1)
        done = entry("done", None, 2, active=False)
        delivered = task(hourly, 1, "success", now - datetime.timedelta(hours=2))
        task(hourly, 2, "fail", now - datetime.timedelta(hours=1))
        pending = task(hourly, 3, "success", last)
        task(hourly, 4, "in-progress", None)
        task(done, 1, "success", now - datetime.timedelta(hours=3))
        for result, state in ((delivered, "delivered"), (pending, "pending")):
            result.notification = Notification(url="https://manager/cb", payload={}, state=state)
        db.add(SchedulerState(id=1, pid=4321, state="running", started=started, heartbeat=now))
    database.dispose()

    code, out, err = gr_scos(capsys, "status")
    assert code == 0, out + err
    shown = lines_of(out)
    assert shown["scheduler"] == [f"running (pid 4321, started {format_utc(started)})"]
    assert shown["healthy"] == ["yes"]
    assert "problem" not in shown
    assert shown["schedule"] == [
        f"2 active of 3 entries; next: hourly task 5 at {format_utc(upcoming)}"
    ]
    assert shown["tasks"] == [
        f"3 succeeded, 1 failed, 1 in progress; last: hourly task 3 success at {format_utc(last)}"
    ]
    assert shown["notifications"] == ["1 pending, 0 failed, 1 delivered"]

    code, out, err = gr_scos(capsys, "status", "--json")
    assert code == 0, err
    facts = json.loads(out)
    assert facts["sensor_id"] == Config.load(None).sensor_id
    assert (facts["scheduler"], facts["pid"]) == ("running", 4321)
    assert facts["scheduler_started"] == format_utc(started)
    assert (facts["healthy"], facts["problems"]) == (True, [])
    assert facts["schedule"] == {
        "entries": 3,
        "active": 2,
        "next": {"schedule_id": "hourly", "task_id": 5, "time": format_utc(upcoming)},
    }
    assert facts["tasks"] == {
        "success": 3,
        "fail": 1,
        "in_progress": 1,
        "last": {
            "schedule_id": "hourly",
            "task_id": 3,
            "status": "success",
            "finished": format_utc(last),
        },
    }
    assert facts["notifications"] == {"pending": 1, "failed": 0, "delivered": 1}
    disk = facts["disk_usage"]
    assert disk["max_percent"] == 100 and 0 < disk["used_bytes"] < disk["total_bytes"]


def test_status_shows_failures_in_a_row_and_the_signal_analyzer(sensor_home, capsys):
    database = migrated(capsys)
    now = utc_now()
    sigan = "signal analyzer uhd:serial=NOPE: no USRP found with serial NOPE"
    with database.session() as db:
        db.add(
            SchedulerState(
                id=1,
                pid=4321,
                state="idle",
                started=now,
                heartbeat=now,
                consecutive_failures=2,
                last_failure="the flowgraph failed: ValueError: boom",
                sigan_error=sigan,
            )
        )
    database.dispose()
    problems = [
        "2 task(s) in a row failed; the last: the flowgraph failed: ValueError: boom",
        sigan,
    ]
    code, out, err = gr_scos(capsys, "status")
    assert code == 1, err
    shown = lines_of(out)
    assert shown["scheduler"] == [f"idle (pid 4321, started {format_utc(now)})"]
    assert shown["healthy"] == ["no"]
    assert shown["problem"] == problems
    code, out, _ = gr_scos(capsys, "status", "--json")
    assert code == 1
    facts = json.loads(out)
    assert (facts["scheduler"], facts["healthy"], facts["problems"]) == ("idle", False, problems)


def test_status_neither_creates_nor_migrates_the_database(sensor_home, capsys):
    code, out, err = gr_scos(capsys, "status")
    assert code == 2 and out == ""
    assert err.startswith("gr-scos status: error: ") and err.count("\n") == 1, err
    assert "gr-scos db upgrade" in err
    assert not sensor_home.exists(), list(sensor_home.rglob("*"))

    # A database of an older gr-scos: one revision behind.
    alembic = AlembicConfig()
    alembic.set_main_option("script_location", str(MIGRATIONS))
    previous = ScriptDirectory.from_config(alembic).get_revision("head").down_revision
    settings = Settings.load()
    database = Database(settings.database_url, settings.data_dir)
    with database.engine.begin() as connection:
        alembic.attributes["connection"] = connection
        command.upgrade(alembic, previous)
    code, out, err = gr_scos(capsys, "status", "--json")
    assert code == 2 and out == ""
    assert f"at revision {previous}" in err and "gr-scos db upgrade" in err
    with database.engine.connect() as connection:
        assert MigrationContext.configure(connection).get_current_revision() == previous
    database.dispose()


def test_a_reader_that_has_gone_stops_the_command_quietly():
    """``gr-scos actions | head -1``: no traceback, no error line, status 141 as for
    other tools killed by SIGPIPE."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first line
    try:
        result = subprocess.run(
            [*GR_SCOS, "actions"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write_end)
    assert (result.returncode, result.stderr) == (141, "")
