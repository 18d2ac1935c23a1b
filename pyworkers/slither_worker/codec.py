"""Wire codec: JSON plus raw byte attachments (see engine/codec.h).

Byte strings travel in the frame's attachment section and appear in the JSON as
{"\\u0000b": index}. So that no dict can pass for that marker, a dict key that
starts with NUL gets one more NUL in front on the wire, and the reader takes one
off. NaN and the infinities use Python's json tokens.
"""
import io
import json
import pickle

BYTES_KEY = "\x00b"

_loads = json.loads
_encoder_plain = json.JSONEncoder(separators=(",", ":"), allow_nan=True).encode


def split_attachments(att):
    blobs = []
    off, n = 0, len(att)
    while off + 4 <= n:
        ln = int.from_bytes(att[off:off + 4], "little")
        blobs.append(bytes(att[off + 4:off + 4 + ln]))
        off += 4 + ln
    return blobs


_NUL_ESC = b"\\u0000"


def _unescape_keys(d):
    if any(k[:1] == "\x00" for k in d):
        return {(k[1:] if k[:1] == "\x00" else k): v for k, v in d.items()}
    return d


def decode(data, att):
    if not att:
        if _NUL_ESC not in data:  # no key can start with NUL: the fast path
            return _loads(data)
        return _loads(data, object_hook=_unescape_keys)
    blobs = split_attachments(att)

    def hook(d):
        if len(d) == 1 and BYTES_KEY in d:
            return blobs[d[BYTES_KEY]]
        return _unescape_keys(d)

    return _loads(data, object_hook=hook)


def _escape_keys(obj):
    """obj with one more NUL before every dict key that starts with NUL."""
    if isinstance(obj, dict):
        return {("\x00" + k if isinstance(k, str) and k[:1] == "\x00" else k): _escape_keys(v)
                for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_escape_keys(v) for v in obj]
    return obj


def _default(blobs):
    def default(o):
        if isinstance(o, (bytes, bytearray, memoryview)):
            blobs.append(bytes(o))
            return {BYTES_KEY: len(blobs) - 1}
        tolist = getattr(o, "tolist", None)  # numpy arrays and scalars
        if tolist is not None:
            return _escape_keys(tolist())
        raise TypeError(f"cannot encode a value of type {type(o).__name__}")
    return default


def encode(obj):
    """Returns (json_bytes, attachment_bytes)."""
    try:
        # Fast path: plain JSON values, no hook.
        text = _encoder_plain(obj)
        if "\\u0000" not in text:
            return text.encode("ascii"), b""
        obj = _escape_keys(obj)  # a NUL somewhere: maybe at the start of a key
        return _encoder_plain(obj).encode("ascii"), b""
    except TypeError:
        pass
    blobs = []
    text = json.dumps(_escape_keys(obj), separators=(",", ":"), allow_nan=True,
                      default=_default(blobs))
    data = text.encode("ascii")
    if not blobs:
        return data, b""
    att = b"".join(len(b).to_bytes(4, "little") + b for b in blobs)
    return data, att


# Pickle: the engine writes a plain-value subset of pickle (engine/codec.c) and
# reads one back. Python's C pickler and unpickler are several times faster than
# json for numbers and short strings. Only plain values go this way: anything that
# would need a class to rebuild (numpy arrays, custom objects) makes dumps_pickle
# return None, and the JSON path handles it (numpy via tolist) or names it in a
# clear error.

loads_pickle = pickle.loads


class _NotPlain(Exception):
    pass


class _PlainPickler(pickle.Pickler):
    def reducer_override(self, obj):
        raise _NotPlain(type(obj).__name__)


_PLAIN = (int, float, str, bytes, bool, type(None))


def dumps_pickle(obj):
    # Lists of plain scalars (the common result) skip the checking pickler.
    if type(obj) is list and all(type(x) in _PLAIN for x in obj):
        return pickle.dumps(obj, protocol=5)
    buf = io.BytesIO()
    try:
        _PlainPickler(buf, protocol=5).dump(obj)
    except (_NotPlain, pickle.PicklingError, TypeError, RecursionError):
        return None
    # Sets pickle natively (the pickler never asks reducer_override about them);
    # the engine refuses them when it reads the result, naming the set.
    return buf.getvalue()
