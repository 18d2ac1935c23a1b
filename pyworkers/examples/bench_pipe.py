"""Functions `slither bench pipe` calls: the Python stage of its pipe.

As little Python per item as the dispatch bench's x*2, so the figures show what the
pipe costs around the Python work rather than the work itself. x + 1 keeps the
parity of the prepared value 3x + 1 apart from x's, which the router's even/odd
split then checks.
"""


def inc(xs):
    return [x + 1 for x in xs]


def _spin(us):
    import time

    def work(xs):
        out = []
        for x in xs:
            end = time.perf_counter() + us / 1e6
            while time.perf_counter() < end:
                pass
            out.append(x + 1)
        return out

    return work


def __getattr__(name):
    """work_N: x + 1 after N microseconds of Python per item (bench pipe --work N)."""
    if name.startswith("work_") and name[5:].isdigit():
        return _spin(int(name[5:]))
    raise AttributeError(name)
