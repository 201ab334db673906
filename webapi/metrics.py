"""``/metrics``: the sensor's counters and gauges in Prometheus' text format.

Counters come from the database (``storage/metrics.py``), so every worker answers
the same; a user who is not an admin sees only the counts of the actions that
``/capabilities`` shows them. Gauges (health, scheduler, disk, stored data, the
schedule) are measured now, as ``/status`` measures them. Prometheus scrapes it with
the sensor's token: ``authorization: {type: Token, credentials_file: ...}``.
"""

from flask import Response, g
from flask_restx import Namespace
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from sqlalchemy import func, select

from .. import __version__
from ..storage import metrics
from ..storage.health import SCHEDULER_STATES, Health, count_by
from ..storage.models import Acquisition, Notification, ScheduleEntry
from .auth import AuthenticatedResource
from .common import error_model, sensor_app, session
from .status import sensor_health

# The classic text format, which every Prometheus version reads (our names are ASCII).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

ns = Namespace("metrics", description="Prometheus metrics", path="/metrics")
error = error_model(ns)


def _counters() -> list[Metric]:
    """The counters, without the samples of actions the user may not see."""
    sensor = sensor_app()
    families: list[Metric] = []
    for metric, samples in metrics.read(session()).items():
        kind = HistogramMetricFamily if metric.is_histogram else CounterMetricFamily
        family = kind(metric.name, metric.help, labels=metric.labels)
        for labels, value in samples:
            if "action" in labels and not sensor.may_see_action(g.user, labels["action"]):
                continue
            values = [labels[name] for name in metric.labels]
            if metric.is_histogram:
                family.add_metric(values, value.buckets, value.sum)
            else:
                family.add_metric(values, value)
        families.append(family)
    return families


def _gauge(name: str, help: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, help, value=value)


def _gauges(health: Health) -> list[Metric]:
    db = session()
    sensor = sensor_app()
    info = GaugeMetricFamily(
        "scos_sensor_info", "The sensor's id and gr-scos version.", labels=["sensor_id", "version"]
    )
    info.add_metric([sensor.sensor_id or "", __version__], 1)
    scheduler = GaugeMetricFamily(
        "scos_scheduler_state",
        "1 for the scheduler's state: idle, running, or dead (no heartbeat).",
        labels=["state"],
    )
    for state in SCHEDULER_STATES:
        scheduler.add_metric([state], float(state == health.scheduler))
    entries = GaugeMetricFamily(
        "scos_schedule_entries", "Schedule entries, active or not.", labels=["active"]
    )
    counted = count_by(db, ScheduleEntry.is_active)
    for active in (True, False):
        entries.add_metric([str(active).lower()], counted.get(active, 0))
    recordings, stored_bytes = db.execute(
        select(func.count(Acquisition.id), func.coalesce(func.sum(Acquisition.data_size), 0))
    ).one()
    pending = count_by(db, Notification.state).get("pending", 0)
    disk = health.disk
    return [
        info,
        _gauge("scos_healthy", "1 when /status reports healthy, else 0.", float(health.healthy)),
        scheduler,
        _gauge(
            "scos_consecutive_failures",
            "Tasks failed in a row (the scheduler exits at SCOS_MAX_CONSECUTIVE_FAILURES).",
            health.consecutive_failures,
        ),
        _gauge(
            "scos_signal_analyzer_problem",
            "1 when the signal analyzer could not be opened or failed a task.",
            float(health.sigan_error is not None),
        ),
        _gauge("scos_disk_size_bytes", "Size of the data filesystem.", disk.total_bytes),
        _gauge("scos_disk_used_bytes", "Bytes used on the data filesystem.", disk.used_bytes),
        _gauge(
            "scos_disk_usage_limit_ratio",
            "MAX_DISK_USAGE as a ratio: above it the oldest acquisitions are deleted.",
            disk.max_percent / 100,
        ),
        _gauge("scos_stored_recordings", "SigMF recordings stored.", recordings),
        _gauge("scos_stored_recording_bytes", "Bytes of stored SigMF data files.", stored_bytes),
        entries,
        _gauge(
            "scos_notifications_pending",
            "Acquisition notifications waiting for delivery or a retry.",
            pending,
        ),
    ]


class _Snapshot:
    """A collector of families gathered already (prometheus_client's interface)."""

    def __init__(self, families: list[Metric]):
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


@ns.route("", endpoint="metrics")
@ns.response(401, "No or bad credentials", error)
class Metrics(AuthenticatedResource):
    @ns.doc("get_metrics")
    @ns.produces([CONTENT_TYPE, "application/json"])  # JSON for the errors
    @ns.response(200, "Prometheus text format 0.0.4")
    def get(self):
        """Counters (tasks by status, task duration, overflows, recordings, notification
        attempts, quota deletions) and gauges (health, scheduler, disk, stored data)."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Snapshot(_counters() + _gauges(sensor_health())))
        return Response(generate_latest(registry), content_type=CONTENT_TYPE)
