"""Wire codec: JSON plus raw byte attachments (see engine/codec.h).

Byte strings travel in the frame's attachment section and appear in the JSON as
{"\\u0000b": index}. NaN and the infinities use Python's json tokens.
"""
import json

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


def decode(data, att):
    if not att:
        return _loads(data)
    blobs = split_attachments(att)

    def hook(d):
        if len(d) == 1 and BYTES_KEY in d:
            return blobs[d[BYTES_KEY]]
        return d

    return _loads(data, object_hook=hook)


def encode(obj):
    """Returns (json_bytes, attachment_bytes)."""
    try:
        # Fast path: plain JSON values, no hook.
        return _encoder_plain(obj).encode("ascii"), b""
    except TypeError:
        pass
    blobs = []

    def default(o):
        if isinstance(o, (bytes, bytearray, memoryview)):
            blobs.append(bytes(o))
            return {BYTES_KEY: len(blobs) - 1}
        tolist = getattr(o, "tolist", None)  # numpy arrays and scalars
        if tolist is not None:
            return tolist()
        raise TypeError(f"cannot encode a value of type {type(o).__name__}")

    text = json.dumps(obj, separators=(",", ":"), allow_nan=True, default=default)
    data = text.encode("ascii")
    if not blobs:
        return data, b""
    att = b"".join(len(b).to_bytes(4, "little") + b for b in blobs)
    return data, att
