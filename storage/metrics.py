"""The sensor's counters for ``/metrics`` (Prometheus): tasks by status, task
duration, overflows, recordings, notification attempts and quota deletions.

They live in the database, incremented in the transaction that records what they
count, so that every API worker reads the same values, they survive restarts, and
deleting entries or data never makes one go down. Gauges (disk, health) are not
kept: ``/metrics`` measures them when scraped.
"""

import bisect
import json
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from .models import MetricCounter

# The +Inf bucket's bound, as Prometheus writes it.
INFINITY = "+Inf"


@dataclass(frozen=True)
class Metric:
    """A counter, or a histogram with upper bucket bounds ``buckets`` (+Inf added)."""

    name: str
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()

    @property
    def is_histogram(self) -> bool:
        return bool(self.buckets)

    @property
    def bounds(self) -> list[str]:
        """The buckets' ``le`` labels, +Inf last."""
        return [str(float(bound)) for bound in self.buckets] + [INFINITY]


TASKS = Metric("scos_tasks", "Tasks finished, by action and status.", ("action", "status"))
TASK_DURATION = Metric(
    "scos_task_duration_seconds",
    "Time from a task's start to its result, by action.",
    ("action",),
    (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800),
)
OVERFLOWS = Metric(
    "scos_overflows",
    "Signal analyzer overflows (samples lost) during tasks, by action.",
    ("action",),
)
RECORDINGS = Metric("scos_recordings", "SigMF recordings written by tasks, by action.", ("action",))
NOTIFICATION_ATTEMPTS = Metric(
    "scos_notification_attempts",
    "Acquisition notification POSTs, by outcome (delivered, error); errors are retried.",
    ("outcome",),
)
NOTIFICATIONS = Metric(
    "scos_notifications",
    "Acquisition notifications settled, by state (delivered, failed: retries exhausted).",
    ("state",),
)
QUOTA_DELETIONS = Metric(
    "scos_quota_deleted_acquisitions",
    "Acquisitions deleted to keep the data filesystem below MAX_DISK_USAGE.",
)
METRICS = (
    TASKS,
    TASK_DURATION,
    OVERFLOWS,
    RECORDINGS,
    NOTIFICATION_ATTEMPTS,
    NOTIFICATIONS,
    QUOTA_DELETIONS,
)
_SUM = "_sum"


def _key(labels: dict[str, str]) -> str:
    return json.dumps(labels, sort_keys=True, separators=(",", ":"))


def _labels(metric: Metric, values: dict[str, object]) -> dict[str, str]:
    if set(values) != set(metric.labels):
        raise ValueError(f"{metric.name} takes the labels {metric.labels}, not {tuple(values)}")
    return {name: str(value) for name, value in values.items()}


def _add(db: Session, name: str, labels: dict[str, str], amount: float) -> None:
    """Add ``amount`` to a counter row, creating it, in one statement (an upsert), so
    that two writers never lose an increment."""
    dialect = sqlite if db.get_bind().dialect.name == "sqlite" else postgresql
    row = dialect.insert(MetricCounter).values(name=name, labels=_key(labels), value=amount)
    db.execute(
        row.on_conflict_do_update(
            index_elements=[MetricCounter.name, MetricCounter.labels],
            set_={"value": MetricCounter.value + row.excluded.value},
        )
    )


def count(db: Session, metric: Metric, amount: float = 1, **labels: object) -> None:
    """Count ``amount`` more on a counter, in ``db``'s transaction."""
    if metric.is_histogram:
        raise ValueError(f"{metric.name} is a histogram: observe() it")
    if amount:
        _add(db, metric.name, _labels(metric, labels), amount)


def observe(db: Session, metric: Metric, value: float, **labels: object) -> None:
    """Record one observation of a histogram, in ``db``'s transaction. Rows hold each
    bucket's own count; :func:`read` makes them cumulative."""
    if not metric.is_histogram:
        raise ValueError(f"{metric.name} is a counter: count() it")
    values = _labels(metric, labels)
    bound = metric.bounds[bisect.bisect_left(metric.buckets, value)]
    _add(db, metric.name, values | {"le": bound}, 1)
    _add(db, metric.name + _SUM, values, value)


@dataclass(frozen=True)
class Histogram:
    """One label set's cumulative ``buckets`` [(upper bound, count)], +Inf last."""

    buckets: list[tuple[str, float]]
    sum: float


def read(db: Session) -> dict[Metric, list[tuple[dict[str, str], float | Histogram]]]:
    """Every metric's samples: (labels, value) for counters, (labels, Histogram)."""
    rows: dict[str, dict[str, float]] = {}
    for name, labels, value in db.execute(
        select(MetricCounter.name, MetricCounter.labels, MetricCounter.value)
    ):
        rows.setdefault(name, {})[labels] = value
    samples: dict[Metric, list[tuple[dict[str, str], float | Histogram]]] = {}
    for metric in METRICS:
        counted = rows.get(metric.name, {})
        if not metric.is_histogram:
            samples[metric] = [(json.loads(key), value) for key, value in sorted(counted.items())]
            continue
        sums = rows.get(metric.name + _SUM, {})
        histograms = []
        for key, total in sorted(sums.items()):
            labels = json.loads(key)
            cumulative, buckets = 0.0, []
            for bound in metric.bounds:
                cumulative += counted.get(_key(labels | {"le": bound}), 0.0)
                buckets.append((bound, cumulative))
            histograms.append((labels, Histogram(buckets, total)))
        samples[metric] = histograms
    return samples
