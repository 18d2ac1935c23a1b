"""End-to-end tests of the slither binary: scripts, errors, and no orphans when
the engine is killed."""
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SLITHER = os.environ.get("SLITHER_BIN") or os.path.join(HERE, "..", "..", "build", "slither")


def alive(pid):
    """True while pid runs; a zombie counts as gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def script(body):
    f = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
    f.write(textwrap.dedent(body))
    f.close()
    return f.name


class CliTest(unittest.TestCase):
    def run_slither(self, *args, **kw):
        env = dict(os.environ, SLITHER_LOG="warn")
        return subprocess.run([SLITHER, *args], capture_output=True, text=True, env=env,
                              timeout=60, **kw)

    def test_help_and_version(self):
        r = self.run_slither("--help")
        self.assertEqual(r.returncode, 0)
        self.assertIn("slither SCRIPT.lua [ARGS...]", r.stdout)
        self.assertIn("the interactive prompt", r.stdout)
        self.assertIn("SLITHER_PYTHON", r.stdout)
        self.assertIn("pool, dispatch, store or pipe", r.stdout)
        r = self.run_slither("--version")
        self.assertRegex(r.stdout, r"^slither \d+\.\d+\.\d+")
        r = self.run_slither("--bogus")
        self.assertEqual(r.returncode, 2)
        self.assertIn("unknown option '--bogus'", r.stderr)

    def test_a_long_stderr_line_is_logged_whole(self):
        # One 20,000-byte stderr line from a worker: the log shows all of it, in
        # marked pieces, where it used to keep the first 4 KB (#12 item 17).
        odd = os.path.join(HERE, "odd_python.sh")
        path = script(f"""
            local slither = require("slither")
            local pool = assert(slither.pool.start{{ size = 1, python = "{odd}",
              path = {{ "{HERE}" }}, env = {{ SLITHER_TEST_ODD = "long_stderr" }} }})
            assert(pool:call("sl_testmod", "double", {{ 21 }})[1] == 42)
            pool:stop()
        """)
        try:
            r = self.run_slither(path)
        finally:
            os.unlink(path)
        self.assertEqual(r.returncode, 0, r.stderr[-2000:])
        pieces = []
        for line in r.stderr.splitlines():
            if "stderr" in line and ("<" in line or "x" * 100 in line):
                pieces.append(line)
        self.assertGreater(len(pieces), 1, "the line was not split into pieces")
        self.assertNotIn("continued", pieces[0])
        for piece in pieces[1:]:
            self.assertIn(" stderr, continued] ", piece)
        text = "".join(piece.split("] ", 1)[1] for piece in pieces)
        self.assertEqual(text, "<" + "x" * 19998 + ">")

    def test_bench_dispatch_repeats_and_checks_every_round(self):
        # A functional check of the benchmark program, not of its speed: every round
        # runs and checks its results, and the figure kept is the rounds' median.
        import json
        r = self.run_slither("bench", "dispatch", "--workload", "records", "--n", "3000",
                             "--repeat", "3", "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        m = json.loads(r.stdout.strip().splitlines()[-1])
        self.assertEqual((m["workload"], m["repeat"], m["n"]), ("records", 3, 3000))
        s = m["slither"]
        self.assertTrue(s["checked"])
        self.assertEqual(len(s["runs"]), 3)
        self.assertEqual(s["items_per_s"], sorted(s["runs"])[1])
        if "peers" in m:
            for name in ("sequential", "multiprocessing.Pool.imap", "ProcessPoolExecutor.map"):
                p = m["peers"][name]
                self.assertEqual(len(p["runs"]), 3, name)
                self.assertEqual(p["items_per_s"], sorted(p["runs"])[1], name)
            self.assertIn("ratio", m["target"])
        else:
            # a checkout without the shared peer scripts: said, and slither's figures kept
            self.assertIn("peer script not found", m["peers_error"])
        r = self.run_slither("bench", "dispatch", "--repeat", "0")
        self.assertEqual(r.returncode, 2)
        self.assertIn("--repeat needs an integer >= 1, got 0", r.stderr)
        r = self.run_slither("bench", "dispatch", "--sweep", "--repeat", "2")
        self.assertEqual(r.returncode, 2)
        self.assertIn("--repeat goes with the comparison", r.stderr)

    def test_bench_pipe_measures_the_overlap_with_and_without_python_work(self):
        # A functional check of the benchmark program: every run's outputs are
        # checked item by item inside it, and both overlap figures are reported.
        import json
        r = self.run_slither("bench", "pipe", "--n", "3000", "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        m = json.loads(r.stdout.strip().splitlines()[-1])
        self.assertEqual((m["benchmark"], m["n"]), ("pipe", 3000))
        self.assertEqual(m["counts"], {"even": 1500, "odd": 1500})
        self.assertEqual(m["overlap"]["work_us"], 0)
        self.assertEqual(m["overlap_work"]["work_us"], 1)
        for kind in ("whole", "python", "prepare", "route", "whole_work", "python_work"):
            self.assertEqual(len(m["runs_ms"][kind]), 3, kind)
        self.assertEqual(m["overlap"]["whole_s"], m["best"]["whole"]["wall_s"])
        self.assertEqual(m["overlap_work"]["whole_s"], m["best"]["whole_work"]["wall_s"])
        t = m["targets"]["whole_within_slowest_stage"]
        self.assertEqual(t["ratio"], m["overlap"]["ratio"])
        self.assertEqual(m["memory"]["runs"][1]["n"], 30000)
        r = self.run_slither("bench", "pipe", "--n", "2000", "--work", "0", "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        m = json.loads(r.stdout.strip().splitlines()[-1])
        self.assertNotIn("overlap_work", m)
        self.assertNotIn("whole_work", m["best"])
        r = self.run_slither("bench", "pipe", "--help")
        self.assertEqual(r.returncode, 0)
        self.assertIn("--work US", r.stdout)
        r = self.run_slither("bench", "pipe", "--work", "1.5")
        self.assertEqual(r.returncode, 2)
        self.assertIn("--work needs a whole number of microseconds >= 0", r.stderr)

    def test_script_runs_with_arguments_and_workers(self):
        path = script(f"""
            local slither = require("slither")
            local pool = assert(slither.pool.start{{ size = 2, path = {{ "{HERE}" }} }})
            local r = assert(pool:call("sl_testmod", "double", {{ tonumber(arg[1]) }}))
            print("result", r[1], arg[2])
        """)
        r = self.run_slither(path, "21", "x")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("result\t42\tx", r.stdout)

    def test_worker_output_reaches_the_log_with_its_name(self):
        path = script(f"""
            local slither = require("slither")
            local pool = assert(slither.pool.start{{ size = 1, path = {{ "{HERE}" }} }})
            assert(pool:call("sl_testmod", "chatty", {{ 3 }}))
            local _, err = pool:call("sl_testmod", "boom", {{ 1 }})
            print(err.kind)
        """)
        env = dict(os.environ, SLITHER_LOG="info")
        r = subprocess.run([SLITHER, path], capture_output=True, text=True, env=env, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.strip(), "python")
        lines = [l for l in r.stderr.splitlines() if "[default/w1 stdout]" in l]
        self.assertEqual(len(lines), 3)
        self.assertTrue(lines[0].endswith("x" * 99))

    def test_script_error_shows_location_and_traceback(self):
        path = script("""
            local function inner() error("it broke") end
            local function outer() inner() end
            outer()
        """)
        r = self.run_slither(path)
        self.assertEqual(r.returncode, 1)
        self.assertIn(f"{path}:2: it broke", r.stderr)
        self.assertIn("stack traceback", r.stderr)
        self.assertIn("in function 'outer'", r.stderr)
        self.assertEqual(r.stderr.count("it broke"), 1)

    def test_syntax_error_is_reported(self):
        path = script("local x = = 1\n")
        r = self.run_slither(path)
        self.assertEqual(r.returncode, 1)
        self.assertIn(path, r.stderr)

    def test_sleep_and_spawn_interleave(self):
        path = script("""
            local slither = require("slither")
            local order = {}
            local t = slither.spawn(function()
              slither.sleep(50); order[#order + 1] = "task"
            end)
            order[#order + 1] = "main"
            assert(t:join())
            slither.sleep(10)
            print(table.concat(order, ","))
        """)
        r = self.run_slither(path)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.strip(), "main,task")

    def test_engine_sigkill_leaves_no_worker_behind(self):
        path = script(f"""
            local slither = require("slither")
            local pool = assert(slither.pool.start{{ size = 2, path = {{ "{HERE}" }} }})
            local kids = assert(pool:call("sl_testmod", "spawn_grandchild", {{ 1 }}))
            for _, pid in ipairs(pool:pids()) do io.write("worker ", pid, "\\n") end
            io.write("grandchild ", kids[1], "\\n")
            io.write("ready\\n")
            io.stdout:flush()
            slither.sleep(60000)
        """)
        env = dict(os.environ, SLITHER_LOG="warn")
        p = subprocess.Popen([SLITHER, path], stdout=subprocess.PIPE, text=True, env=env)
        pids = []
        for line in p.stdout:
            if line.strip() == "ready":
                break
            pids.append(int(line.split()[1]))
        self.assertEqual(len(pids), 3)
        for pid in pids:
            self.assertTrue(alive(pid))
        p.send_signal(signal.SIGKILL)
        p.wait()
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and any(alive(pid) for pid in pids):
            time.sleep(0.05)
        self.assertEqual([pid for pid in pids if alive(pid)], [])

    def start_engine(self, body):
        """The slither binary on a script that prints "<what> <pid>" lines, then
        "ready", then sleeps; returns the process and the pids by what."""
        path = script(body)
        self.addCleanup(os.unlink, path)
        env = dict(os.environ, SLITHER_LOG="warn")
        p = subprocess.Popen([SLITHER, path], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)

        def stop():
            if p.poll() is None:
                p.kill()
            p.wait()
            for f in (p.stdin, p.stdout, p.stderr):
                f.close()
        self.addCleanup(stop)
        pids = {}
        for line in p.stdout:
            if line.strip() == "ready":
                break
            what, pid = line.split()
            pids.setdefault(what, []).append(int(pid))
        return p, pids

    def gone_within(self, pids, seconds=3.0):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and any(alive(pid) for pid in pids):
            time.sleep(0.05)
        return [pid for pid in pids if alive(pid)]

    ESCAPEE = f"""
        local slither = require("slither")
        local pool = assert(slither.pool.start{{ size = 2, path = {{ "{HERE}" }} }})
        local kids = assert(pool:call("sl_testmod", "spawn_escapee", {{ 1 }}))
        for _, pid in ipairs(pool:pids()) do io.write("worker ", pid, "\\n") end
        io.write("escapee ", kids[1], "\\n")
    """

    def test_a_descendant_in_its_own_session_dies_with_its_pool(self):
        # setsid and a double fork leave the worker's group; the token in the
        # environment still finds it when the pool stops (#12 item 13)
        p, pids = self.start_engine(self.ESCAPEE + """
            io.write("ready\\n")
            io.stdout:flush()
            io.read("*l") -- the test has looked at the escapee
            pool:stop()
            io.write("stopped\\n")
            io.stdout:flush()
            slither.sleep(60000)
        """)
        esc = pids["escapee"][0]
        self.assertNotEqual(os.getsid(esc), os.getsid(pids["worker"][0]))
        self.assertNotIn(os.getpgid(esc), pids["worker"])
        p.stdin.write("go\n")
        p.stdin.flush()
        self.assertEqual(p.stdout.readline().strip(), "stopped")
        self.assertEqual(self.gone_within([esc]), [], "the escapee outlived pool:stop()")

    def test_engine_sigkill_leaves_no_escaped_descendant(self):
        p, pids = self.start_engine(self.ESCAPEE + """
            io.write("ready\\n")
            io.stdout:flush()
            slither.sleep(60000)
        """)
        everyone = pids["worker"] + pids["escapee"]
        self.assertTrue(all(alive(pid) for pid in everyone))
        p.send_signal(signal.SIGKILL)
        p.wait()
        self.assertEqual(self.gone_within(everyone), [], "outlived the engine's SIGKILL")

    def test_a_killed_reaper_is_replaced(self):
        # the reaper is the engine's forked child; kill it, and the engine must
        # start another that still cleans up after the engine's SIGKILL
        p, pids = self.start_engine(self.ESCAPEE + """
            io.write("ready\\n")
            io.stdout:flush()
            slither.sleep(60000)
        """)
        workers = set(pids["worker"])

        def reapers():
            out = []
            for d in os.listdir("/proc"):
                if d.isdigit() and int(d) not in workers:
                    try:
                        with open(f"/proc/{d}/stat") as f:
                            st = f.read().rsplit(")", 1)[1].split()
                    except OSError:
                        continue
                    if int(st[1]) == p.pid and st[0] not in ("Z", "X"):
                        out.append(int(d))
            return out

        first = reapers()
        self.assertEqual(len(first), 1, f"expected one reaper, found {first}")
        os.kill(first[0], signal.SIGKILL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and (reapers() in ([], first)):
            time.sleep(0.05)
        second = reapers()
        self.assertEqual(len(second), 1, f"no new reaper: {second}")
        self.assertNotEqual(second, first)
        p.send_signal(signal.SIGKILL)
        p.wait()
        everyone = pids["worker"] + pids["escapee"]
        self.assertEqual(self.gone_within(everyone), [], "outlived the engine after a new reaper")
        self.assertIn(f"the reaper process (pid {first[0]}) died; started another",
                      p.stderr.read())

    def test_script_end_stops_pools(self):
        path = script(f"""
            local slither = require("slither")
            local pool = assert(slither.pool.start{{ size = 2, path = {{ "{HERE}" }} }})
            for _, pid in ipairs(pool:pids()) do io.write(pid, "\\n") end
        """)
        r = self.run_slither(path)
        self.assertEqual(r.returncode, 0, r.stderr)
        pids = [int(x) for x in r.stdout.split()]
        self.assertEqual(len(pids), 2)
        self.assertFalse(any(alive(pid) for pid in pids))


if __name__ == "__main__":
    unittest.main()
