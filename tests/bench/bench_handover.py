"""Benchmark: what the liveness check at hand-over costs a healthy runner.

Before it hands a task to a spare runner, the scheduler pings it
(:meth:`RunnerProcess.why_unresponsive`); the time this takes is on the task's
start-time path. For ``--runners`` runners each, it measures the check's wall time:

* while the runner still imports (at nice 19), pinged every 20 ms until it is ready;
* once it is ready and has waited a moment (its heartbeats queue up meanwhile, as a
  spare's do), ``--pings`` times.

``--busy N`` keeps N processes spinning on the CPU meanwhile (a loaded machine).
Never collected as a test. Run with ``.venv/bin/python tests/bench/bench_handover.py``.
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time

from grscos.scheduler.supervisor import RunnerProcess

IMPORTING_PING_INTERVAL_S = 0.02
READY_WAIT_S = 0.5  # heartbeats queue meanwhile, as they do for a waiting spare


def timed_check(runner: RunnerProcess) -> float:
    """Seconds one check took; the runner must pass it."""
    began = time.perf_counter()
    problem = runner.why_unresponsive(30.0)
    elapsed = time.perf_counter() - began
    if problem is not None:
        raise SystemExit(f"a healthy runner failed the check: {problem}")
    return elapsed


def measure(runners: int, pings: int) -> tuple[list[float], list[float]]:
    importing: list[float] = []
    ready: list[float] = []
    with tempfile.TemporaryDirectory(prefix="grscos-bench-") as socket_dir:
        for _ in range(runners):
            runner = RunnerProcess(socket_dir)
            try:
                while not runner.ready:
                    seconds = timed_check(runner)
                    if not runner.ready:  # answered before it said ready
                        importing.append(seconds)
                    time.sleep(IMPORTING_PING_INTERVAL_S)
                time.sleep(READY_WAIT_S)
                ready.extend(timed_check(runner) for _ in range(pings))
            finally:
                runner.close()
    return importing, ready


def row(name: str, values: list[float]) -> str:
    if not values:
        return f"| {name} | 0 | | | |"
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (
        f"| {name} | {len(ordered)} | {statistics.median(ordered) * 1e3:.2f} "
        f"| {p99 * 1e3:.2f} | {ordered[-1] * 1e3:.2f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runners", type=int, default=10)
    parser.add_argument("--pings", type=int, default=20, help="checks per ready runner")
    parser.add_argument("--busy", type=int, default=0, help="CPU-spinning processes meanwhile")
    options = parser.parse_args()
    spinners = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(options.busy)
    ]
    try:
        importing, ready = measure(options.runners, options.pings)
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()
    print(f"Liveness check at hand-over ({options.busy} CPU-spinning processes meanwhile):")
    print()
    print("| runner | n | p50 ms | p99 ms | max ms |")
    print("|---|--:|--:|--:|--:|")
    print(row("ready", ready))
    print(row("still importing", importing))


if __name__ == "__main__":
    main()
