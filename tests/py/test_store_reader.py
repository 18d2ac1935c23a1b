"""A worker's store reader when what it waits for never comes (#12 item 12).

slither_worker.store waits for a writer in the middle of a write and for a segment
file the store's directory names; it used to spin on them forever, so a writer that
died mid-write, or a segment file that someone removed, hung the worker at full CPU.
Now it gives up after store.WAIT_S seconds with TimeoutError naming what it waited
for, and waits without burning the CPU meanwhile.

Each reader runs in its own Python process with a timeout, so a reader that spins
forever fails the test instead of hanging it, and its CPU time is its own. The
missing segment is a real one: the engine makes a store (in a private directory,
through SLITHER_SHM_DIR) and the test removes a table's segment file. The stuck
writes are forged files laid out as the engine writes them, with an odd sequence
word, as a writer that died mid-write leaves it."""
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import textwrap
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
PYWORKERS = os.path.join(HERE, "..", "..", "pyworkers")
SLITHER = os.environ.get("SLITHER_BIN") or os.path.join(HERE, "..", "..", "build", "slither")
sys.path.insert(0, PYWORKERS)
from slither_worker import protocol as P  # noqa: E402

# The reader's give-up time in most cases here: small, so the test is quick.
WAIT = 0.5
# A reader that has not returned by then spins, whatever WAIT_S says.
HANG_S = 60

ENGINE = """
local slither = require("slither")
local st = assert(slither.store.start(slither.store.define{ name = "reader",
  tables = { { name = "t" }, { name = "u" } } }))
assert(st:put("t", "k", "in t"))
assert(st:put("u", "k", "in u"))
io.write("PREFIX ", slither.store.files_prefix(), "\\n")
io.stdout:flush()
io.read("*l") -- the test reads meanwhile
st:stop()
"""

READER = textwrap.dedent("""
    import importlib, json, sys, time
    sys.path.insert(0, sys.argv[1])
    store = importlib.import_module("slither_worker.store")  # the module, not store()
    if sys.argv[2] != "default":
        store.WAIT_S = float(sys.argv[2])
    name, op, table, key = sys.argv[3:7]
    t0, c0 = time.monotonic(), time.process_time()
    try:
        st = store.store(name)
        v = st.get(table, key) if op == "get" else st.get_many(table, [key])
        out = {"ok": v}
    except Exception as e:
        out = {"type": type(e).__name__, "message": str(e)}
    out["wall"] = time.monotonic() - t0
    out["cpu"] = time.process_time() - c0
    out["wait_s"] = store.WAIT_S
    print(json.dumps(out))
    """)


def read(env, wait, name, op, table, key="k"):
    """One read in a fresh Python process: its result, wall and CPU seconds."""
    try:
        r = subprocess.run([sys.executable, "-c", READER, PYWORKERS, str(wait), name, op, table,
                            key], capture_output=True, text=True, timeout=HANG_S, env=env)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the reader of {name}/{table} ({op}) still ran after {HANG_S} s: "
                             "it spins instead of giving up") from None
    if r.returncode != 0 or not r.stdout.strip():
        raise AssertionError(f"the reader failed ({r.returncode}): {r.stderr}")
    return json.loads(r.stdout.splitlines()[-1])


def reader_env(shm, pid, token):
    return dict(os.environ, SLITHER_SHM_DIR=shm, SLITHER_PARENT_PID=str(pid),
                SLITHER_STORE_TOKEN=token)


def private_file(path, data):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def forged_store(dir_path, table, dir_seq, seg_seq):
    """A store directory and its one table's segment, as the engine lays them out,
    with the given sequence words (odd: a write is running). Returns the segment's path."""
    seg_path = f"{dir_path}.0.1"
    d = bytearray(P.DIR_HDR + P.DIR_ENTRY)
    struct.pack_into("<II", d, P.DIR_H_MAGIC, P.DIR_MAGIC, 1)
    struct.pack_into("<Q", d, P.DIR_H_SEQ, dir_seq)
    d[P.DIR_HDR + P.DIR_E_NAME:P.DIR_HDR + P.DIR_E_NAME + len(table)] = table.encode()
    p = seg_path.encode()
    d[P.DIR_HDR + P.DIR_E_PATH:P.DIR_HDR + P.DIR_E_PATH + len(p)] = p
    cap, heap = 64, 4096
    heap_off = P.SEG_HDR + cap * P.SEG_SLOT
    g = bytearray(heap_off + heap)
    struct.pack_into("<II", g, P.SEG_H_MAGIC, P.SEG_MAGIC, P.TABLE_SET)
    struct.pack_into("<Q", g, P.SEG_H_SEQ, seg_seq)
    struct.pack_into("<I", g, P.SEG_H_CAP, cap)
    struct.pack_into("<QQQ", g, P.SEG_H_HEAP_OFF, heap_off, heap, 8)
    private_file(dir_path, bytes(d))
    private_file(seg_path, bytes(g))
    return seg_path


class StoreReaderGivesUp(unittest.TestCase):
    def assert_gave_up(self, r, wait_s, *named):
        """r is a TimeoutError naming each of `named`, raised after about wait_s of
        waiting, with the CPU mostly idle meanwhile."""
        self.assertEqual(r.get("type"), "TimeoutError", r)
        for what in named:
            self.assertIn(what, r["message"])
        self.assertIn(f"for {wait_s:g} s", r["message"])
        self.assertGreaterEqual(r["wall"], wait_s * 0.9, r)
        self.assertLess(r["wall"], wait_s + 10, r)
        self.assertLess(r["cpu"], 0.5 * r["wall"],
                        f"the reader used {r['cpu']:.2f} s of CPU in {r['wall']:.2f} s of "
                        "waiting: it spins")

    def test_a_removed_segment_file_gives_up_naming_it(self):
        shm = tempfile.mkdtemp()
        engine = subprocess.Popen([SLITHER, "-e", ENGINE], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env=dict(os.environ, SLITHER_SHM_DIR=shm, SLITHER_LOG="warn"))
        try:
            line = engine.stdout.readline()
            m = re.match(r"PREFIX (.*/slither\.(\d+)\.([0-9a-f]+)\.)$", line.strip())
            if not m:
                engine.kill()
                self.fail(f"the engine did not start: {line}{engine.communicate()[1]}")
            prefix, pid, token = m.group(1), int(m.group(2)), m.group(3)
            env = reader_env(shm, pid, token)
            segs = sorted(f for f in os.listdir(shm) if f.startswith(
                os.path.basename(prefix) + "reader.0."))
            self.assertEqual(len(segs), 1, os.listdir(shm))
            seg = os.path.join(shm, segs[0])
            self.assertEqual(read(env, WAIT, "reader", "get", "t").get("ok"), "in t")
            os.unlink(seg)
            # a reader that has not mapped it yet: get, and get_many
            self.assert_gave_up(read(env, WAIT, "reader", "get", "t"), WAIT,
                                "store 'reader'", "table 't'", seg, "stayed missing")
            self.assert_gave_up(read(env, WAIT, "reader", "get_many", "t"), WAIT, seg)
            # the other table reads on
            self.assertEqual(read(env, WAIT, "reader", "get", "u").get("ok"), "in u")
            # and the default: a worker gives up after store.WAIT_S as shipped
            r = read(env, "default", "reader", "get", "t")
            self.assertGreater(r["wait_s"], 0)
            self.assert_gave_up(r, r["wait_s"], seg)
            engine.communicate("done\n", timeout=60)
            self.assertEqual(engine.returncode, 0)
            self.assertEqual(os.listdir(shm), [], "the store left files behind")
        finally:
            if engine.poll() is None:
                engine.kill()
                engine.wait()
            shutil.rmtree(shm, ignore_errors=True)

    def forged(self, dir_seq, seg_seq):
        shm = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, shm, True)
        pid, token = 4000000, "0123456789abcdef"  # no engine: nobody will finish the write
        dir_path = f"{shm}/slither.{pid}.{token}.stuck"
        seg = forged_store(dir_path, "t", dir_seq, seg_seq)
        return reader_env(shm, pid, token), dir_path, seg

    def test_a_directory_left_mid_write_gives_up(self):
        env, dir_path, _ = self.forged(dir_seq=1, seg_seq=0)
        self.assert_gave_up(read(env, WAIT, "stuck", "get", "t"), WAIT,
                            "store 'stuck'", "directory stayed mid-write")

    def test_a_table_left_mid_write_gives_up_in_get_many(self):
        env, _, seg = self.forged(dir_seq=2, seg_seq=3)
        # a single get reads no sequence word: it finds the key absent at once
        self.assertIn("ok", read(env, WAIT, "stuck", "get", "t"))
        self.assert_gave_up(read(env, WAIT, "stuck", "get_many", "t"), WAIT,
                            "store 'stuck'", "table 't' stayed mid-write")


if __name__ == "__main__":
    unittest.main()
