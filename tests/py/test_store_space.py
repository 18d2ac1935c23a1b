"""The store when its file system is full (run as root, as CI is: the test mounts
a 4 MiB tmpfs and points the engine at it with SLITHER_SHM_DIR).

Every segment is reserved with posix_fallocate when it is made, so a full file
system fails the write that needed room (nil and an error of kind no_space, the
table as it was) instead of a SIGBUS on the first touch of a page nobody can
back, which killed the engine. A reload that runs out of room fails the same way
and keeps the live tables."""
import json
import os
import shutil
import subprocess
import tempfile
import unittest

import needs

HERE = os.path.dirname(os.path.abspath(__file__))
SLITHER = os.environ.get("SLITHER_BIN") or os.path.join(HERE, "..", "..", "build", "slither")


need_root = needs.need_root("mounting a small tmpfs", "mount")


ENGINE = """
local slither = require("slither")
local VALUE = string.rep("x", 65536)
local function value(i) return i .. ":" .. VALUE end
local st = assert(slither.store.start(slither.store.define{ name = "full",
  tables = { { name = "t" }, { name = "b", type = "bag" } } }))
io.write("PREFIX ", slither.store.files_prefix(), "\\n")
local n, err = 0, nil
for i = 1, 1000 do
  local ok, e = st:put("t", "k" .. i, value(i))
  if not ok then err = e break end
  n = i
end
io.write("WROTE ", n, "\\n")
io.write("ERR ", err and err.kind or "none", " ", err and err.message or "", "\\n")
-- the failed write changed nothing: every earlier value is there, the failed key is not
local intact = st:get("t", "k" .. (n + 1)) == nil
for i = 1, n do
  if st:get("t", "k" .. i) ~= value(i) then intact = false end
end
io.write("INTACT ", tostring(intact), " ", st:size("t"), "\\n")
-- a bag write and put_many fail the same way, naming no_space
local okb, eb
for i = 1, 200 do
  okb, eb = st:put("b", "bag", value(i))
  if not okb then break end
end
io.write("BAG ", okb and "ok" or eb.kind, "\\n")
local many = {}
for i = 1, 64 do many["m" .. i] = value(i) end
local okm, em = st:put_many("t", many)
io.write("MANY ", okm and "ok" or em.kind, " ", st:get("t", "m1") == nil and "none" or "some", "\\n")
-- a reload whose load needs more room than there is fails, and the live tables stay
st.def.load = function(t)
  for i = 1, 1000 do t.t:put("r" .. i, value(i)) end
end
local okr, er = st:reload()
io.write("RELOAD ", okr and "ok" or er.kind, " ", tostring(st:get("t", "k1") == value(1)),
  " ", tostring(st:get("t", "r1") == nil), "\\n")
-- a worker reads the same values from the same full file system
local pool = assert(slither.pool.start{ name = "full", size = 1, path = { PYDIR } })
local r = assert(pool:call("sl_store_mod", "get", { { "full", "t", "k1" }, { "full", "t", "k" .. n } }))
io.write("PYREAD ", tostring(r[1] == value(1) and r[2] == value(n)), "\\n")
pool:stop()
-- deleting makes room again
for i = 1, n do st:delete("t", "k" .. i) end
st:clear("t")
st:clear("b")
io.write("AGAIN ", tostring(st:put("t", "again", "yes")), "\\n")
st:stop()
-- a store that cannot get its first segment is not started, and says why
local started, e3 = {}, nil
for i = 1, 200 do
  local s, e = slither.store.start(slither.store.define{ name = "f" .. i,
    tables = { { name = "t" } } })
  if not s then e3 = e break end
  started[#started + 1] = s
end
io.write("START ", e3 and e3.kind or "ok", " ", tostring(#started > 0), "\\n")
for _, s in ipairs(started) do s:stop() end
"""


class StoreSpaceTest(unittest.TestCase):
    @need_root
    def test_a_full_file_system_fails_the_write_and_loses_nothing(self):
        tmp = tempfile.mkdtemp()
        shm = os.path.join(tmp, "shm")
        os.mkdir(shm)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=1777", "tmpfs", shm],
                       check=True)
        try:
            lua = os.path.join(tmp, "engine.lua")
            with open(lua, "w") as f:
                f.write(f"local PYDIR = {json.dumps(HERE)}\n" + ENGINE)
            env = dict(os.environ, SLITHER_SHM_DIR=shm)
            r = subprocess.run([SLITHER, lua], capture_output=True, text=True, timeout=120,
                               env=env)
            out = dict(line.split(" ", 1) for line in r.stdout.splitlines() if " " in line)
            self.assertEqual(r.returncode, 0,
                             f"the engine failed (a SIGBUS is -7): {r.returncode}\n"
                             f"stdout:\n{r.stdout}\nstderr:\n{r.stderr}")
            self.assertTrue(out["PREFIX"].startswith(shm + "/slither."), out["PREFIX"])
            wrote = int(out["WROTE"])
            self.assertTrue(5 <= wrote < 64, f"{wrote} values of 64 KiB fitted in 4 MiB")
            self.assertTrue(out["ERR"].startswith("no_space "), out["ERR"])
            self.assertIn("table 't'", out["ERR"])
            self.assertIn("the table is as it was", out["ERR"])
            self.assertEqual(out["INTACT"], f"true {wrote}")
            self.assertEqual(out["BAG"], "no_space")
            self.assertEqual(out["MANY"], "no_space none")
            self.assertEqual(out["RELOAD"], "no_space true true")
            self.assertEqual(out["PYREAD"], "true")
            self.assertEqual(out["AGAIN"], "true")
            self.assertEqual(out["START"], "no_space true")
            self.assertEqual(os.listdir(shm), [], "the stores left files behind")
        finally:
            subprocess.run(["umount", shm], check=False)
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    unittest.main()
