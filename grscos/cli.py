"""The ``gr-scos`` command line."""

import argparse
import functools
import json
import logging
import math
import os
import signal
import sys
from pathlib import Path

from gnuradio.scos.calibration import CalibrationError
from gnuradio.scos.sigan_source import probe
from gnuradio.scos.windows import WINDOW_NAMES
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from . import __version__, logs, selftest, service
from .acquire import Catalog, RunError, acquire, recording_name
from .actions import parameters
from .config import Config
from .measurement import ChainSettings
from .scheduler.scheduler import Scheduler, SchedulerBusyError
from .settings import SETTINGS_FILE_ENV, Settings, example_file
from .storage import check as db_check
from .storage import users
from .storage.database import Database
from .storage.health import DiskUsage, count_by, health
from .storage.models import (
    Notification,
    ScheduleEntry,
    TaskResult,
    User,
    format_utc,
)
from .storage.outage import OutageRecord, describe, unreachable

logger = logging.getLogger("grscos")
SERVICES = ("run", "scheduler")  # commands that log at SCOS_LOG_LEVEL


@functools.cache
def _settings() -> Settings:
    """The settings, read once per command (after --settings is in the environment)."""
    return Settings.load()


def _selftest(arguments: argparse.Namespace) -> int:
    settings = ChainSettings(
        frequency=arguments.frequency,
        sample_rate=arguments.sample_rate,
        fft_size=arguments.fft_size,
        nffts=arguments.nffts,
        window=arguments.window,
        calibration_file=arguments.calibration or "",
    )
    if not 0 < abs(arguments.tone_bin) < arguments.fft_size // 2:
        raise ValueError(f"--tone-bin must be within +/-{arguments.fft_size // 2 - 1} and not 0")
    checks = selftest.run(
        Path(arguments.out),
        settings,
        arguments.tone_power,
        arguments.tone_bin,
        arguments.noise_figure,
    )
    for check in checks:
        print(check)
    print(f"SigMF recordings in {arguments.out}")
    failed = [check for check in checks if not check.passed]
    if failed:
        print(
            f"selftest FAILED: {len(failed)} of {len(checks)} checks out of tolerance",
            file=sys.stderr,
        )
        return 1
    print(f"selftest passed: {len(checks)} checks")
    return 0


class _Progress:
    """One self-rewriting status line on a terminal; nothing otherwise."""

    def __init__(self, action: str, stream=sys.stderr):
        self.action = action
        self.stream = stream
        self.shown = False

    def __call__(self, event: dict) -> None:
        if event["type"] != "progress" or not self.stream.isatty():
            return
        recordings = event["recordings"]
        self.stream.write(
            f"\r{self.action}: {event['seconds']:6.1f} s, {event['samples'] / 1e6:9.3f} M samples, "
            f"{recordings} recording{'s' if recordings != 1 else ''}"
        )
        self.stream.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()


def _acquire(arguments: argparse.Namespace) -> int:
    overrides = dict(parameters.parse_assignment(text) for text in arguments.set)
    settings = _settings()
    config = Config.load(arguments.config, {}) if arguments.config else settings.config()
    device = arguments.sigan or settings.sigan
    output = recording_name(arguments.out, arguments.action)
    progress = _Progress(arguments.action)
    try:
        result = acquire(config, arguments.action, overrides, device, output, on_event=progress)
    finally:
        progress.close()
    for path in result.recordings:
        print(path)
    overflows = f", {result.overflows} overflow(s)" if result.overflows else ""
    print(
        f"{arguments.action}: {len(result.recordings)} recording(s), "
        f"{result.samples} samples in {result.seconds:.1f} s{overflows}",
        file=sys.stderr,
    )
    return 0


def _format(value) -> str:
    """Numbers in engineering notation (700e6, 14e6), as owners write them in YAML."""
    if isinstance(value, list):
        return "[" + ", ".join(_format(item) for item in value) + "]"
    if isinstance(value, float) and value and math.isfinite(value):
        exponent = 3 * math.floor(math.log10(abs(value)) / 3)
        mantissa = f"{value / 10.0**exponent:.6g}"
        return f"{mantissa}e{exponent}" if exponent else mantissa
    return str(value)


def _actions(arguments: argparse.Namespace) -> int:
    config = Config.load(arguments.config, {}) if arguments.config else _settings().config()
    catalog = Catalog.load(config)
    for action in catalog.actions.values():
        flags = " [admin only]" if action.admin_only else ""
        print(f"{action.name}{flags}: {action.summary}")
        print(
            f"  flowgraph {action.flowgraph}, max run time {action.max_run_time:g} s, "
            f"classification {action.classification}"
        )
        accepted = catalog.flowgraphs[action.flowgraph].parameters
        values = action.resolve({}, catalog.limits, accepted)
        for name in sorted(values):
            rule = parameters.RULES[name]
            value = f"{_format(values[name])} {rule.unit}".strip()
            origin = "action" if name in action.parameters else "default"
            print(f"  {name:<13} {value:<24} {origin:<8} {rule.description}")
    return 0


def _run(arguments: argparse.Namespace) -> int:
    settings = _settings()
    host, _, port = settings.api_bind.rpartition(":")
    return service.run_sensor(
        settings, arguments.host or host, arguments.port or int(port), arguments.sigan
    )


def _scheduler(arguments: argparse.Namespace) -> int:
    scheduler = Scheduler(_settings(), device=arguments.sigan)
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, lambda *_: scheduler.shutdown())
    return scheduler.serve_forever()


def _db(arguments: argparse.Namespace) -> int:
    settings = _settings()
    if arguments.db_command == "check":
        return _check_database(arguments, settings)
    database = Database(settings.database_url, settings.data_dir)
    try:
        before, after = database.upgrade()
    finally:
        database.dispose()
    if before == after:
        print(f"database {database.engine.url!r} is at the latest revision {after}")
    else:
        print(f"database {database.engine.url!r} upgraded from {before or 'empty'} to {after}")
    return 0


def _check_database(arguments: argparse.Namespace, settings: Settings) -> int:
    """Print what the check finds, repair as asked, and what is left; 0 when nothing
    is, 1 when something is. /status shows the outcome from now on."""
    database = _open_migrated(settings)
    try:
        inspection = db_check.inspect(database, thorough=True)
        found = inspection.findings()
        for finding in found:
            print(f"problem: {finding}")
        repairs = {
            "register_orphans": arguments.register_orphans,
            "remove_orphans": arguments.remove_orphans,
            "forget_missing": arguments.forget_missing,
        }
        if found and any(repairs.values()):
            for done in db_check.repair(database, inspection, **repairs):
                print(f"repaired: {done}")
            inspection = db_check.inspect(database, thorough=True)
            for finding in inspection.findings():
                print(f"left: {finding}")
        db_check.store(database, inspection)
    finally:
        database.dispose()
    left = len(inspection.findings())
    if not found:
        print(f"database check: no problem in {database.engine.url!r} and {settings.data_dir}")
    elif left == len(found):
        print(f"database check: {left} problem(s)")
    else:
        print(f"database check: {len(found)} problem(s), {left} left after the repairs")
    return 1 if left else 0


def _open_migrated(settings: Settings) -> Database:
    """The sensor's database, which must exist at the latest revision: ``status`` only
    reads, so it neither creates nor migrates it (nor leaves an empty SQLite file)."""
    upgrade = "run `gr-scos db upgrade` to create or migrate it"
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        if not Path(url.database).is_file():
            raise ValueError(f"there is no database {url.database}: {upgrade}")
    database = Database(settings.database_url, settings.data_dir)
    try:
        current, head = database.revisions()
        if current != head:
            raise ValueError(
                f"database {database.engine.url!r} is at revision {current or 'none (empty)'}, "
                f"not the latest {head}: {upgrade}"
            )
    except Exception:
        database.dispose()
        raise
    return database


def _measured_dir(path: Path) -> Path:
    """``path``, or its nearest existing parent (the data directory is made when the
    sensor first runs): the filesystem the data is or will be on."""
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def _status_facts(settings: Settings, database: Database) -> dict:
    config = settings.config()
    disk = DiskUsage.measure(_measured_dir(settings.data_dir), settings.max_disk_usage)
    with database.sessions() as db:
        current = health(db, disk, OutageRecord(settings.home).current())
        alive = current.state
        entries = count_by(db, ScheduleEntry.is_active)
        following = db.execute(
            select(ScheduleEntry.id, ScheduleEntry.next_task_id, ScheduleEntry.next_task_time)
            .where(ScheduleEntry.is_active.is_(True), ScheduleEntry.next_task_time.is_not(None))
            .order_by(ScheduleEntry.next_task_time, ScheduleEntry.priority, ScheduleEntry.id)
            .limit(1)
        ).first()
        tasks = count_by(db, TaskResult.status)
        last = db.execute(
            select(
                TaskResult.schedule_entry_id,
                TaskResult.task_id,
                TaskResult.status,
                TaskResult.finished,
            )
            .where(TaskResult.finished.is_not(None))
            .order_by(TaskResult.finished.desc(), TaskResult.id.desc())
            .limit(1)
        ).first()
        notifications = count_by(db, Notification.state)
    upcoming = None
    if following is not None:
        upcoming = {
            "schedule_id": following.id,
            "task_id": following.next_task_id,
            "time": format_utc(following.next_task_time),
        }
    finished = None
    if last is not None:
        finished = {
            "schedule_id": last.schedule_entry_id,
            "task_id": last.task_id,
            "status": last.status,
            "finished": format_utc(last.finished),
        }
    return {
        "sensor_id": config.sensor_id or None,
        "scheduler": current.scheduler,
        "pid": alive.pid if alive else None,
        "scheduler_started": format_utc(alive.started) if alive else None,
        "healthy": current.healthy,
        "problems": current.problems,
        "disk_usage": current.disk.as_dict(),
        "calibration_datetime": config.calibration.calibration_datetime,
        "schedule": {
            "entries": sum(entries.values()),
            "active": entries.get(True, 0),
            "next": upcoming,
        },
        "tasks": {
            "success": tasks.get("success", 0),
            "fail": tasks.get("fail", 0),
            "in_progress": tasks.get("in-progress", 0),
            "last": finished,
        },
        "notifications": {
            "pending": notifications.get("pending", 0),
            "failed": notifications.get("failed", 0),
            "delivered": notifications.get("delivered", 0),
        },
    }


def _status_lines(facts: dict) -> list[str]:
    scheduler = facts["scheduler"]
    if facts["pid"] is not None:
        scheduler += f" (pid {facts['pid']}, started {facts['scheduler_started']})"
    disk = facts["disk_usage"]
    schedule, tasks, notes = facts["schedule"], facts["tasks"], facts["notifications"]
    upcoming = schedule["next"]
    last = tasks["last"]
    return [
        f"sensor: {facts['sensor_id'] or 'none (no sensor_spec id)'}",
        f"scheduler: {scheduler}",
        f"healthy: {'yes' if facts['healthy'] else 'no'}",
        *(f"problem: {problem}" for problem in facts["problems"]),
        f"disk: {disk['percent']:.1f}% used of {disk['total_bytes'] / 2**30:.1f} GiB "
        f"(MAX_DISK_USAGE {disk['max_percent']:g}%)",
        f"calibration: {facts['calibration_datetime'] or 'none'}",
        f"schedule: {schedule['active']} active of {schedule['entries']} entries; next: "
        + (
            f"{upcoming['schedule_id']} task {upcoming['task_id']} at {upcoming['time']}"
            if upcoming
            else "none"
        ),
        f"tasks: {tasks['success']} succeeded, {tasks['fail']} failed, "
        f"{tasks['in_progress']} in progress; last: "
        + (
            f"{last['schedule_id']} task {last['task_id']} {last['status']} at {last['finished']}"
            if last
            else "none"
        ),
        f"notifications: {notes['pending']} pending, {notes['failed']} failed, "
        f"{notes['delivered']} delivered",
    ]


def _status(arguments: argparse.Namespace) -> int:
    settings = _settings()
    try:
        database = _open_migrated(settings)
        try:
            facts = _status_facts(settings, database)
        finally:
            database.dispose()
    except SQLAlchemyError as error:
        if not unreachable(error):
            raise
        # Since when, as the sensor's processes recorded it, with what we see now.
        outage = OutageRecord(settings.home).current()
        since = f" since {format_utc(outage.since)}" if outage else ""
        raise ValueError(f"the database is unreachable{since}: {describe(error)}") from None
    if arguments.json:
        print(json.dumps(facts, indent=2))
    else:
        print("\n".join(_status_lines(facts)))
    return 0 if facts["healthy"] else 1


def _config(arguments: argparse.Namespace) -> int:
    if arguments.config_command == "example":
        sys.stdout.write(example_file())
        return 0
    settings = _settings()
    config = settings.config()
    catalog = Catalog.load(config)
    print(f"settings file: {settings.source or 'none (environment and defaults only)'}")
    print(f"state (SCOS_HOME): {settings.home}")
    print(f"data (SCOS_DATA_DIR): {settings.data_dir}")
    print(f"configuration (SCOS_CONFIG): {settings.config_dir or 'the shipped defaults'}")
    print(f"sensor {config.sensor_id}: {len(catalog.actions)} action(s)")
    print(f"signal analyzer (SCOS_SIGAN): {settings.sigan}")
    if not arguments.no_device:
        facts = probe(settings.sigan)
        print(f"  found: {facts.get('description') or settings.sigan}")
    print("configuration OK")
    return 0


def _users(arguments: argparse.Namespace) -> int:
    settings = _settings()
    database = Database(settings.database_url, settings.data_dir)
    database.upgrade()
    with database.session() as db:
        if arguments.users_command == "add":
            user, token = users.create_user(db, arguments.name, arguments.admin)
            db.flush()
            role = "admin" if user.is_admin else "user"
            print(f"created {role} {user.username} (id {user.id}); its API token:")
            print(token)
        elif arguments.users_command == "list":
            for user in db.scalars(select(User).order_by(User.id)):
                role = "admin" if user.is_admin else "user"
                print(f"{user.id:>5}  {role:<5}  {user.username}")
        elif arguments.users_command == "rotate":
            user = users.find_user(db, arguments.name)
            token = users.new_token(db, user)
            print(f"new API token of {user.username} (the old one no longer works):")
            print(token)
        else:
            user = users.find_user(db, arguments.name)
            owned = db.scalar(select(func.count()).where(ScheduleEntry.owner_id == user.id))
            if owned:
                raise users.UserError(
                    f"{user.username} owns {owned} schedule entries: delete them first"
                )
            db.delete(user)
            print(f"removed {user.username}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gr-scos", description="IEEE 802.15.22.3 (SCOS) spectrum sensor"
    )
    parser.add_argument("--version", action="version", version=f"gr-scos {__version__}")
    parser.add_argument(
        "--log-level",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="default: SCOS_LOG_LEVEL for run and scheduler, else WARNING",
    )
    parser.add_argument(
        "--settings",
        metavar="FILE",
        help=f"settings file (default: ${SETTINGS_FILE_ENV}, else /etc/gr-scos/gr-scos.conf "
        "if it exists); the environment overrides it",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    check = commands.add_parser(
        "selftest",
        help="measure a simulated tone and noise floor through the SCOS detectors and check them",
    )
    check.add_argument(
        "--out", default="selftest", help="directory for the SigMF recordings (default: ./selftest)"
    )
    check.add_argument("--frequency", type=float, default=700e6, help="centre frequency in Hz")
    check.add_argument("--sample-rate", type=float, default=14e6, help="sample rate in S/s")
    check.add_argument("--fft-size", type=int, default=1024)
    check.add_argument("--nffts", type=int, default=300)
    check.add_argument("--window", default="flattop", choices=WINDOW_NAMES)
    check.add_argument("--tone-power", type=float, default=-60.0, help="tone power in dBm")
    check.add_argument(
        "--tone-bin", type=int, default=100, help="tone offset from the centre, in FFT bins"
    )
    check.add_argument(
        "--noise-figure", type=float, default=5.0, help="noise figure in dB without calibration"
    )
    check.add_argument(
        "--calibration", help="calibration file; the simulator then uses its gain and noise figure"
    )
    check.set_defaults(handler=_selftest)

    config_help = "configuration directory (default: $SCOS_CONFIG, else the shipped defaults)"
    run = commands.add_parser("acquire", help="run one configured action now and write its SigMF")
    run.add_argument("action", help="the action's name (see gr-scos actions)")
    run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a settable parameter, e.g. --set frequency=3.5e9 (repeatable)",
    )
    run.add_argument(
        "--sigan",
        help="signal analyzer: sim, replay:<.sigmf-meta>, uhd:<args> or osmosdr:<args> "
        "(default: $SCOS_SIGAN, else sim)",
    )
    run.add_argument("--out", default=".", help="directory for the recordings (default: .)")
    run.add_argument("--config", help=config_help)
    run.set_defaults(handler=_acquire)

    listing = commands.add_parser("actions", help="list the configured actions and parameters")
    listing.add_argument("--config", help=config_help)
    listing.set_defaults(handler=_actions)

    sensor = commands.add_parser(
        "run",
        help="run the whole sensor (API, scheduler, runner) with its state in $SCOS_HOME "
        "(default ./var) until SIGINT or SIGTERM",
    )
    sensor.add_argument(
        "--host", help="address the API listens on (default: from SCOS_API_BIND, 127.0.0.1)"
    )
    sensor.add_argument(
        "--port", type=int, help="port of the API (default: from SCOS_API_BIND, 8000)"
    )
    sensor.add_argument(
        "--sigan", help="signal analyzer, as for acquire (default: $SCOS_SIGAN, else sim)"
    )
    sensor.set_defaults(handler=_run)

    scheduling = commands.add_parser(
        "scheduler",
        help="run the schedule of the sensor's database ($SCOS_HOME, $SCOS_DATABASE_URL) "
        "until SIGINT or SIGTERM",
    )
    scheduling.add_argument(
        "--sigan", help="signal analyzer, as for acquire (default: $SCOS_SIGAN, else sim)"
    )
    scheduling.set_defaults(handler=_scheduler)

    database = commands.add_parser("db", help="the sensor's database")
    database_commands = database.add_subparsers(dest="db_command", required=True)
    database_commands.add_parser(
        "upgrade",
        help="create or migrate the database to the latest schema (the services do "
        "this at start-up too)",
    )
    check_help = (
        "check the database's integrity and that it agrees with the data directory (files "
        "no acquisition owns, acquisitions whose data file is missing, schedule entries whose "
        "next task id is behind their task folders), "
        "and repair as asked; /status shows the outcome; exit status 0 when no problem is "
        "left, 1 when one is, 2 on an error"
    )
    inspecting = database_commands.add_parser("check", help=check_help, description=check_help)
    inspecting.add_argument(
        "--register-orphans",
        action="store_true",
        help="record the recordings no acquisition owns as a successful task of their "
        "schedule entry again, when it still exists",
    )
    inspecting.add_argument(
        "--remove-orphans",
        action="store_true",
        help="delete the files no acquisition owns (after --register-orphans: those left)",
    )
    inspecting.add_argument(
        "--forget-missing",
        action="store_true",
        help="delete the acquisitions whose data file is missing",
    )
    database.set_defaults(handler=_db)

    status_help = (
        "show the sensor's status from its database, as GET /api/v1/status does (no "
        "running API needed); exit status 0 when healthy, 1 when not, 2 on an error "
        "(bad settings; a database that is unreachable, missing or not migrated: "
        "run gr-scos db upgrade)"
    )
    status = commands.add_parser("status", help=status_help, description=status_help)
    status.add_argument("--json", action="store_true", help="one JSON object of the same facts")
    status.set_defaults(handler=_status)

    configuration = commands.add_parser("config", help="the sensor's settings and configuration")
    config_commands = configuration.add_subparsers(dest="config_command", required=True)
    checking = config_commands.add_parser(
        "check",
        help="load every setting and configuration file as the services would, and probe "
        "the signal analyzer; exit status 2 naming what is wrong",
    )
    checking.add_argument(
        "--no-device", action="store_true", help="do not probe the signal analyzer"
    )
    config_commands.add_parser("example", help="print a settings file documenting every setting")
    configuration.set_defaults(handler=_config)

    accounts = commands.add_parser(
        "users", help="manage API users in the sensor's database ($SCOS_HOME, $SCOS_DATABASE_URL)"
    )
    account_commands = accounts.add_subparsers(dest="users_command", required=True)
    add = account_commands.add_parser("add", help="create a user; prints its token last")
    add.add_argument("name")
    add.add_argument("--admin", action="store_true", help="may see and change everything")
    account_commands.add_parser("list", help="list the users")
    rotate = account_commands.add_parser("rotate", help="replace a user's token; prints it last")
    rotate.add_argument("name")
    remove = account_commands.add_parser("remove", help="delete a user that owns no entries")
    remove.add_argument("name")
    accounts.set_defaults(handler=_users)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    arguments = parser.parse_args(argv)
    if arguments.settings is not None:
        # In the environment, so that the API and runner processes read it too.
        os.environ[SETTINGS_FILE_ENV] = arguments.settings
    try:
        level, log_format = arguments.log_level or "WARNING", "text"
        if arguments.command in SERVICES:
            settings = _settings()
            level, log_format = arguments.log_level or settings.log_level, settings.log_format
        logs.configure(level, log_format)
        return arguments.handler(arguments)
    except BrokenPipeError:
        # The reader (head, a pager) has gone: stop quietly, as other Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except (
        ValueError,
        CalibrationError,
        OSError,
        RunError,
        SQLAlchemyError,
        service.ServiceError,
        SchedulerBusyError,
    ) as error:
        reason = "; ".join(line.strip() for line in str(error).splitlines() if line.strip())
        print(f"gr-scos {arguments.command}: error: {reason}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
