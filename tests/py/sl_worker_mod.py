"""Python functions the worker runtime spec calls: results the codec cannot carry."""
import os


def too_deep(items):
    """A result nested far past any codec's depth: encoding it raises RecursionError."""
    out = []
    for _ in range(100000):
        out = [out]
    return [out for _ in items]


def pid(items):
    return [os.getpid() for _ in items]


class _Lying(list):
    def __len__(self):
        raise RuntimeError("this result will not say its length")


def lying_list(items):
    """A list whose len() raises: it fails in the runtime, after user code returned."""
    return _Lying(items)
