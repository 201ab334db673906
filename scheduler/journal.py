"""Finished tasks whose results are not in the database yet.

The scheduler writes a task's outcome here (one JSON file per task, in
``SCOS_HOME/journal``) before it records the result in the database, and removes it
once that transaction has committed. A database outage, a SIGTERM while the
database is down or a crash between the end of a task and its recording therefore
loses nothing: the scheduler records what the journal holds when the database is
back, or at its next start.

Writing never raises: a home that cannot be written only costs this safety net
(the scheduler still records through the database, retrying while it is down).
"""

import datetime
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

JOURNAL_DIR = "journal"


@dataclass(frozen=True)
class Finished:
    """How a task ended: what the scheduler records as its result."""

    result_id: int  # the TaskResult row, in progress until recorded
    schedule_id: str
    task_id: int
    action: str
    folder: str  # where its files are
    finished: datetime.datetime
    started: datetime.datetime | None  # when its flowgraph started; None: it did not
    detail: str | None  # why it failed; None: it succeeded
    recordings: list[str] = field(default_factory=list)
    overflows: int = 0

    @property
    def failed(self) -> bool:
        return self.detail is not None

    def to_json(self) -> str:
        fields = asdict(self)
        for name in ("finished", "started"):
            if fields[name] is not None:
                fields[name] = fields[name].isoformat()
        return json.dumps(fields)

    @classmethod
    def from_json(cls, text: str) -> "Finished":
        fields = json.loads(text)
        for name in ("finished", "started"):
            if fields[name] is not None:
                fields[name] = datetime.datetime.fromisoformat(fields[name])
        return cls(**fields)


class Journal:
    """The journal directory of one scheduler."""

    def __init__(self, home: Path):
        self.directory = Path(home) / JOURNAL_DIR

    def _path(self, finished: Finished) -> Path:
        return self.directory / f"{finished.result_id}.json"

    def write(self, finished: Finished) -> None:
        path = self._path(finished)
        temporary = path.with_name(f".{path.name}.tmp")
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            temporary.write_text(finished.to_json())
            os.replace(temporary, path)
        except OSError as error:
            logger.warning(
                "cannot journal task %d of %s before recording it: %s",
                finished.task_id,
                finished.schedule_id,
                error,
            )

    def remove(self, finished: Finished) -> None:
        try:
            self._path(finished).unlink(missing_ok=True)
        except OSError as error:
            logger.warning("cannot remove %s: %s", self._path(finished), error)

    def pending(self) -> list[Finished]:
        """The outcomes not recorded yet, oldest result first. An unreadable entry is
        renamed ``*.bad`` (kept for a person to read) and logged."""
        try:
            paths = sorted(
                (path for path in self.directory.glob("*.json") if path.stem.isdigit()),
                key=lambda path: int(path.stem),
            )
        except OSError as error:
            logger.error("cannot read the journal %s: %s", self.directory, error)
            return []
        entries = []
        for path in paths:
            try:
                entries.append(Finished.from_json(path.read_text()))
            except (OSError, ValueError, TypeError, KeyError) as error:
                logger.error("unreadable journal entry %s (%s): kept as .bad", path, error)
                try:
                    path.rename(path.with_suffix(".bad"))
                except OSError:
                    pass
        return entries
