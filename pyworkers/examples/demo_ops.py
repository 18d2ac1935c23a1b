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
