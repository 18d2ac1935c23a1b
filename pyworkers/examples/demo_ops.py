"""Functions the demo script calls: plain functions over a list of payloads."""
import os


def double(items):
    return [x * 2 for x in items]


def describe(items):
    return [{"n": x, "square": x * x, "pid": os.getpid()} for x in items]


def count_calls(items):
    """Counts the calls made in this session, in this worker's session state."""
    import slither_worker

    state = slither_worker.session()
    state["calls"] = state.get("calls", 0) + 1
    return [state["calls"] for _ in items]


def slow_double(items):
    """double, taking half a second per batch: a long run to interrupt."""
    import time

    time.sleep(0.5)
    return [x * 2 for x in items]


def start_daemon(items):
    """Starts `sleep 300` the way a daemonizing library does (a new session, then
    a background child whose parent exits) and returns its pid."""
    import subprocess

    out = subprocess.run(["sh", "-c", "sleep 300 >/dev/null 2>&1 & echo $!"],
                         start_new_session=True, capture_output=True, text=True, check=True)
    return [int(out.stdout) for _ in items]
