"""The soak's accounting (``soak.py``): what the sensor recorded, checked against what
the soak did to it. Pure functions of plain data (floats are Unix seconds), so that a
saved run can be analysed again.

* **Task times.** An interval entry with ``count`` task times ``start + k * interval``.
  Every time either has a result (exactly one), or was legitimately collapsed into a
  later task: the sensor was down, a fault (or the recovery allowance after it) was
  on, or the previous task was still running. A time collapsed for none of these
  reasons was *missed while up*.
* **Task ids.** Ids are taken from the entry before a task runs and never reused: every
  id below the entry's ``next_task_id`` must have exactly one final result; one without
  is *lost*, one still ``in-progress`` after the clean stop is *left in progress*. A
  success whose recording files are gone from disk is lost too. acquire_iq writes one
  recording per task; the disk quota deletes whole acquisitions, so successes without
  any are lost only beyond the quota's own count of deletions.
* **Failures** are grouped by their detail (paths and long numbers masked) and each is
  matched to the faults whose window (plus the recovery allowance) overlaps the task.
* **Processes.** RSS, open fds and threads of each process sampled from ``/proc``,
  against the number of tasks started, with a least-squares slope after a warm-up;
  per role, one slope over all its processes, each about its own baseline (faults
  restart the sensor, so no single process lives through the whole soak).
"""

import bisect
import collections
import math
import re

ROLES = ("scheduler (gr-scos run)", "api master", "api worker", "runner")
SCHEDULER, API_MASTER, API_WORKER, RUNNER = ROLES
SENSOR_DOWN = "sensor down"
AFTER_RESULT_S = 0.5  # seconds the scheduler may take after a result before the next task
PREVIOUS_RUNNING = "previous task still running"
MISSED_WHILE_UP = "missed while up"
_PATH = re.compile(r"""(?<![\w.])/[^\s'":,]+""")
_NUMBER = re.compile(r"\b\d+\.\d+|\b\d{3,}\b")


# -- statistics ----------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (NaN for no values)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def slope(groups: list[tuple[list[float], list[float]]]) -> float:
    """The least-squares slope of y over x shared by several (xs, ys) series, each
    about its own means (a restarted process starts from its own baseline: the
    "within" estimator); with one series, the plain slope. NaN with fewer than 3
    points or no spread in x."""
    numerator = spread = 0.0
    for xs, ys in groups:
        if not xs:
            continue
        mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
        numerator += sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
        spread += sum((x - mean_x) ** 2 for x in xs)
    if sum(len(xs) for xs, _ in groups) < 3 or spread == 0:
        return math.nan
    return numerator / spread


def normalise_detail(detail: str) -> str:
    """A failure's detail with what differs from task to task (paths, long numbers)
    masked, so that failures of one kind group together."""
    return _NUMBER.sub("N", _PATH.sub("PATH", detail or "(no detail)"))


# -- windows -------------------------------------------------------------------------


def windows(timeline: list[dict], recovery: float, end: float) -> list[dict]:
    """The spans that excuse a collapsed task time or a failure: each fault from its
    start to its end plus ``recovery`` seconds, and each time no ``gr-scos run`` was
    ready (from an exit to the next instance's API answering) plus ``recovery``."""
    spans = [
        {"label": event["kind"], "start": event["start"], "end": event["end"] + recovery}
        for event in timeline
        if event["type"] == "fault"
    ]
    down_since = None
    lifecycle = [event for event in timeline if event["type"] in ("exit", "ready")]
    for event in sorted(lifecycle, key=lambda event: event["time"]):
        if event["type"] == "exit" and down_since is None:
            down_since = event["time"]
        elif event["type"] == "ready" and down_since is not None:
            spans.append(
                {"label": SENSOR_DOWN, "start": down_since, "end": event["time"] + recovery}
            )
            down_since = None
    if down_since is not None:
        spans.append({"label": SENSOR_DOWN, "start": down_since, "end": end})
    return spans


def overlapping(spans: list[dict], start: float, end: float) -> list[str]:
    """Labels of the spans that overlap [start, end], the latest to begin first: when
    a recovery allowance overlaps the next fault, the newer fault is the likelier cause."""
    found = [span for span in spans if span["start"] <= end and start <= span["end"]]
    return [span["label"] for span in sorted(found, key=lambda span: -span["start"])]


# -- tasks ---------------------------------------------------------------------------


def account_tasks(
    results: list[dict],
    next_task_id: int,
    start: float,
    interval: float,
    count: int,
    spans: list[dict],
    quota_deleted: int,
) -> dict:
    """Task times and ids checked as the module says. ``results``: dicts with
    task_id, scheduled, started, finished (None while running), status, detail and
    recordings (dicts with ``path`` and ``on_disk``)."""
    grid = [start + index * interval for index in range(count)]
    by_time = collections.defaultdict(list)
    for result in results:
        by_time[round(result["scheduled"], 3)].append(result)
    by_id = collections.Counter(result["task_id"] for result in results)

    collapsed = collections.Counter()
    missed = []
    # A time is collapsed for a running task only if the scheduler was busy with it
    # until a whole interval later (else it runs the time late), less the work after a
    # result (quota, next task).
    busy = [
        (r["scheduled"], (r["finished"] or math.inf) + AFTER_RESULT_S - interval) for r in results
    ]
    for moment in grid:
        if round(moment, 3) in by_time:
            continue
        labels = overlapping(spans, moment, moment)
        if labels:
            collapsed[labels[0]] += 1
        elif any(begin < moment <= until for begin, until in busy):
            collapsed[PREVIOUS_RUNNING] += 1
        else:
            collapsed[MISSED_WHILE_UP] += 1
            missed.append(moment)
    on_grid = {round(moment, 3) for moment in grid}

    final = [r for r in results if r["status"] in ("success", "fail")]
    successes = [r for r in results if r["status"] == "success"]
    missing_files = [
        {"task_id": r["task_id"], "path": recording["path"]}
        for r in successes
        for recording in r["recordings"]
        if not recording["on_disk"]
    ]
    without_recordings = [r["task_id"] for r in successes if not r["recordings"]]
    final_ids = {r["task_id"] for r in final}
    lost_ids = [task_id for task_id in range(1, next_task_id) if task_id not in final_ids]
    lost_successes = max(0, len(without_recordings) - quota_deleted)
    return {
        "task_times": count,
        "results": len(results),
        "by_status": dict(collections.Counter(r["status"] for r in results)),
        "ids_taken": next_task_id - 1,
        "collapsed": dict(collapsed),
        "missed_while_up": missed,
        "off_grid": [r["task_id"] for r in results if round(r["scheduled"], 3) not in on_grid],
        "lost_ids": lost_ids,
        "lost_recordings": missing_files,
        "successes_without_recordings": without_recordings,
        "quota_deleted": quota_deleted,
        "lost": len(lost_ids) + len(missing_files) + lost_successes,
        "duplicated_times": sorted(
            key for key, found in by_time.items() if len(found) > 1 and key in on_grid
        ),
        "duplicated_ids": sorted(task_id for task_id, seen in by_id.items() if seen > 1),
        "in_progress": [r["task_id"] for r in results if r["status"] == "in-progress"],
    }


def group_failures(results: list[dict], spans: list[dict]) -> list[dict]:
    """Failed tasks by normalised detail, most frequent first, each with the faults
    that explain them (a failure overlapping no window is unexplained)."""
    groups: dict[str, dict] = {}
    for result in results:
        if result["status"] != "fail":
            continue
        detail = normalise_detail(result["detail"])
        group = groups.setdefault(
            detail,
            {
                "detail": detail,
                "count": 0,
                "explained_by": collections.Counter(),
                "unexplained": [],
            },
        )
        group["count"] += 1
        labels = overlapping(
            spans, result["scheduled"] - 1.0, result["finished"] or result["scheduled"]
        )
        if labels:
            group["explained_by"][labels[0]] += 1
        else:
            group["unexplained"].append(result["task_id"])
    ordered = sorted(groups.values(), key=lambda group: -group["count"])
    for group in ordered:
        group["explained_by"] = dict(group["explained_by"])
    return ordered


def lateness_ms(results: list[dict], spans: list[dict]) -> dict:
    """started - scheduled of successful tasks, in milliseconds: of all, and of those
    outside every fault window (what the sensor does when left alone)."""

    def summary(late: list[float]) -> dict:
        return {
            "n": len(late),
            **{f"p{p}": percentile(late, p) for p in (50, 90, 99)},
            "max": max(late, default=math.nan),
        }

    successes = [r for r in results if r["status"] == "success"]
    quiet = [r for r in successes if not overlapping(spans, r["scheduled"], r["finished"])]
    return {
        "all": summary([(r["started"] - r["scheduled"]) * 1e3 for r in successes]),
        "outside_faults": summary([(r["started"] - r["scheduled"]) * 1e3 for r in quiet]),
    }


# -- processes -----------------------------------------------------------------------


MEASURES = ("rss_kb", "fds", "threads")


def process_series(samples: list[dict], results: list[dict], warmup: int) -> list[dict]:
    """Per process (pid and start time) but runners (they live for one task): its role,
    its points (tasks, rss_kb, fds, threads) and its steady points, those after the
    first ``warmup`` tasks of its life. Tasks: how many had started by the sample's
    time (not task times, which also pass while the sensor is down)."""
    starts = sorted(result["started"] for result in results)
    series: dict[tuple[int, int], dict] = {}
    for sample in samples:
        x = bisect.bisect_right(starts, sample["time"])
        for process in sample["processes"]:
            if process["role"] == RUNNER:
                continue
            entry = series.setdefault(
                (process["pid"], process["start"]),
                {
                    "pid": process["pid"],
                    "role": process["role"],
                    "instance": process["instance"],
                    "orphaned": False,  # outlived its gr-scos run
                    "points": [],
                },
            )
            entry["orphaned"] |= process["orphan"]
            entry["points"].append((x, *(process[measure] for measure in MEASURES)))
    for entry in series.values():
        first = entry["points"][0][0]
        entry["steady"] = [point for point in entry["points"] if point[0] >= first + warmup]
    return sorted(series.values(), key=lambda e: (e["instance"], e["role"], e["pid"]))


def _column(points: list[tuple], measure: str) -> list[float]:
    index = 1 + MEASURES.index(measure)
    return [point[index] for point in points]


def process_trends(series: list[dict]) -> list[dict]:
    """Per process: first, last and peak of each measure, and its slope per task over
    the steady points."""
    trends = []
    for entry in series:
        points, steady = entry["points"], entry["steady"]
        xs = [point[0] for point in steady]
        trend = {key: entry[key] for key in ("pid", "role", "instance", "orphaned")}
        trend |= {"samples": len(points), "tasks_seen": points[-1][0] - points[0][0]}
        for measure in MEASURES:
            values = _column(points, measure)
            trend[measure] = {
                "first": values[0],
                "last": values[-1],
                "max": max(values),
                "slope_per_task": slope([(xs, _column(steady, measure))]),
            }
        trends.append(trend)
    return trends


def role_slopes(series: list[dict]) -> list[dict]:
    """Per role, one slope per measure over the steady points of all its processes
    (every ``gr-scos run`` the soak restarted, every API worker), each process about
    its own baseline: what the targets are checked against."""
    pooled = []
    for role in (SCHEDULER, API_MASTER, API_WORKER):
        members = [entry for entry in series if entry["role"] == role and entry["steady"]]
        groups = {
            measure: [([p[0] for p in e["steady"]], _column(e["steady"], measure)) for e in members]
            for measure in MEASURES
        }
        pooled.append(
            {
                "role": role,
                "processes": len(members),
                "steady_samples": sum(len(entry["steady"]) for entry in members),
                "steady_tasks": sum(e["steady"][-1][0] - e["steady"][0][0] for e in members),
                **{f"{measure}_per_task": slope(groups[measure]) for measure in MEASURES},
            }
        )
    return pooled


def peak_tree_rss(samples: list[dict]) -> dict:
    """The largest sampled sum of RSS over every process of the sensor (runners and
    orphans included), and when."""
    best = {"rss_kb": 0, "time": math.nan, "processes": 0}
    for sample in samples:
        total = sum(process["rss_kb"] for process in sample["processes"])
        if total > best["rss_kb"]:
            best = {"rss_kb": total, "time": sample["time"], "processes": len(sample["processes"])}
    return best


def api_polls(samples: list[dict], spans: list[dict]) -> dict:
    """The soak's ``GET /status`` polls: answered, failed during a fault (or while the
    sensor was down), failed outside any, and the problems ``/status`` listed during
    each kind of fault."""
    failed_outside: list[dict] = []
    answered = failed_during = 0
    problems: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for sample in samples:
        poll = sample["status"]
        labels = overlapping(spans, sample["time"], sample["time"])
        if poll["ok"]:
            answered += 1
            for problem in poll["problems"]:
                problems[labels[0] if labels else "no fault"][normalise_detail(problem)] += 1
        elif labels:
            failed_during += 1
        else:
            failed_outside.append({"time": sample["time"], "error": poll["error"]})
    return {
        "polls": len(samples),
        "answered": answered,
        "failed_during_faults": failed_during,
        "failed_outside_faults": failed_outside,
        "problems_by_fault": {label: dict(counts) for label, counts in problems.items()},
    }


# -- the targets ---------------------------------------------------------------

RSS_SLOPE_TARGET_KB = 8.0  # scheduler RSS growth per task
FLAT_PER_1000_TASKS = 1.0  # fds or threads: less than one more per 1000 tasks is flat


def targets(report: dict) -> list[dict]:
    """The issue's "done when" figures: each with its value, target and whether met
    (None: a slope that could not be measured, every process having lived too short)."""
    tasks = report["tasks"]
    rows = [
        ("unplanned process exits", len(report["exits"]["unplanned"]), "0"),
        ("lost tasks", tasks["lost"], "0"),
        ("duplicated tasks", len(tasks["duplicated_times"]) + len(tasks["duplicated_ids"]), "0"),
        ("tasks left in progress", len(tasks["in_progress"]), "0"),
    ]
    checked = [
        {"what": what, "value": value, "target": goal, "met": value == 0}
        for what, value, goal in rows
    ]

    def below(what: str, value: float, limit: float) -> None:
        met = None if math.isnan(value) else value < limit
        checked.append(
            {"what": what, "value": round(value, 2), "target": f"< {limit:g}", "met": met}
        )

    for pooled in report["role_slopes"]:
        label = (
            f"{pooled['role']} ({pooled['processes']} process(es), "
            f"{pooled['steady_tasks']} tasks after warm-up)"
        )
        if pooled["role"] == SCHEDULER:
            below(f"{label}: RSS KB/task", pooled["rss_kb_per_task"], RSS_SLOPE_TARGET_KB)
        for measure in ("fds", "threads"):
            growth = pooled[f"{measure}_per_task"] * 1000
            below(f"{label}: {measure} per 1000 tasks (flat)", growth, FLAT_PER_1000_TASKS)
    return checked
