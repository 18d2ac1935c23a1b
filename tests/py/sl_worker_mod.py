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


class _Unprintable(Exception):
    def __str__(self):
        raise ValueError("this exception cannot be printed")


class _NotText(Exception):
    def __str__(self):
        return 42  # str() of it raises TypeError


def unprintable(items):
    """Raises an exception whose __str__ raises."""
    raise _Unprintable()


def not_text(items):
    """Raises an exception whose __str__ returns an int."""
    raise _NotText()


class _BadArray:
    """A numpy-like value whose tolist() fails, with an exception that cannot be
    printed either."""
    def __init__(self, exc):
        self.exc = exc

    def tolist(self):
        raise self.exc


def bad_tolist(items):
    return [_BadArray(_Unprintable()) for _ in items]


def interrupt_tolist(items):
    """tolist() raises a BaseException the codec does not catch."""
    return [_BadArray(KeyboardInterrupt()) for _ in items]
