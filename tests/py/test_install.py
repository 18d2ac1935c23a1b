"""Install into a temporary prefix, move the prefix somewhere else, then use it
from outside the source tree exactly as the README says: the binary finds its Lua
modules and worker package by itself, a host program builds with pkg-config and
with CMake's find_package, and a stock luajit loads the module. Nothing is
rewritten after the install: a path baked in at configure time fails here."""
import os
import shutil
import subprocess
import tempfile
import textwrap
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
BUILD = os.environ.get("SLITHER_BUILD") or os.path.join(ROOT, "build")


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SLITHER_") and k not in ("LUA_PATH", "LUA_CPATH")}
    env["SLITHER_LOG"] = "warn"
    env.update(extra)
    return env


class InstallTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.top = tempfile.mkdtemp(prefix="slither-install-")
        cls.work = tempfile.mkdtemp(prefix="slither-outside-")
        first = os.path.join(cls.top, "first")
        r = subprocess.run(["cmake", "--install", BUILD, "--prefix", first],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise AssertionError(r.stdout + r.stderr)
        # the prefix is moved after the install: every path must be found from
        # where the files are now, not from where they were installed or built
        cls.prefix = os.path.join(cls.top, "moved")
        os.rename(first, cls.prefix)
        cls.libdir = next(os.path.join(cls.prefix, d) for d in ("lib", "lib64",
                          "lib/x86_64-linux-gnu") if os.path.exists(os.path.join(cls.prefix, d, "pkgconfig")))

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.top, ignore_errors=True)
        shutil.rmtree(cls.work, ignore_errors=True)

    def test_layout(self):
        for rel in ("bin/slither", "include/slither.h", "share/slither/lua/slither/init.lua",
                    "share/slither/pyworkers/slither_worker/__init__.py"):
            self.assertTrue(os.path.exists(os.path.join(self.prefix, rel)), rel)
        names = os.listdir(self.libdir)
        self.assertIn("libslither.a", names)
        self.assertTrue(any(n.startswith("libslither.so") for n in names))
        self.assertTrue(os.path.exists(os.path.join(self.libdir, "lua/5.1/slither/core.so")))
        self.assertTrue(os.path.exists(os.path.join(self.libdir, "cmake/slither/slitherConfig.cmake")))

    def test_installed_binary_runs_a_script_outside_the_tree(self):
        mod = os.path.join(self.work, "outside_mod.py")
        with open(mod, "w") as f:
            f.write("def triple(xs):\n    return [x * 3 for x in xs]\n")
        script = os.path.join(self.work, "outside.lua")
        with open(script, "w") as f:
            f.write(textwrap.dedent(f"""
                local slither = require("slither")
                local paths = slither.core.paths()
                print("lua", paths.lua)
                print("worker", paths.worker)
                local pool = assert(slither.pool.start{{ size = 1, path = {{ "{self.work}" }} }})
                print("result", pool:call("outside_mod", "triple", {{ 14 }})[1])
            """))
        r = subprocess.run([os.path.join(self.prefix, "bin/slither"), script], cwd=self.work,
                           capture_output=True, text=True, env=clean_env(), timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("result\t42", r.stdout)
        for line in r.stdout.splitlines():
            if line.startswith(("lua", "worker")):
                path = os.path.realpath(line.split("\t", 1)[1])
                self.assertTrue(path.startswith(os.path.realpath(self.prefix)), line)

    def run_host(self, exe):
        r = subprocess.run([exe], cwd=self.work, capture_output=True, text=True, timeout=120,
                           env=clean_env(PYDIR=HERE, LD_LIBRARY_PATH=self.libdir))
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("0 failed", r.stdout)

    def test_host_program_builds_with_pkg_config(self):
        # README: cc host.c $(pkg-config --cflags --libs slither), the prefix's
        # pkgconfig directory on PKG_CONFIG_PATH; the .pc file is used as installed
        env = clean_env(PKG_CONFIG_PATH=os.path.join(self.libdir, "pkgconfig"))
        # the example also drives a libuv loop of its own, hence libuv
        flags = subprocess.run(["pkg-config", "--cflags", "--libs", "slither", "libuv"], env=env,
                               capture_output=True, text=True, check=True).stdout.split()
        exe = os.path.join(self.work, "host_pc")
        src = os.path.join(ROOT, "tests", "c", "host_example.c")
        r = subprocess.run(["cc", "-o", exe, src, "-I" + os.path.join(ROOT, "tests", "c"),
                            "-pthread", *flags], env=env, capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.run_host(exe)

    def test_host_program_builds_with_find_package(self):
        # README: find_package(slither) with the prefix on CMAKE_PREFIX_PATH
        proj = os.path.join(self.work, "cmake_host")
        os.makedirs(proj, exist_ok=True)
        with open(os.path.join(proj, "CMakeLists.txt"), "w") as f:
            f.write(textwrap.dedent(f"""
                cmake_minimum_required(VERSION 3.16)
                project(host C)
                find_package(slither REQUIRED)
                find_package(PkgConfig REQUIRED)
                pkg_check_modules(UV REQUIRED IMPORTED_TARGET libuv)
                add_executable(host_cm "{os.path.join(ROOT, "tests", "c", "host_example.c")}")
                target_include_directories(host_cm PRIVATE "{os.path.join(ROOT, "tests", "c")}")
                target_link_libraries(host_cm PRIVATE slither::slither PkgConfig::UV)
            """))
        bdir = os.path.join(proj, "build")
        env = clean_env(CMAKE_PREFIX_PATH=self.prefix)
        for cmd in (["cmake", "-S", proj, "-B", bdir], ["cmake", "--build", bdir]):
            r = subprocess.run(cmd, env=env, capture_output=True, text=True)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.run_host(os.path.join(bdir, "host_cm"))

    def test_library_holds_no_build_path(self):
        # the shared library, without its debug sections, names no directory of
        # the machine that built it: nothing there could be searched
        lib = next(os.path.join(self.libdir, n) for n in sorted(os.listdir(self.libdir))
                   if n.startswith("libslither.so."))
        stripped = os.path.join(self.work, "stripped.so")
        subprocess.run(["objcopy", "--strip-debug", lib, stripped], check=True)
        with open(stripped, "rb") as f:
            data = f.read()
        for path in {ROOT, os.path.realpath(ROOT), BUILD}:
            self.assertNotIn(path.encode(), data, path)

    def test_stock_luajit_loads_the_installed_module(self):
        env = clean_env(LUA_PATH=os.path.join(self.prefix, "share/slither/lua/?.lua") + ";" +
                        os.path.join(self.prefix, "share/slither/lua/?/init.lua") + ";;",
                        LUA_CPATH=os.path.join(self.libdir, "lua/5.1/?.so") + ";;")
        r = subprocess.run(["luajit", "-e", 'local s = require("slither"); print(s.version,'
                            ' s.core.paths().worker)'], cwd=self.work, env=env,
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("0.1.0", r.stdout)


if __name__ == "__main__":
    unittest.main()
