"""Python half of the codec property test (tests/lua/codec_property_spec.lua).

Both halves describe a value in one canonical text, so a value can be checked on
the far side of the wire without trusting the codec that carried it:

    n  None / slither.null        T F  booleans
    number: "nan", or C's %.17g of the double (an int as the double it becomes)
    s<hex>  a str (UTF-8; lone surrogates as surrogatepass)   b<hex>  bytes
    [a,b]   a list or tuple       {k:v,...}  a dict, items sorted by their text

Lua to Python: `describe` returns what Python received. Python to Lua: `gen` builds
values from a seed and says what Lua must see (`lua_view`): Lua cannot tell str
from bytes, so both are s<hex> there. A value is rebuilt from a spec (a tagged
tree, as JSON text of ASCII only) so that Lua can shrink a failing value by asking
for `shrink` candidates and `build`-ing them.
"""
import json
import math
import random
import struct


def num(x):
    x = float(x)
    if math.isnan(x):
        return "nan"
    return "%.17g" % x


def _int_num(i):
    try:
        return num(i)
    except OverflowError:
        return "inf" if i > 0 else "-inf"


def _hex(b):
    return bytes(b).hex()


def _sbytes(s):
    return s.encode("utf-8", "surrogatepass")


def desc(v, lua_view=False):
    """The canonical text of v, as Python has it or (lua_view) as Lua will."""
    if v is None:
        return "n"
    if v is True:
        return "T"
    if v is False:
        return "F"
    if isinstance(v, int):
        return _int_num(v)
    if isinstance(v, float):
        return num(v)
    if isinstance(v, str):
        if lua_view:  # a surrogate pair arrives as the character it encodes
            v = v.encode("utf-16-le", "surrogatepass").decode("utf-16-le")
        return "s" + _hex(_sbytes(v))
    if isinstance(v, (bytes, bytearray)):
        return ("s" if lua_view else "b") + _hex(v)
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(desc(x, lua_view) for x in v) + "]"
    if isinstance(v, dict):
        items = sorted(desc(k, lua_view) + ":" + desc(x, lua_view) for k, x in v.items())
        return "{" + ",".join(items) + "}"
    raise TypeError(f"no description for {type(v).__name__}")


def describe(items):
    """Lua to Python: the text of each payload as received."""
    return [desc(v) for v in items]


def echo(items):
    return list(items)


# ---- values built in Python ---------------------------------------------------

# Keys and strings that have tripped codecs: the attachment marker, escapes, NULs.
_SPECIAL_STR = ["", "\x00", "\x00b", "\x00\x00b", "\\", '"', "\\u0000", "\u2028",
                "\ud83d\ude00", "a\x00b", "\x7f", "\ufeff", "\U0010ffff"]


def _lone_surrogates_out(s):
    """s with its lone surrogates made '?': pairs stay (they cross as the character
    they encode), lone ones cannot cross."""
    out, i, n = [], 0, len(s)
    while i < n:
        c = ord(s[i])
        if 0xD800 <= c <= 0xDBFF and i + 1 < n and 0xDC00 <= ord(s[i + 1]) <= 0xDFFF:
            out.append(s[i:i + 2])
            i += 2
            continue
        out.append("?" if 0xD800 <= c <= 0xDFFF else s[i])
        i += 1
    return "".join(out)


def _rand_str(r):
    k = r.random()
    if k < 0.15:
        return r.choice(_SPECIAL_STR)
    n = r.choice((0, 1, 2, 3, 5, 8, 16, 40, 120))
    out = []
    for _ in range(n):
        c = r.random()
        if c < 0.5:
            out.append(chr(r.randrange(0, 0x80)))
        elif c < 0.7:
            out.append(chr(r.randrange(0x80, 0x800)))
        elif c < 0.85:
            cp = r.randrange(0x800, 0x10000)
            out.append(chr(cp))  # surrogates included on purpose
        else:
            out.append(chr(r.randrange(0x10000, 0x110000)))
    return _lone_surrogates_out("".join(out))


def _rand_int(r):
    k = r.random()
    if k < 0.4:
        b = r.randrange(0, 54)
        v = (1 << b) + r.choice((-1, 0, 1))
    elif k < 0.8:
        v = r.randrange(0, 1 << r.randrange(1, 54))
    elif k < 0.95:
        v = r.randrange(0, 1 << r.randrange(54, 80))  # past 2^53: the nearest double
    else:
        v = r.choice((0, 1, 2 ** 53, 2 ** 63 - 1, 2 ** 63, 2 ** 64, 10 ** 30, 2 ** 1023,
                      2 ** 1024, 10 ** 400))
    return -v if r.random() < 0.5 else v


_SPECIAL_FLOAT = [0.0, -0.0, math.inf, -math.inf, math.nan, 5e-324, -5e-324,
                  2.2250738585072014e-308, 2.225073858507201e-308, 1.7976931348623157e308,
                  -1.7976931348623157e308, 0.1, 1e15, 1e16, 1e22, 9007199254740993.0,
                  4503599627370495.5, 1.5, -2.5]


def _rand_float(r):
    k = r.random()
    if k < 0.3:
        return r.choice(_SPECIAL_FLOAT)
    if k < 0.7:
        return struct.unpack("<d", struct.pack("<Q", r.getrandbits(64)))[0]
    if k < 0.85:  # subnormals
        return struct.unpack("<d", struct.pack("<Q", r.getrandbits(52)))[0] * r.choice((1, -1))
    return r.uniform(-1e6, 1e6)


def gen_value(r, depth):
    k = r.random()
    if depth <= 0 or k < 0.55:
        c = r.random()
        if c < 0.05:
            return None
        if c < 0.1:
            return r.random() < 0.5
        if c < 0.4:
            return _rand_int(r)
        if c < 0.6:
            return _rand_float(r)
        if c < 0.85:
            return _rand_str(r)
        if c < 0.95:
            return r.randbytes(r.choice((0, 1, 3, 16, 200)))
        return bytearray(r.randbytes(r.choice((0, 2, 9))))
    if k < 0.58:  # a deep chain, up to the documented nesting limit
        n = r.randrange(1, depth + 1)
        v = gen_value(r, 0)
        for _ in range(n):
            v = [v] if r.random() < 0.5 else {"k": v}
        return v
    n = r.choice((0, 0, 1, 2, 3, 5, 10))
    if k < 0.75:
        return [gen_value(r, depth - 1) for _ in range(n)]
    if k < 0.8:
        return tuple(gen_value(r, depth - 1) for _ in range(n))
    return {_rand_str(r): gen_value(r, depth - 1) for _ in range(n)}


# ---- specs: a value as a tagged tree ------------------------------------------

def to_spec(v):
    if v is None:
        return ["n"]
    if v is True or v is False:
        return ["T" if v else "F"]
    if isinstance(v, int):
        return ["i", str(v)]
    if isinstance(v, float):
        return ["f", v.hex()]
    if isinstance(v, str):
        return ["s", _hex(_sbytes(v))]
    if isinstance(v, bytearray):
        return ["ba", _hex(v)]
    if isinstance(v, bytes):
        return ["b", _hex(v)]
    if isinstance(v, tuple):
        return ["t", [to_spec(x) for x in v]]
    if isinstance(v, list):
        return ["l", [to_spec(x) for x in v]]
    return ["d", [[to_spec(k), to_spec(x)] for k, x in v.items()]]


def from_spec(t):
    tag = t[0]
    if tag == "n":
        return None
    if tag in ("T", "F"):
        return tag == "T"
    if tag == "i":
        return int(t[1])
    if tag == "f":
        return float.fromhex(t[1])
    if tag == "s":
        return bytes.fromhex(t[1]).decode("utf-8", "surrogatepass")
    if tag == "b":
        return bytes.fromhex(t[1])
    if tag == "ba":
        return bytearray.fromhex(t[1])
    if tag == "t":
        return tuple(from_spec(x) for x in t[1])
    if tag == "l":
        return [from_spec(x) for x in t[1]]
    return {from_spec(k): from_spec(x) for k, x in t[1]}


def _candidates(t):
    """Smaller specs than t: its children, t with one part removed or simplified."""
    tag = t[0]
    out = []
    if tag in ("l", "t", "d"):
        kids = t[1]
        for kid in kids:
            out.append(kid[1] if tag == "d" else kid)
        if len(kids) > 1:
            out.append([tag, kids[: len(kids) // 2]])
            out.append([tag, kids[len(kids) // 2:]])
        for i in range(len(kids)):
            out.append([tag, kids[:i] + kids[i + 1:]])
        for i, kid in enumerate(kids):
            sub = kid[1] if tag == "d" else kid
            for c in _candidates(sub)[:6]:
                new = list(kids)
                new[i] = [kid[0], c] if tag == "d" else c
                out.append([tag, new])
        if tag == "d":
            for i, (k, x) in enumerate(kids):
                for c in _candidates(k)[:3]:
                    new = list(kids)
                    new[i] = [c, x]
                    out.append([tag, new])
        if tag == "t":
            out.append(["l", kids])
    elif tag == "i":
        v = int(t[1])
        for c in (0, 1, v // 2, v + 1 if v < 0 else v - 1):
            if abs(c) < abs(v):
                out.append(["i", str(c)])
    elif tag == "f":
        v = float.fromhex(t[1])
        for c in (0.0, 1.0, math.trunc(v) if math.isfinite(v) else 0.0, v / 2):
            if c != v and not math.isnan(c):
                out.append(["f", float(c).hex()])
    elif tag in ("s", "b", "ba"):
        raw = bytes.fromhex(t[1])
        if tag == "s":
            s = raw.decode("utf-8", "surrogatepass")
            parts = [s[: len(s) // 2], s[len(s) // 2:]] + [s[:i] + s[i + 1:] for i in range(min(len(s), 12))]
            for p in parts:
                if len(p) < len(s):
                    out.append(["s", _hex(_sbytes(p))])
        else:
            parts = [raw[: len(raw) // 2], raw[len(raw) // 2:]] + [raw[:i] + raw[i + 1:] for i in range(min(len(raw), 12))]
            for p in parts:
                if len(p) < len(raw):
                    out.append([tag, _hex(p)])
        if tag == "ba":
            out.append(["b", t[1]])
    elif tag in ("T", "F"):
        out.append(["n"])
    return out


MAX_DEPTH = 150  # nesting the generator builds; the codec's limit is documented


def _values(seed, first, count, depth):
    for i in range(first, first + count):
        yield gen_value(random.Random(f"{seed}:{i}"), min(depth, MAX_DEPTH))


def gen(items):
    """items: [seed, first, count, depth] each; returns, per item, a list of
    [value, lua_view] pairs for values first..first+count-1."""
    return [[[v, desc(v, lua_view=True)] for v in _values(*item)] for item in items]


def specs(items):
    """items: [seed, first, count, depth] each; returns the specs of the values gen
    builds (only a failing run needs them, to shrink)."""
    return [[json.dumps(to_spec(v)) for v in _values(*item)] for item in items]


def build(items):
    """items: specs; returns [value, lua_view] each."""
    out = []
    for s in items:
        v = from_spec(json.loads(s))
        out.append([v, desc(v, lua_view=True)])
    return out


def shrink(items):
    """items: specs; returns the list of smaller candidate specs of each."""
    return [[json.dumps(c) for c in _candidates(json.loads(s))] for s in items]


def chain(items):
    """A list nested n deep around 1, for each n."""
    out = []
    for n in items:
        v = 1
        for _ in range(n):
            v = [v]
        out.append(v)
    return out


# ---- the store and view paths ------------------------------------------------

def describe_store(items):
    """[store, table, keys] -> the text of each value read from the shared mapping."""
    import slither_worker
    return [[desc(v) for v in slither_worker.store(st).get_many(t, keys)] for st, t, keys in items]


def describe_view(items):
    """[view, keys] -> the text of what the view returned for each key."""
    import slither_worker
    return [[desc(slither_worker.view(name, k)) for k in keys] for name, keys in items]


def send_view(items):
    """[view, seed, first, count, depth] -> [what Lua saw, what it should see] per
    value built here and passed to the view as its argument."""
    import slither_worker
    out = []
    for name, seed, first, count, depth in items:
        pairs = []
        for v in _values(seed, first, count, depth):
            pairs.append([slither_worker.view(name, v), desc(v, lua_view=True),
                          json.dumps(to_spec(v))])
        out.append(pairs)
    return out


# ---- values that cannot cross -------------------------------------------------

class Opaque:
    pass


def bad_result(items):
    """Returns, for each item, a value Python cannot send: the item names which."""
    table = {"set": lambda: {1, 2}, "frozenset": lambda: frozenset([1]),
             "object": Opaque, "complex": lambda: 1j, "function": lambda: len,
             "lone surrogate": lambda: "ab\udc80"}
    return [[1, {"x": table[name]()}] if name in table else name for name in items]

