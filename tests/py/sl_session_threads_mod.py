"""Python functions the thread-profile session specs call: each records when it ran,
so a spec can tell from Python's own clock which calls overlapped."""
import threading
import time

import slither_worker


def bump(items):
    """Adds one to the session's counter per item, reading and writing it apart (the
    window in which a second call of the session would lose an update)."""
    state = slither_worker.session()
    start = time.monotonic()
    for _ in items:
        n = state.get("n", 0)
        time.sleep(0.002)
        state["n"] = n + 1
    end = time.monotonic()
    return [[state["n"], start, end] for _ in items]


def peek(items):
    return [slither_worker.session().get("n", 0) for _ in items]


_entered = set()
_cond = threading.Condition()


def meet(items):
    """items = [tag, other]: enters as `tag` and waits (10 s at most) until `other`
    has entered too. Returns [start, end, met]: met is false when the other call
    never came in while this one ran."""
    tag, other = items[0], items[1]
    start = time.monotonic()
    with _cond:
        _entered.add(tag)
        _cond.notify_all()
        met = _cond.wait_for(lambda: other in _entered, timeout=10)
    end = time.monotonic()
    return [[start, end, bool(met)] for _ in items]
