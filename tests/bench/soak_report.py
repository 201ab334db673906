"""The soak's report (``soak.py``): its figures from a run's data
(``soak_analysis.py``), printed in Markdown. A saved ``soak.json`` reports again
with ``soak.py --reanalyse``."""

import argparse
import collections
import json
import os

import soak_analysis as analysis

DETAIL_SHOWN = 160  # characters of a failure's detail in the report


def last_error(lines: list[str]) -> str:
    """The line of a log tail that most likely says why the process ended."""
    for line in reversed(lines):
        if any(word in line for word in ("ERROR", "CRITICAL", "Error", "error:")):
            return line
    return lines[-1] if lines else "(empty log)"


def analyse(run: dict, arguments: argparse.Namespace) -> dict:
    """Every figure of the report, from a run's data (what ``soak.json`` holds)."""
    entry = run["entry"]
    ended = run.get("ended") or max(sample["time"] for sample in run["samples"])
    spans = analysis.windows(run["timeline"], arguments.recovery, ended)
    exits = [event for event in run["timeline"] if event["type"] == "exit"]
    series = analysis.process_series(run["samples"], run["results"], arguments.warmup)
    report = {
        "exits": {
            "planned": sum(1 for event in exits if event["planned"]),
            "unplanned": [event for event in exits if not event["planned"]],
            "clean_stop": run["clean_stop"],
            "scheduler_restarts": run.get("scheduler_restarts", []),
        },
        "tasks": analysis.account_tasks(
            run["results"],
            entry["next_task_id"],
            entry["start"],
            entry["interval"],
            arguments.tasks,
            spans,
            run["quota_deleted"],
        ),
        "failures": analysis.group_failures(run["results"], spans),
        "lateness_ms": analysis.lateness_ms(run["results"], spans),
        "processes": analysis.process_trends(series),
        "role_slopes": analysis.role_slopes(series),
        "peak_tree_rss": analysis.peak_tree_rss(run["samples"]),
        "api": analysis.api_polls(run["samples"], spans),
        "faults": [event for event in run["timeline"] if event["type"] == "fault"],
        "stray_files": run["files_no_acquisition_owns"],
        "api_task_count": run["api_task_count"],
    }
    report["targets"] = analysis.targets(report)
    return report


def table(header: list[str], rows: list[list], right: set[int] = frozenset()) -> None:
    """A Markdown table; columns in ``right`` are right-aligned (numbers)."""
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("--:" if i in right else "---" for i in range(len(header))) + "|")
    for row in rows:
        print("| " + " | ".join(str(cell) for cell in row) + " |")
    print()


def print_report(report: dict, run: dict, arguments: argparse.Namespace) -> None:
    """The report in Markdown, section by section."""
    began = run["entry"]["start"]
    loads = [sample["load"] for sample in run["samples"] if "load" in sample]
    load = f"{sum(loads) / len(loads):.1f}" if loads else "unknown"
    entry = run["entry"]
    print(
        f"\n## Soak: {arguments.tasks} task times of {entry['action']} every "
        f"{entry['interval']} s, seed {arguments.seed}, faults every ~{arguments.fault_every:g} s; "
        f"{os.cpu_count()} CPUs, mean load average {load}\n"
    )
    for error in run.get("monitor_errors", []):
        print(f"**The soak's monitor failed** (the figures may miss samples): {error}\n")
    print_faults(report["faults"], began)
    print_exits(report["exits"], began)
    print_tasks(report, began)
    print_failures(report)
    print_processes(report, arguments.warmup)
    print("### The issue's targets\n")
    verdicts = {True: "yes", False: "**no**", None: "not measured"}
    table(
        ["what", "value", "target", "met"],
        [
            [row["what"], row["value"], row["target"], verdicts[row["met"]]]
            for row in report["targets"]
        ],
        right={1},
    )


def print_faults(faults: list[dict], began: float) -> None:
    counts = collections.Counter(fault["kind"] for fault in faults)
    print("### Faults injected\n")
    print(", ".join(f"{kind} x{n}" for kind, n in counts.items()) or "none")
    print()
    for fault in faults:
        print(f"- +{fault['start'] - began:.0f} s {fault['kind']}: {json.dumps(fault['details'])}")
    print()


def print_exits(exits: dict, began: float) -> None:
    print("### Process exits\n")
    print(f"- planned (the soak's SIGKILLs of gr-scos run): {exits['planned']}")
    print(f"- unplanned: {len(exits['unplanned'])}")
    for event in exits["unplanned"]:
        print(
            f"  - +{event['time'] - began:.0f} s gr-scos run #{event['instance']} status "
            f"{event['status']}: {last_error(event['log_tail'])}"
        )
    stop = exits["clean_stop"]
    print(
        f"- clean stop (SIGTERM): status {stop['status']} in {stop['seconds']:.1f} s {stop['note']}"
    )
    restarts = exits["scheduler_restarts"]
    print(
        f"- schedulers replaced inside gr-scos run (they gave up; no process exit): {len(restarts)}"
    )
    for restart in restarts:
        print(f"  - {restart}")
    print()


def print_tasks(report: dict, began: float) -> None:
    tasks = report["tasks"]
    rows = [
        ["task times (one per second of the entry's active time)", tasks["task_times"]],
        ["task ids taken", tasks["ids_taken"]],
        ["results", tasks["results"]],
        *[[f"results {status}", n] for status, n in sorted(tasks["by_status"].items())],
        *[[f"task times collapsed: {why}", n] for why, n in sorted(tasks["collapsed"].items())],
        [
            "**lost** (ids without a final result, left in progress included; recordings gone)",
            tasks["lost"],
        ],
        [
            "**duplicated** (same task time or id)",
            len(tasks["duplicated_times"]) + len(tasks["duplicated_ids"]),
        ],
        ["**left in progress** after the clean stop", len(tasks["in_progress"])],
        [
            "**missed while up** (no fault, sensor up, previous task done)",
            len(tasks["missed_while_up"]),
        ],
        ["results off the task-time grid", len(tasks["off_grid"])],
        [
            "successes without recordings / acquisitions the quota deleted",
            f"{len(tasks['successes_without_recordings'])} / {tasks['quota_deleted']}",
        ],
        ["files in the data directory that no acquisition owns", len(report["stray_files"])],
        ["tasks in the API's task list", report["api_task_count"]],
    ]
    print("### Tasks\n")
    table(["", "count"], rows, right={1})
    examples = [
        ("lost task ids", tasks["lost_ids"][:20]),
        ("recordings missing on disk", tasks["lost_recordings"][:5]),
        ("missed while up at", [f"+{t - began:.0f} s" for t in tasks["missed_while_up"][:20]]),
    ]
    for what, which in examples:
        if which:
            print(f"{what}: {which}\n")


def print_failures(report: dict) -> None:
    print("### Failures by detail\n")
    table(
        ["count", "detail", "explained by", "unexplained task ids"],
        [
            [
                group["count"],
                group["detail"][:DETAIL_SHOWN],
                ", ".join(f"{label} {n}" for label, n in group["explained_by"].items()),
                group["unexplained"][:10],
            ]
            for group in report["failures"]
        ],
        right={0},
    )
    api = report["api"]
    print(
        f"`GET /status` polls: {api['answered']} of {api['polls']} answered; failed during "
        f"faults {api['failed_during_faults']}, outside faults {len(api['failed_outside_faults'])}"
    )
    for label, problems in api["problems_by_fault"].items():
        for problem, n in problems.items():
            print(f"- /status problem during {label} (x{n}): {problem[:DETAIL_SHOWN]}")
    print()


def print_processes(report: dict, warmup: int) -> None:
    def trio(series: dict, scale: float = 0.0) -> str:
        """first/last/max, divided by ``scale`` with a decimal, or as they are."""
        values = [series[key] for key in ("first", "last", "max")]
        return "/".join(f"{value / scale:.1f}" if scale else str(value) for value in values)

    print(f"### Processes (slopes after the first {warmup} tasks of each one's life)\n")
    print("Each process, then each role's slope over all its processes (each about its")
    print("own baseline: a restarted sensor starts afresh).\n")
    table(
        [
            "#",
            "role",
            "pid",
            "samples",
            "tasks",
            "RSS MB first/last/max",
            "RSS KB/task",
            "fds first/last/max",
            "fds /1000 tasks",
            "threads first/last/max",
            "threads /1000 tasks",
        ],
        [
            [
                trend["instance"],
                trend["role"] + (" (orphaned)" if trend["orphaned"] else ""),
                trend["pid"],
                trend["samples"],
                trend["tasks_seen"],
                trio(trend["rss_kb"], 1024),
                f"{trend['rss_kb']['slope_per_task']:.2f}",
                trio(trend["fds"]),
                f"{trend['fds']['slope_per_task'] * 1000:.2f}",
                trio(trend["threads"]),
                f"{trend['threads']['slope_per_task'] * 1000:.2f}",
            ]
            for trend in report["processes"]
        ],
        right={0, 2, 3, 4, 6, 8, 10},
    )
    table(
        [
            "role",
            "processes",
            "tasks after warm-up",
            "RSS KB/task",
            "fds /1000 tasks",
            "threads /1000 tasks",
        ],
        [
            [
                pooled["role"],
                pooled["processes"],
                pooled["steady_tasks"],
                f"{pooled['rss_kb_per_task']:.2f}",
                f"{pooled['fds_per_task'] * 1000:.2f}",
                f"{pooled['threads_per_task'] * 1000:.2f}",
            ]
            for pooled in report["role_slopes"]
        ],
        right={1, 2, 3, 4, 5},
    )
    peak = report["peak_tree_rss"]
    print(
        f"Peak RSS of the whole process tree (sampled): {peak['rss_kb'] / 1024:.1f} MB over "
        f"{peak['processes']} processes"
    )
    for which, late in report["lateness_ms"].items():
        print(
            f"Start lateness (started - scheduled) of {late['n']} successful tasks, "
            f"{which.replace('_', ' ')}: p50 {late['p50']:.1f} ms, p90 {late['p90']:.1f} ms, "
            f"p99 {late['p99']:.1f} ms, max {late['max']:.1f} ms"
        )
    print()
