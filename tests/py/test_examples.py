"""End-to-end tests of `slither example`: each example at small scale exits 0 with
every check line OK; an example whose packages no interpreter has is reported as
skipped (with the apt-get line), never as passed; usage errors exit 2; progress
lines appear on a terminal only; a script in scripts/examples runs on its own."""
import os
import pty
import re
import shutil
import subprocess
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
SLITHER = os.environ.get("SLITHER_BIN") or os.path.join(ROOT, "build", "slither")
EXAMPLES = ["text_analysis", "batch_stats", "data_etl"]
# examples that need packages: name -> (import name, Debian package)
NEEDS = {"ml_scoring": ("sklearn", "python3-sklearn"), "image_pipeline": ("PIL", "python3-pil")}
CHECK = re.compile(r"^  (.+): expected=(.*) observed=(.*) \[(OK|MISMATCH)\]$")


def candidates():
    """The interpreters the examples search, in their order."""
    out = []
    for p in (os.environ.get("SLITHER_PYTHON", ""), "python3", "/usr/bin/python3"):
        if p and p not in out:
            out.append(p)
    return out


def importable(module):
    """The first interpreter of the search that imports module, asked directly."""
    for py in candidates():
        try:
            r = subprocess.run([py, "-c", f"import {module}"], capture_output=True, timeout=120)
        except OSError:
            continue
        if r.returncode == 0:
            return py
    return None


def run(*args, timeout=120):
    env = dict(os.environ, SLITHER_LOG="warn")
    return subprocess.run([SLITHER, *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=ROOT)


def check_lines(stdout):
    return [m for m in (CHECK.match(l) for l in stdout.splitlines()) if m]


class ExamplesTest(unittest.TestCase):
    def assert_all_ok(self, r, min_checks=10):
        self.assertEqual(r.returncode, 0, r.stdout[-3000:] + r.stderr[-2000:])
        self.assertNotIn("MISMATCH]", r.stdout)
        checks = check_lines(r.stdout)
        self.assertGreaterEqual(len(checks), min_checks, r.stdout[-3000:])
        for m in checks:
            self.assertEqual(m.group(4), "OK", m.group(0))
        self.assertNotIn("\r", r.stdout, "a progress line reached a pipe")

    def test_each_example_small(self):
        for name in EXAMPLES:
            with self.subTest(example=name):
                t0 = time.monotonic()
                r = run("example", name, "--scale", "small", "--no-baseline")
                self.assert_all_ok(r)
                self.assertIn(f"=== {name}:", r.stdout)
                self.assertRegex(r.stdout, r"  python: .*Python \d+\.\d+.*GIL (enabled|disabled)")
                self.assertLess(time.monotonic() - t0, 30)

    def assert_skipped(self, r, name):
        module, deb = NEEDS[name]
        self.assertIn(f"=== {name}: ", r.stdout)
        self.assertIn(f"  skipped: needs {module} (apt-get install -y {deb})", r.stdout)
        self.assertIn(f"  skipped {name}: apt-get install -y {deb}", r.stdout)
        self.assertNotRegex(r.stdout, rf"=== {name}: .*\(scale ")
        self.assertNotIn(f"--- {name}: ", r.stdout)

    def test_examples_with_packages_small(self):
        for name, (module, deb) in NEEDS.items():
            with self.subTest(example=name):
                py = importable(module)
                t0 = time.monotonic()
                r = run("example", name, "--scale", "small", "--no-baseline")
                if py:
                    self.assert_all_ok(r)
                    self.assertIn("1 run, 1 passed, 0 failed, 0 skipped", r.stdout)
                    # the interpreter the search found, and that it has the package
                    self.assertRegex(r.stdout, rf"  interpreter: .*\(has {module} ")
                    self.assertRegex(r.stdout, r"  python: .*Python \d+\.\d+")
                    self.assertLess(time.monotonic() - t0, 30)
                else:
                    self.assertEqual(r.returncode, 1, r.stdout[-3000:] + r.stderr[-2000:])
                    self.assertEqual(check_lines(r.stdout), [])
                    self.assert_skipped(r, name)
                    self.assertIn("0 run, 0 passed, 0 failed, 1 skipped", r.stdout)

    def test_all_small(self):
        r = run("example", "--all", "--scale", "small", "--no-baseline", "--workers", "3")
        have = [n for n, (m, _) in NEEDS.items() if importable(m)]
        ran = len(EXAMPLES) + len(have)
        self.assert_all_ok(r, min_checks=60 + 12 * len(have))
        self.assertIn(f"{ran} run, {ran} passed, 0 failed, {len(NEEDS) - len(have)} skipped",
                      r.stdout)
        for name in NEEDS:
            if name not in have:
                self.assert_skipped(r, name)

    def test_skipped_when_no_interpreter_has_the_packages(self):
        # The only interpreter searched is one where sklearn and PIL raise on import.
        tmp = tempfile.mkdtemp()
        try:
            for m in ("sklearn", "PIL"):
                os.makedirs(os.path.join(tmp, "hide", m))
                with open(os.path.join(tmp, "hide", m, "__init__.py"), "w") as f:
                    f.write("raise ImportError('hidden by test_examples')\n")
            py = os.path.join(tmp, "python")
            with open(py, "w") as f:
                f.write(f'#!/bin/sh\nPYTHONPATH="{tmp}/hide${{PYTHONPATH:+:$PYTHONPATH}}" '
                        f'exec {candidates()[0]} "$@"\n')
            os.chmod(py, 0o755)
            prog = ('local ex = require("slither.examples") '
                    f'ex.python_candidates = function() return {{ "{py}" }} end '
                    'os.exit(ex.main({ %s }))')
            r = run("-e", prog % '"--all", "--scale", "small", "--no-baseline"')
            self.assert_all_ok(r, min_checks=40)
            self.assertIn("3 run, 3 passed, 0 failed, 2 skipped", r.stdout)
            for name in NEEDS:
                self.assert_skipped(r, name)
            self.assertIn(f"  looked in: {py}", r.stdout)
            r = run("-e", prog % '"ml_scoring", "--scale", "small"')
            self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
            self.assert_skipped(r, "ml_scoring")
            r = run("-e", prog % "")
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            self.assertIn("sklearn (missing: apt-get install -y python3-sklearn)", r.stdout)
            self.assertIn("PIL (missing: apt-get install -y python3-pil)", r.stdout)
        finally:
            shutil.rmtree(tmp)

    def test_baseline_runs_after_the_example(self):
        r = run("example", "batch_stats", "--scale=small", "--workers=1")
        self.assertEqual(r.returncode, 0, r.stdout[-3000:] + r.stderr[-2000:])
        self.assertIn("--- pure-Python baseline (", r.stdout)
        own = "\n".join(l for l in r.stdout.splitlines() if not l.startswith("  | "))
        self.assertNotIn("MISMATCH]", own)
        base = [l for l in r.stdout.splitlines() if l.startswith("  | ")]
        self.assertTrue(any("GIL enabled now:" in l for l in base), "\n".join(base))
        # the safe version is always right
        safe = False
        for l in base:
            if "--- safe" in l:
                safe = True
            elif "--- unsafe" in l:
                safe = False
            elif safe:
                self.assertNotIn("MISMATCH]", l)

    def test_list(self):
        r = run("example")
        self.assertEqual(r.returncode, 0, r.stderr)
        for name in EXAMPLES + list(NEEDS):
            self.assertIn(name, r.stdout)
        for name, (module, deb) in NEEDS.items():
            if importable(module):
                self.assertRegex(r.stdout, rf"needs: {module} \S+")
            else:
                self.assertIn(f"needs: {module} (missing: apt-get install -y {deb})", r.stdout)
        self.assertIn("standard library only", r.stdout)
        self.assertIn("python: ", r.stdout)

    def test_usage_errors(self):
        for args, word in [(["no_such_example"], "no_such_example"),
                           (["--frobnicate"], "--frobnicate"),
                           (["--scale", "huge", "data_etl"], "huge"),
                           (["--workers", "0", "data_etl"], "--workers"),
                           (["--all", "data_etl"], "--all")]:
            with self.subTest(args=args):
                r = run("example", *args)
                self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
                self.assertIn(word, r.stderr)
        r = run("example", "--help")
        self.assertEqual(r.returncode, 0)
        self.assertIn("--scale small|full", r.stdout)

    def test_script_runs_on_its_own(self):
        r = run(os.path.join("scripts", "examples", "batch_stats.lua"), "--no-baseline")
        self.assert_all_ok(r)
        self.assertIn("scale small", r.stdout)
        r = run(os.path.join("scripts", "examples", "image_pipeline.lua"), "--no-baseline")
        if importable("PIL"):
            self.assert_all_ok(r)
            self.assertIn("scale small", r.stdout)
        else:
            self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
            self.assertIn("skipped: needs PIL (apt-get install -y python3-pil)", r.stdout)

    def test_progress_on_a_terminal(self):
        master, slave = pty.openpty()
        env = dict(os.environ, SLITHER_LOG="warn")
        p = subprocess.Popen([SLITHER, "example", "text_analysis", "--scale", "small",
                              "--no-baseline"], stdout=slave, stderr=subprocess.DEVNULL,
                             env=env, cwd=ROOT)
        os.close(slave)
        out = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
        os.close(master)
        rc = p.wait(timeout=60)
        text = out.decode(errors="replace")
        self.assertEqual(rc, 0, text[-3000:])
        self.assertRegex(text, r"\r  analyze: \d+ docs\s+\d+ docs/s\s+\d+ in flight")
        self.assertNotIn("MISMATCH]", text)


if __name__ == "__main__":
    unittest.main()
