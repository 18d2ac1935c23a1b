"""The store's files against another local user (run as root, as CI is: the
attacker is uid 65534 through setpriv).

The engine names its store files /dev/shm/slither.<pid>.<token>.<store>[...] with
a random token, creates each with O_EXCL | O_NOFOLLOW and mode 0600, and workers
map only private files of their own user and decode store values with an
unpickler that refuses every global. The attacker here plants what it can before
the engine starts its stores: files at the names the engine used to take, files
and symlinks at the new names (the token is visible in /dev/shm once the engine
runs), the next segment generations of a table, and a whole forged store whose
value would run a command if a worker unpickled it."""
import json
import os
import pickle
import shutil
import stat
import struct
import subprocess
import sys
import tempfile
import textwrap
import unittest

import needs
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
SLITHER = os.environ.get("SLITHER_BIN") or os.path.join(HERE, "..", "..", "build", "slither")
sys.path.insert(0, os.path.join(HERE, "..", "..", "pyworkers"))
from slither_worker import protocol as P  # noqa: E402

ATTACKER = 65534


need_root = needs.need_root("acting as another user", "setpriv")


def as_attacker(code, *args):
    """Run Python code as uid/gid 65534 with no groups; returns its stdout."""
    r = subprocess.run(["setpriv", f"--reuid={ATTACKER}", f"--regid={ATTACKER}",
                        "--clear-groups", "--", sys.executable, "-c", code, *args],
                       capture_output=True, text=True, timeout=30)
    if r.returncode:
        raise AssertionError(f"the attacker's step failed: {r.stderr}")
    return r.stdout


class Evil:
    """Unpickling this runs a shell command."""

    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


def forged_store(store_path, table, key, value):
    """The bytes of a store directory and of one segment, laid out as the engine
    writes them, holding `key` -> `value` (raw pickle bytes)."""
    seg_path = f"{store_path}.0.1"
    d = bytearray(P.DIR_HDR + P.DIR_ENTRY)
    struct.pack_into("<II", d, P.DIR_H_MAGIC, P.DIR_MAGIC, 1)
    d[P.DIR_HDR + P.DIR_E_NAME:P.DIR_HDR + P.DIR_E_NAME + len(table)] = table.encode()
    p = seg_path.encode()
    d[P.DIR_HDR + P.DIR_E_PATH:P.DIR_HDR + P.DIR_E_PATH + len(p)] = p
    cap = 64
    heap_off = P.SEG_HDR + cap * P.SEG_SLOT
    kb = b"s" + key.encode()
    heap = bytearray(8) + kb + value
    g = bytearray(heap_off) + heap + bytearray(64)
    struct.pack_into("<II", g, P.SEG_H_MAGIC, P.SEG_MAGIC, P.TABLE_SET)
    struct.pack_into("<I", g, P.SEG_H_CAP, cap)
    struct.pack_into("<Q", g, P.SEG_H_COUNT, 1)
    struct.pack_into("<QQQ", g, P.SEG_H_HEAP_OFF, heap_off, len(heap) + 64, len(heap))
    h = zlib.crc32(kb)
    struct.pack_into("<QQQ", g, P.SEG_HDR + (h & (cap - 1)) * P.SEG_SLOT, h,
                     (8 << 32) | len(kb), ((8 + len(kb)) << 32) | len(value))
    return seg_path, bytes(d), bytes(g)


ENGINE = """
local slither = require("slither")
io.write("PREFIX ", slither.store.files_prefix(), "\\n")
io.stdout:flush()
io.read("*l") -- the attacker plants its files meanwhile
local function start(name, load)
  local ok, st, err = pcall(slither.store.start,
    slither.store.define{ name = name, tables = { { name = "t" } }, load = load })
  if ok and st then return st, "ok" end
  local msg = ok and err or st
  return nil, tostring(type(msg) == "table" and msg.message or msg):gsub("\\n", " ")
end
for _, name in ipairs({ "later", "later2", "later3", "later4" }) do
  local _, how = start(name)
  io.write("START ", name, " ", how, "\\n")
end
local sec, how = start("sec", function(t) t.t:put("k", "real") end)
io.write("START sec ", how, "\\n")
-- enough writes for the table to move to new segments several times
for i = 1, 3000 do sec:put("t", "key" .. i, string.rep("v", 100)) end
local pool = assert(slither.pool.start{ name = "sec", size = 1, path = { PYDIR } })
local r, err = pool:call("sl_store_mod", "try_store", {
  { "sec", "t", "k" }, { "sec", "t", "key3000" }, { "ghost", "t", "k" },
  { "ghost2", "t", "k" } })
assert(r, err and err.message)
for i, name in ipairs({ "sec_k", "sec_key3000", "ghost", "ghost2" }) do
  local x = r[i]
  io.write("READ ", name, " ", x.ok and ("ok " .. tostring(x.ok))
    or (x.type .. " " .. x.message:gsub("\\n", " ")), "\\n")
end
pool:stop()
"""


class StoreSecurityTest(unittest.TestCase):
    @need_root
    def test_another_user_can_neither_plant_nor_redirect_store_files(self):
        tmp = tempfile.mkdtemp()
        os.chmod(tmp, 0o755)
        marker = os.path.join(tmp, "ran")
        victim = os.path.join(tmp, "victim")
        with open(victim, "w") as f:
            f.write("root's secret\n")
        os.chmod(victim, 0o600)
        lua = os.path.join(tmp, "engine.lua")
        with open(lua, "w") as f:
            f.write(f"local PYDIR = {json.dumps(HERE)}\n" + ENGINE)
        engine = subprocess.Popen([SLITHER, lua], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True,
                                  env=dict(os.environ, SLITHER_LOG="warn"))
        planted = []
        try:
            line = engine.stdout.readline()
            if not line.startswith("PREFIX "):
                engine.kill()
                self.fail(f"the engine did not start: {line}{engine.communicate()[1]}")
            prefix = line.split()[1]
            pid = engine.pid
            evil = pickle.dumps(Evil(f"touch {marker}"))
            ghost_seg, ghost_dir, ghost_bytes = forged_store(prefix + "ghost", "t", "k", evil)
            files = {
                # the names the engine used to take, predictable from its pid alone
                f"/dev/shm/slither.{pid}.later": ("file", b"planted"),
                f"/dev/shm/slither.{pid}.later2": ("link", victim),
                # the names it takes now (the token is visible once it runs)
                prefix + "later3": ("file", b"planted"),
                prefix + "later4": ("link", victim),
                # the first segment generations of table 0 of store "sec"
                prefix + "sec.0.1": ("link", victim),
                prefix + "sec.0.2": ("link", victim),
                prefix + "sec.0.3": ("file", b"planted"),
                # a whole store the engine never starts, whose value runs a command
                prefix + "ghost": ("file", ghost_dir),
                ghost_seg: ("file", ghost_bytes),
            }
            as_attacker(textwrap.dedent("""
                import json, os, sys
                for path, (how, what) in json.loads(sys.argv[1]).items():
                    if how == "link":
                        os.symlink(what, path)
                    else:
                        with open(path, "wb") as f:
                            f.write(bytes.fromhex(what))
                        os.chmod(path, 0o666)
                """), json.dumps({p: (h, w.hex() if h == "file" else w)
                                  for p, (h, w) in files.items()}))
            planted = list(files)
            # the same forged store, but as the engine's own user with mode 0600:
            # it passes the owner check, and the unpickler must refuse the global
            g2_seg, g2_dir, g2_bytes = forged_store(prefix + "ghost2", "t", "k", evil)
            for path, data in ((prefix + "ghost2", g2_dir), (g2_seg, g2_bytes)):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                os.write(fd, data)
                os.close(fd)
                planted.append(path)
            out, err = engine.communicate("go\n", timeout=120)
        finally:
            if engine.poll() is None:
                engine.kill()
                engine.wait()
        self.assertEqual(engine.returncode, 0, out + err)
        res = {}
        for line in out.splitlines():
            kind, name, rest = (line.split(" ", 2) + [""])[:3]
            res[(kind, name)] = rest
        try:
            # the old names are not the engine's any more: it starts those stores
            self.assertEqual(res[("START", "later")], "ok")
            self.assertEqual(res[("START", "later2")], "ok")
            # a planted file or symlink at a store's name: refused, named, untouched
            for name in ("later3", "later4"):
                msg = res[("START", name)]
                self.assertIn(prefix + name, msg)
                self.assertIn("a file of that name exists", msg)
            # planted segment names are passed over: the store works
            self.assertEqual(res[("START", "sec")], "ok")
            self.assertEqual(res[("READ", "sec_k")], "ok real")
            self.assertEqual(res[("READ", "sec_key3000")], "ok " + "v" * 100)
            # another user's store files are never mapped
            ghost = res[("READ", "ghost")]
            self.assertTrue(ghost.startswith("KeyError") or ghost.startswith("PermissionError"),
                            ghost)
            self.assertIn("is not a private store file of this user", ghost)
            # our own user's file with a global in a value: refused by the unpickler
            g2 = res[("READ", "ghost2")]
            self.assertTrue(g2.startswith("UnpicklingError"), g2)
            self.assertIn("posix.system", g2)
            self.assertFalse(os.path.exists(marker), "a planted store value ran a command")
            with open(victim) as f:
                self.assertEqual(f.read(), "root's secret\n")
            self.assertEqual(stat.S_IMODE(os.stat(victim).st_mode), 0o600)
            for path, (how, what) in files.items():
                st = os.lstat(path)
                self.assertEqual(st.st_uid, ATTACKER, path)
                if how == "link":
                    self.assertEqual(os.readlink(path), what)
                else:
                    with open(path, "rb") as f:
                        self.assertEqual(f.read(), what, path)
            # the engine's own files are gone with it; what is left is what was planted
            left = [n for n in os.listdir("/dev/shm") if n.startswith(f"slither.{pid}.")]
            self.assertEqual(sorted("/dev/shm/" + n for n in left), sorted(planted))
        finally:
            for path in planted:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    unittest.main()
