"""Python functions the store specs call: direct reads of the engine's store
(slither_worker.store) and calls of the engine's views (slither_worker.view)."""
import time

import slither_worker


def get(items):
    """[store, table, key] -> the value (None / [] when absent)."""
    return [slither_worker.store(s).get(t, k) for s, t, k in items]


def get_many(items):
    """[store, table, keys] -> the list of values."""
    return [slither_worker.store(s).get_many(t, keys) for s, t, keys in items]


def size(items):
    return [slither_worker.store(s).size(t) for s, t in items]


def try_store(items):
    """[store, table, key] -> {"ok": value} or {"type": exception type, "message": str}."""
    out = []
    for s, t, k in items:
        try:
            out.append({"ok": slither_worker.store(s).get(t, k)})
        except Exception as e:  # the spec checks the type and the message
            out.append({"type": type(e).__name__, "message": str(e)})
    return out


def call_view(items):
    """[view name, args] -> {"ok": true, "value": v} or {"ok": false, "type", "message"}."""
    out = []
    for name, args in items:
        try:
            out.append({"ok": True, "value": slither_worker.view(name, args)})
        except slither_worker.ViewError as e:
            out.append({"ok": False, "type": type(e).__name__, "message": str(e)})
    return out


def forged_view(items):
    """[view name, args, call ids]: the view asked for as each of those calls, as a
    hostile function would, by sending another call's id; -> own id, then a result
    per id as call_view gives, as one result."""
    from slither_worker import runtime
    own = runtime._local.call_id
    out = [own]
    name, args, ids = items[0]
    try:
        for cid in ids:
            runtime._local.call_id = own if cid == "own" else cid
            out.extend(call_view([(name, args)]))
    finally:
        runtime._local.call_id = own
    return [out]


def view_then_store(items):
    """[view name, args, store, table, key]: a view call, then a direct read, in one call."""
    out = []
    for name, args, s, t, k in items:
        try:
            v = slither_worker.view(name, args)
        except slither_worker.ViewError as e:
            v = "ViewError: " + str(e)
        out.append([v, slither_worker.store(s).get(t, k)])
    return out


def consistent_reader(items):
    """[store, table, keys, seconds, min_iters]: get_many(keys) in a loop until both
    the time and the iteration count are reached. Every read must give one value
    for all keys (not None). Returns [iterations, bad reads, distinct values seen,
    the first bad read or None, the largest value seen]."""
    out = []
    for name, table, keys, seconds, min_iters in items:
        st = slither_worker.store(name)
        deadline = time.monotonic() + seconds
        n = bad = 0
        seen = set()
        first = None
        top = None
        while n < min_iters or time.monotonic() < deadline:
            vals = st.get_many(table, keys)
            n += 1
            v0 = vals[0]
            if v0 is None or any(v != v0 for v in vals):
                bad += 1
                if first is None:
                    first = repr(vals)
                continue
            seen.add(repr(v0))
            if isinstance(v0, (int, float)) and (top is None or v0 > top):
                top = v0
        out.append([n, bad, len(seen), first, top])
    return out


def pattern_reader(items):
    """[store, table, keys, seconds]: single get() of values written as
    {"n": len, "s": "x" * len} (the key's length pattern); every read must be
    whole. Returns [iterations, bad reads, first bad read or None]."""
    out = []
    for name, table, keys, seconds in items:
        st = slither_worker.store(name)
        deadline = time.monotonic() + seconds
        n = bad = 0
        first = None
        while time.monotonic() < deadline:
            for k in keys:
                v = st.get(table, k)
                n += 1
                if v is None:
                    continue
                if not isinstance(v, dict) or len(v.get("s", "")) != v.get("n") or \
                        v["s"] != v["s"][:1] * v["n"]:
                    bad += 1
                    if first is None:
                        first = repr(v)[:200]
        out.append([n, bad, first])
    return out


def sleep_then(items):
    """[seconds, value] -> value, after the sleep."""
    out = []
    for secs, value in items:
        time.sleep(secs)
        out.append(value)
    return out


def bag_prefix_reader(items):
    """[store, table, key, n, seconds]: get(key) in a loop, of a bag whose values are
    put as 1, 2, 3, ...: every read must be [1 .. m] for an m that never goes back.
    Stops once a read holds n values, or when the time is up. Returns [reads, bad
    reads, the longest read, the first bad read or None]."""
    out = []
    for name, table, key, n, seconds in items:
        st = slither_worker.store(name)
        deadline = time.monotonic() + seconds
        reads = bad = longest = 0
        first = None
        while longest < n and time.monotonic() < deadline:
            vals = st.get(table, key)
            reads += 1
            m = len(vals)
            if m < longest or vals != list(range(1, m + 1)):
                bad += 1
                if first is None:
                    first = f"{m} values after {longest}: {vals[:5]!r}...{vals[-5:]!r}"
            longest = max(longest, m)
        out.append([reads, bad, longest, first])
    return out


def bag_summary(items):
    """[store, table, key] -> [values, whether they are 1 .. values in order, size]:
    a big bag's values checked here rather than sent back."""
    out = []
    for name, table, key in items:
        st = slither_worker.store(name)
        vals = st.get(table, key)
        out.append([len(vals), vals == list(range(1, len(vals) + 1)), st.size(table)])
    return out
