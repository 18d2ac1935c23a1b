"""Functions `slither bench dispatch` calls: the workloads of
shared/bench/mp_dispatch.py, computed the same way, so that slither and the peers
do the same Python work per item and differ only in how items travel."""


def trivial(xs):
    return [x * 2 for x in xs]


def records(rs):
    return [{"id": r["id"], "words": len(r["text"].split())} for r in rs]


def cpu_one(x):
    # ~1 ms of pure Python; the loop and its constant must stay as the peer's
    s = 0
    for i in range(20000):
        s += (x + i) * (x + i) % 7
    return s


def cpu(xs):
    return [cpu_one(x) for x in xs]
