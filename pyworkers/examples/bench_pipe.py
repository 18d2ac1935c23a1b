"""Functions `slither bench pipe` calls: the Python stage of its pipe.

As little Python per item as the dispatch bench's x*2, so the figures show what the
pipe costs around the Python work rather than the work itself. x + 1 keeps the
parity of the prepared value 3x + 1 apart from x's, which the router's even/odd
split then checks.
"""


def inc(xs):
    return [x + 1 for x in xs]
