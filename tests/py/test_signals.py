"""SIGTERM and SIGINT stop the slither program cleanly, a second signal stops it
at once, and after SIGKILL the reaper still leaves nothing behind: no worker, no
store file (#12 item 14)."""
import os
import shutil
import signal
import subprocess
import tempfile
import textwrap
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SLITHER = os.environ.get("SLITHER_BIN") or os.path.join(HERE, "..", "..", "build", "slither")

SCRIPT = """
local slither = require("slither")
local store = assert(slither.store.start(slither.store.define{{
  name = "sig", tables = {{ {{ name = "t", type = "set" }} }} }}))
assert(store:put("t", "k", {{ 1, 2, 3 }}))
local pool = assert(slither.pool.start{{ size = 2, path = {{ "{here}" }} }})
for _, pid in ipairs(pool:pids()) do io.write("worker ", pid, "\\n") end
io.write("ready\\n")
io.stdout:flush()
{then}
"""

DISPATCH = """
local r = slither.dispatch.run({ 3, 3, 3, 3, 3, 3 }, { module = "sl_testmod",
  ["function"] = "slow", batch_size = 1 })
print("the dispatch was not stopped")
"""


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


class StopSignals(unittest.TestCase):
    def start(self, then):
        self.shm = tempfile.mkdtemp(prefix="slither-sig-")
        self.addCleanup(shutil.rmtree, self.shm, True)
        f = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
        f.write(textwrap.dedent(SCRIPT.format(here=HERE, then=then)))
        f.close()
        self.addCleanup(os.unlink, f.name)
        env = dict(os.environ, SLITHER_LOG="warn", SLITHER_SHM_DIR=self.shm)
        p = subprocess.Popen([SLITHER, f.name], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=env)

        def stop():
            if p.poll() is None:
                p.kill()
            p.wait()
            p.stdout.close()
            p.stderr.close()
        self.addCleanup(stop)
        workers = []
        for line in p.stdout:
            if line.strip() == "ready":
                break
            workers.append(int(line.split()[1]))
        self.assertEqual(len(workers), 2, p.stderr.read() if p.poll() is not None else "")
        self.assertTrue(self.store_files(p.pid), "the store made no files")
        return p, workers

    def store_files(self, pid):
        return [f for f in os.listdir(self.shm) if f.startswith(f"slither.{pid}.")]

    def gone(self, p, workers, seconds=5.0):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and (any(alive(w) for w in workers)
                                               or self.store_files(p.pid)):
            time.sleep(0.05)
        self.assertEqual([w for w in workers if alive(w)], [], "workers outlived the engine")
        self.assertEqual(self.store_files(p.pid), [], "store files outlived the engine")

    def clean_stop(self, sig, code, name):
        p, workers = self.start(DISPATCH)
        time.sleep(0.5)  # the dispatch is running: both workers hold a call
        p.send_signal(sig)
        rc = p.wait(timeout=30)
        err = p.stderr.read()
        self.assertEqual(rc, code, err)
        self.assertIn(f"{name}: stopping", err)
        self.assertIn(f"interrupted by {name}", err)
        self.assertNotIn("the dispatch was not stopped", p.stdout.read())
        self.gone(p, workers, 0.5)

    def test_sigterm_stops_cleanly_with_143(self):
        self.clean_stop(signal.SIGTERM, 143, "SIGTERM")

    def test_sigint_stops_cleanly_with_130(self):
        self.clean_stop(signal.SIGINT, 130, "SIGINT")

    def test_a_second_signal_stops_at_once_even_when_lua_never_yields(self):
        # Lua loops without giving the loop a turn: the first signal waits for a
        # turn that never comes; the second ends the process from its handler,
        # and the reaper cleans up
        p, workers = self.start("while true do end")
        p.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        self.assertIsNone(p.poll(), "the first signal must not end a run at once")
        p.send_signal(signal.SIGTERM)
        self.assertEqual(p.wait(timeout=10), 143)
        self.gone(p, workers)

    def test_after_sigkill_the_reaper_removes_the_store_files(self):
        p, workers = self.start("slither.sleep(60000)")
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=10)
        self.gone(p, workers)

    def test_the_readme_scripts_run(self):
        root = os.path.join(HERE, "..", "..")
        env = dict(os.environ, SLITHER_LOG="warn")
        r = subprocess.run([SLITHER, os.path.join(root, "scripts", "stop_signal.lua")],
                           capture_output=True, text=True, env=env, timeout=60)
        self.assertEqual(r.returncode, 143, r.stderr)
        self.assertIn("interrupted by SIGTERM", r.stderr)
        self.assertNotIn("not reached", r.stdout)
        r = subprocess.run([SLITHER, os.path.join(root, "scripts", "escaping_child.lua")],
                           capture_output=True, text=True, env=env, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("OK: nothing outlived the pool", r.stdout)


if __name__ == "__main__":
    unittest.main()
