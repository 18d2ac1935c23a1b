"""Python functions the dispatch specs call."""
import os
import time

import slither_worker


def double(items):
    return [x * 2 for x in items]


def batch_view(items):
    """Each item learns the batch it travelled in: [batch size, first payload, pid]."""
    return [[len(items), items[0], os.getpid()] for _ in items]


def key_view(items):
    return [[it["k"], os.getpid(), len(items)] for it in items]


def skewed(items):
    # the batch holding payload 1 is slow; the others are fast
    if 1 in items:
        time.sleep(0.4)
    return items


def poison(items):
    bad = [x for x in items if x < 0]
    if bad:
        raise ValueError("poison %r" % (bad[0],))
    return [x * 10 for x in items]


def wrong_length(items):
    return items[:-1]


def die_once(items):
    """Kills its own worker the first time it sees the flag file, mid-batch."""
    flag = os.environ.get("SLITHER_DIE_FLAG")
    if flag and _claim(flag):
        os._exit(9)
    return [x + 1 for x in items]


def _claim(flag):
    """True for exactly one caller across workers: the one that removes the flag."""
    try:
        os.remove(flag)
        return True
    except FileNotFoundError:
        return False


def slow_once(items):
    flag = os.environ.get("SLITHER_SLOW_FLAG")
    if flag and _claim(flag):
        time.sleep(30)
    return items


def interval(items):
    """Returns the wall-clock interval the batch ran in, to measure overlap. The
    interval is narrowed by 2 ms at each end, so clock skew between CPUs cannot
    make two batches that ran one after the other look concurrent."""
    token = os.urandom(8).hex()
    t0 = time.time()
    time.sleep(0.03)
    return [[token, t0 + 0.002, time.time() - 0.002] for _ in items]


def count_in_session(items):
    """Counts the items this session has seen on this worker, item by item."""
    st = slither_worker.session()
    out = []
    for _ in items:
        st["n"] = st.get("n", 0) + 1
        out.append(st["n"])
    return out


def slow5(items):
    time.sleep(0.005 * len(items))
    return items
