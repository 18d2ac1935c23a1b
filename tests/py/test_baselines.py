"""The pure-Python baselines (pyworkers/examples/pure_python_baselines.py) run at small
scale for the three standard-library examples, in both modes, with a few threads: the
script exits 0, prints the interpreter and GIL lines, and every safe-mode check is OK.
The unsafe mode's checks are not asserted: whether a lost update happens is up to the
interpreter and the scheduler, and reporting it is the point of that mode."""
import json
import os
import re
import subprocess
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
SCRIPT = os.path.join(ROOT, "pyworkers", "examples", "pure_python_baselines.py")
# The interpreter under test: SLITHER_BASELINE_PYTHON when set (e.g. a free-threaded
# build), else the one running the tests.
PYTHON = os.environ.get("SLITHER_BASELINE_PYTHON") or sys.executable
STDLIB_EXAMPLES = ("text_analysis", "batch_stats", "data_etl")
CHECK_RE = re.compile(r"^  (.+): expected=(.*) observed=(.*) \[(OK|MISMATCH)\]$")


def run(*args, timeout=300):
    return subprocess.run([PYTHON, SCRIPT, *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def mode_sections(stdout):
    """{mode: [check lines]} for the one example in stdout."""
    sections, mode = {}, None
    for line in stdout.splitlines():
        m = re.match(r"^--- (unsafe|safe): ", line)
        if m:
            mode = m.group(1)
            sections[mode] = []
        elif line.startswith("=== Summary"):
            mode = None
        elif mode and CHECK_RE.match(line):
            sections[mode].append(line)
    return sections


class StdlibBaselinesTest(unittest.TestCase):
    def check_example(self, name):
        r = run(name, "--scale", "small", "--mode", "both", "--threads", "4")
        out = r.stdout
        self.assertEqual(r.returncode, 0, out + r.stderr)
        self.assertRegex(out, r"(?m)^interpreter: \S+ \(\w+ \d+\.\d+")
        self.assertRegex(out, r"(?m)^free-threaded build: (yes|no) ")
        self.assertRegex(out, r"(?m)^GIL enabled now: (yes|no) ")
        self.assertRegex(out, r"(?m)^  wall: ")
        self.assertRegex(out, r"(?m)^  throughput: [\d.]+ \w+/s \(")
        sections = mode_sections(out)
        self.assertEqual(set(sections), {"unsafe", "safe"}, out)
        self.assertGreaterEqual(len(sections["safe"]), 5, out)
        self.assertGreaterEqual(len(sections["unsafe"]), 5, out)
        bad = [line for line in sections["safe"] if not line.endswith("[OK]")]
        self.assertEqual(bad, [], out)
        self.assertRegex(out, rf"(?m)^  {name}: unsafe=(OK|MISMATCH\(\d+\)) .* safe=OK ")
        self.assertIn("exit status: 0", out)

    def test_text_analysis_both_modes(self):
        self.check_example("text_analysis")

    def test_batch_stats_both_modes(self):
        self.check_example("batch_stats")

    def test_data_etl_both_modes(self):
        self.check_example("data_etl")

    def test_json_report_has_interpreter_and_all_safe_checks_ok(self):
        r = run("batch_stats", "--scale", "small", "--mode", "safe", "--threads", "3",
                "--json")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        doc = json.loads(r.stdout)
        interp = doc["interpreter"]
        self.assertTrue(interp["executable"])
        self.assertIn("free_threaded_build", interp)
        self.assertIn("gil_enabled", interp)
        self.assertTrue(doc["safe_ok"])
        (ex,) = doc["examples"]
        (mode,) = ex["modes"]
        self.assertEqual(mode["mode"], "safe")
        self.assertTrue(mode["checks"])
        self.assertTrue(all(c["ok"] for c in mode["checks"]), mode["checks"])

    def test_a_safe_mode_mismatch_makes_the_exit_status_1(self):
        # fault injection, in process: the safe merge drops every per-thread state
        import contextlib
        import importlib.util
        import io
        spec = importlib.util.spec_from_file_location("ppb_under_test", SCRIPT)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        mod.RunningStats.merge = lambda self, other: None
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            status = mod.main(["batch_stats", "--scale", "small", "--mode", "safe",
                               "--threads", "2"])
        out = buf.getvalue()
        self.assertEqual(status, 1, out)
        self.assertRegex(out, r"(?m)^  values in the running stats \(merged per-thread\): "
                              r"expected=\d+ "
                              r"observed=0 \[MISMATCH\]$")
        self.assertIn("safe-mode MISMATCH in: batch_stats", out)

    def test_require_free_threaded_exits_3_when_the_gil_is_on(self):
        r = run("batch_stats", "--scale", "small", "--mode", "safe", "--threads", "2",
                "--require-free-threaded")
        probe = subprocess.run(
            [PYTHON, "-c", "import sys; f = getattr(sys, '_is_gil_enabled', None); "
                           "print(1 if f is None or f() else 0)"],
            capture_output=True, text=True, check=True)
        expected = 3 if probe.stdout.strip() == "1" else 0
        self.assertEqual(r.returncode, expected, r.stdout + r.stderr)

    def test_usage_errors(self):
        self.assertEqual(run().returncode, 2)
        self.assertEqual(run("no_such_example").returncode, 2)
        self.assertEqual(run("--all", "batch_stats").returncode, 2)


# Each Slither example's data generator (a local function of its script, reached
# through the upvalues of M.run) and the same call into the baseline's port.
LUA_DUMP = r"""
local path, fname = ...
local examples = require("slither.examples")
local M = assert(loadfile(path))(examples.MODULE_ARG)
local fn
for i = 1, 200 do
  local n, v = debug.getupvalue(M.run, i)
  if not n then break end
  if n == fname then fn = v end
end
if not fn then
  io.stderr:write("no local function " .. fname .. " in " .. path .. "\n")
  os.exit(3)
end
local args = {}
for i = 3, select("#", ...) do
  local a = select(i, ...)
  args[#args + 1] = tonumber(a) or a
end
io.write(require("cjson").encode(fn(unpack(args))))
"""


class SameDataAsTheSlitherExamplesTest(unittest.TestCase):
    """The baseline's generators are ports of scripts/examples/*.lua: both must make
    the same items, or the comparison compares different work."""

    @classmethod
    def setUpClass(cls):
        import importlib.util
        import shutil
        cls.luajit = shutil.which("luajit")
        build = os.environ.get("SLITHER_BUILD") or os.path.join(ROOT, "build")
        cls.cpath = os.path.join(build, "lua")
        if not cls.luajit or not os.path.exists(os.path.join(cls.cpath, "slither", "core.so")):
            raise unittest.SkipTest("needs luajit and a built tree (SLITHER_BUILD)")
        spec = importlib.util.spec_from_file_location("ppb_data", SCRIPT)
        cls.mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(cls.mod)

    def lua_data(self, script, fname, *args):
        path = os.path.join(ROOT, "scripts", "examples", script)
        if not os.path.exists(path):
            self.skipTest(f"no {path}")
        env = dict(os.environ, SLITHER_LOG="warn",
                   LUA_PATH=f"{ROOT}/lua/?.lua;{ROOT}/lua/?/init.lua;;",
                   LUA_CPATH=f"{self.cpath}/?.so;;")
        r = subprocess.run([self.luajit, "-", path, fname, *map(str, args)], input=LUA_DUMP,
                           capture_output=True, text=True, env=env, timeout=120)
        self.assertEqual(r.returncode, 0, f"{script}: {fname}() could not be run: {r.stderr}")
        return json.loads(r.stdout)

    def test_text_analysis_corpus(self):
        for n in (500, 5000):
            self.assertEqual(self.lua_data("text_analysis.lua", "corpus", n),
                             self.mod.text_corpus(n), f"corpus({n}) drifted")

    def test_batch_stats_datasets(self):
        for scale in ("small", "full"):
            lua = self.lua_data("batch_stats.lua", "datasets", scale)
            py = self.mod.stats_datasets(scale)
            self.assertEqual(
                [(d["kind"], d.get("poison"), d["values"] or []) for d in lua],
                [(d["kind"], d.get("poison"), d["values"]) for d in py],
                f"datasets({scale}) drifted")

    def test_data_etl_rows(self):
        for _label, ratio, seed, _toggle in self.mod.ETL_BATCHES:
            for count in (500, 5000):
                self.assertEqual(self.lua_data("data_etl.lua", "generate_rows", count, ratio,
                                               seed),
                                 self.mod.etl_rows(count, ratio, seed),
                                 f"generate_rows({count}, {ratio}, {seed}) drifted")


if __name__ == "__main__":
    unittest.main()
