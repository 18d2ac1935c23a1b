"""The worker's decoders on mutated bytes: a seeded fuzz loop with shrinking.

    python3 tests/fuzz/fuzz_py_decoders.py --seconds 60 [--seed N] [--corpus DIR]
    python3 tests/fuzz/fuzz_py_decoders.py --replay [--corpus DIR]

Targets, chosen by the prefix of each corpus file's name:
  codec-    codec.decode (JSON and attachments; 4-byte JSON length, JSON, section):
            a value or an Exception (the worker answers the call with a codec
            error); a value must encode and decode back equal.
  pickle-   store values (store._loads): a value or pickle.UnpicklingError.
  segment-  a table segment as a worker maps it (store._Table, then lookups of
            many keys, bag lists and sizes): a value or StoreCorrupt /
            UnpicklingError; never a read past the file, a hang or another error.
  dir-      a store directory (StoreReader._lookup_dir): a segment path of this
            store, KeyError or StoreCorrupt.
Mutations: bit flips, interesting bytes and words, inserts, deletes, splices. A
failing input is shrunk (bytes removed and zeroed while it still fails the same
way), written to the corpus as crash-<target>-<sha1>, and the seed is printed.
"""
import argparse
import hashlib
import math
import os
import pickle
import random
import struct
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "pyworkers"))
sys.setrecursionlimit(10000)
import importlib  # noqa: E402

codec = importlib.import_module("slither_worker.codec")
store = importlib.import_module("slither_worker.store")  # the module, not store()
P = importlib.import_module("slither_worker.protocol")

store.WAIT_S = 0.001  # a mutated seq left odd must not cost 5 s per input


class Finding(Exception):
    """The decoder broke its contract: how is what the shrinker keeps failing."""

    def __init__(self, how):
        super().__init__(how)
        self.how = how


def _same(a, b):
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


# ---- targets ----------------------------------------------------------------------

def t_codec(data, scratch):
    if len(data) < 4:
        return
    n = int.from_bytes(data[:4], "little") % (len(data) - 3)
    js, att = data[4:4 + n], data[4 + n:]
    try:
        v = codec.decode(js, att)
    except RecursionError:
        return  # deep nesting: the worker answers with a codec error
    except Exception:  # noqa: BLE001 - any Exception is answered as a codec error
        return
    try:
        js2, att2 = codec.encode(v)
    except (TypeError, ValueError, RecursionError) as e:
        # a decoded dict may hold keys JSON cannot write back the same way: an
        # integer-looking key stays a str, so nothing here should fail
        raise Finding(f"a decoded value does not encode: {type(e).__name__}: {e}")
    v2 = codec.decode(js2, att2)
    if not _same(v, v2):
        raise Finding("a decoded value changed on its round trip")


def t_pickle(data, scratch):
    try:
        store._loads(data)
    except pickle.UnpicklingError:
        return
    except BaseException as e:  # noqa: BLE001 - the finding
        raise Finding(f"store value raised {type(e).__name__}")


def _private_file(scratch, name, data):
    path = os.path.join(scratch, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(fd, data)
    os.close(fd)
    return path


_KEYS = [store._key(k) for k in ("user:1", 42, "list", 1, 2, "z", "k", 7, "absent", 3.5)]
_READER_OK = (store.StoreCorrupt, pickle.UnpicklingError, TimeoutError)


def t_segment(data, scratch):
    path = _private_file(scratch, "slither.fuzz.seg", data)
    r = store.StoreReader.__new__(store.StoreReader)
    r.name = "fuzz"
    try:
        t = store._Table(path)
        for kb in _KEYS:
            vw = r._find(t, kb)
            if vw:
                r._values(t, vw)
        store._U64.unpack_from(t.mm, P.SEG_H_COUNT)
    except _READER_OK:
        return
    except BaseException as e:  # noqa: BLE001 - the finding
        raise Finding(f"segment reader raised {type(e).__name__}")


def t_dir(data, scratch):
    path = _private_file(scratch, "slither.fuzz.dir", data)
    r = store.StoreReader.__new__(store.StoreReader)
    r.name = "fuzz"
    r.dir_path = path
    try:
        r.dir = store._open_private(path)
        if len(r.dir) < P.DIR_HDR or store._U32.unpack_from(r.dir, 0)[0] != P.DIR_MAGIC:
            return
        for table in ("s", "o", "b", "none"):
            try:
                got = r._lookup_dir(table)
            except KeyError:
                continue
            if not got.startswith(path + "."):
                raise Finding(f"directory lookup gave a foreign path {got!r}")
    except (store.StoreCorrupt, TimeoutError):
        return
    except Finding:
        raise
    except BaseException as e:  # noqa: BLE001 - the finding
        raise Finding(f"directory reader raised {type(e).__name__}")


def stale_segment(data, scratch):
    """Why the reader refuses a segment seed outright (its magic or header, as after
    a layout change), or None when it maps it as a table."""
    path = _private_file(scratch, "slither.fuzz.seg", data)
    try:
        store._Table(path)
    except store.StoreCorrupt as e:
        return str(e)
    return None


TARGETS = {"codec": t_codec, "pickle": t_pickle, "segment": t_segment, "dir": t_dir}


def load_corpus(corpus, scratch):
    """{target: [inputs]}; directory inputs name their own store's files, so their
    paths are rewritten to the scratch file the dir target reads (keeping the
    bytes after the path's second-last dot, where a finding's bytes are)."""
    out = {t: [] for t in TARGETS}
    for name in sorted(os.listdir(corpus)):
        target = name.split("-", 1)[0]
        if name.startswith("crash-"):
            target = name.split("-")[1]
        if target not in TARGETS:
            continue
        with open(os.path.join(corpus, name), "rb") as f:
            data = f.read()
        if target == "dir":
            data = _retarget_dir(data, os.path.join(scratch, "slither.fuzz.dir"))
        out[target].append((name, data))
    return out


def _retarget_dir(data, path):
    d = bytearray(data)
    if len(d) < P.DIR_HDR:
        return data
    n = struct.unpack_from("<I", d, P.DIR_H_NTABLES)[0]
    for i in range(min(n, (len(d) - P.DIR_HDR) // P.DIR_ENTRY)):
        off = P.DIR_HDR + i * P.DIR_ENTRY + P.DIR_E_PATH
        old = bytes(d[off:off + P.SEG_PATH_MAX]).split(b"\0", 1)[0]
        tail = old[old.rfind(b".", 0, old.rfind(b".")):]  # .<index>.<gen>
        new = (path.encode() + tail)[:P.SEG_PATH_MAX - 1]
        d[off:off + P.SEG_PATH_MAX] = new + bytes(P.SEG_PATH_MAX - len(new))
    return bytes(d)


# ---- mutation and shrinking -------------------------------------------------------

_WORDS = (0, 1, 2, 3, 7, 8, 63, 64, 127, 128, 255, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0x80000000,
          0xFFFFFFFF, 0x100000000, 0xFFFFFFFFFFFFFFFF)


def mutate(rng, data, pool):
    d = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(7)
        if op == 0 and d:
            i = rng.randrange(len(d))
            d[i] ^= 1 << rng.randrange(8)
        elif op == 1 and d:
            d[rng.randrange(len(d))] = rng.choice((0, 1, 0x7F, 0x80, 0xFF, ord('"'), ord("\\")))
        elif op == 2 and len(d) >= 8:
            w = rng.choice(_WORDS)
            size = rng.choice((4, 8))
            i = rng.randrange(0, len(d) - size + 1) & ~3
            d[i:i + size] = (w & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
        elif op == 3:
            i = rng.randrange(len(d) + 1)
            d[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 4 and d:
            i = rng.randrange(len(d))
            del d[i:i + rng.randint(1, 16)]
        elif op == 5:
            other = rng.choice(pool)
            if other:
                i, j = rng.randrange(len(d) + 1), rng.randrange(len(other))
                d[i:i + rng.randint(1, 32)] = other[j:j + rng.randint(1, 32)]
        elif op == 6 and d:
            del d[rng.randrange(len(d)):]
    return bytes(d)


def run(target, data, scratch):
    """None when the input keeps the contract, else the Finding's description."""
    try:
        TARGETS[target](data, scratch)
    except Finding as f:
        return f.how
    return None


def shrink(target, data, how, scratch):
    """Remove and zero bytes while the input still fails the same way."""
    best = data
    chunk = max(1, len(best) // 2)
    while chunk >= 1:
        i, progressed = 0, False
        while i < len(best):
            cand = best[:i] + best[i + chunk:]
            if run(target, cand, scratch) == how:
                best, progressed = cand, True
            else:
                i += chunk
        if not progressed:
            chunk //= 2
    for i in range(len(best)):
        if best[i]:
            cand = best[:i] + b"\0" + best[i + 1:]
            if run(target, cand, scratch) == how:
                best = cand
    return best


def report(target, data, how, corpus, scratch, seed):
    small = shrink(target, data, how, scratch)
    name = f"crash-{target}-{hashlib.sha1(small).hexdigest()}"
    with open(os.path.join(corpus, name), "wb") as f:
        f.write(small)
    print(f"FINDING in {target}: {how}\n  seed {seed}; shrunk from {len(data)} to "
          f"{len(small)} bytes, saved as {os.path.join(corpus, name)}\n"
          f"  bytes: {small[:400]!r}{'...' if len(small) > 400 else ''}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--corpus", default=os.path.join(HERE, "corpus", "py"))
    ap.add_argument("--replay", action="store_true", help="run each corpus input once")
    ap.add_argument("--runs", type=int, default=0, help="stop after this many inputs")
    ap.add_argument("--target", choices=sorted(TARGETS), action="append",
                    help="fuzz only this target (repeatable)")
    a = ap.parse_args()
    seed = a.seed if a.seed is not None else int.from_bytes(os.urandom(4), "little")
    with tempfile.TemporaryDirectory() as scratch:
        corpus = load_corpus(a.corpus, scratch)
        bad = 0
        count = 0
        for target, inputs in corpus.items():
            if not inputs:
                print(f"fuzz_py_decoders: no {target}- inputs in {a.corpus}")
                return 1
            for name, data in inputs:
                count += 1
                how = run(target, data, scratch)
                if how:
                    print(f"FINDING replaying {name}: {how}")
                    bad += 1
                elif target == "segment" and not name.startswith("crash-"):
                    stale = stale_segment(data, scratch)
                    if stale:
                        print(f"STALE seed {name}: the reader refuses it ({stale}); a seed "
                              "that fails the first check fuzzes nothing behind it")
                        bad += 1
        if a.replay or bad:
            print(f"replayed {count} inputs: {'clean' if not bad else f'{bad} failed'}")
            return 1 if bad else 0
        print(f"fuzz_py_decoders: seed {seed}")
        rng = random.Random(seed)
        pools = {t: [d for _, d in inputs] for t, inputs in corpus.items()}
        stats = {t: 0 for t in TARGETS}
        end = time.monotonic() + a.seconds
        targets = a.target or list(TARGETS)
        while time.monotonic() < end and not (a.runs and sum(stats.values()) >= a.runs):
            target = rng.choice(targets)
            pool = pools[target]
            data = mutate(rng, rng.choice(pool), pool)
            how = run(target, data, scratch)
            stats[target] += 1
            if how:
                report(target, data, how, a.corpus, scratch, seed)
                return 1
            if len(pool) < 400 and rng.random() < 0.02:
                pool.append(data)  # keep some mutants as parents: deeper mutations
        total = sum(stats.values())
        print(f"{total} inputs in {a.seconds:g} s, seed {seed} ("
              + ", ".join(f"{t} {n}" for t, n in stats.items()) + "), clean")
        return 0


if __name__ == "__main__":
    sys.exit(main())
