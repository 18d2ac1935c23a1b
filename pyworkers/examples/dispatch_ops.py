"""Functions the dispatch demo calls."""
import math
import time


def score(items):
    """A stand-in model: one number per record."""
    out = []
    for r in items:
        if r["text"] is None:
            raise ValueError("record %d has no text" % r["id"])
        out.append({"id": r["id"], "score": round(math.tanh(len(r["text"]) / 40.0), 3)})
    return out


def slow_square(items):
    time.sleep(0.002 * len(items) * (1 + items[0] % 3))
    return [x * x for x in items]
