"""Python functions the pipe specs call."""
import os
import time

import slither_worker


def score(items):
    return [{"n": it["n"], "score": it["n"] / 10.0} for it in items]


def fail_on_negative(items):
    for it in items:
        if it < 0:
            raise ValueError("negative %r" % (it,))
    return [it * 2 for it in items]


def remember(items):
    """Counts items in this session's worker state and asks the session's view."""
    st = slither_worker.session()
    st["n"] = st.get("n", 0) + len(items)
    who = slither_worker.view("whoami", {})
    return [{"x": x, "seen": st["n"], "view": who, "sid": slither_worker.current_session_id()}
            for x in items]


def session_count(items):
    st = slither_worker.session()
    return [st.get("n", 0) for _ in items]


def stamp_a(items):
    t0 = time.time()
    time.sleep(0.02)
    return [{"x": x, "a": [t0, time.time()]} for x in items]


def stamp_b(items):
    t0 = time.time()
    time.sleep(0.02)
    return [dict(it, b=[t0, time.time()]) for it in items]
