"""The scheduler: task times, waking on schedule changes, and (next) the runner."""
