"""The protocol contract (#11): pyworkers/slither_worker/protocol.py against the C
definitions, as printed by tests/c/protocol_dump.c (built from engine/frame.h,
engine/error.h, engine/store.h and engine/store.c). Every constant on either side
must be on the other with the same value; the worker may send only error kinds that
C knows; and no other worker module declares protocol values of its own."""
import ast
import importlib
import json
import os
import subprocess
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
WORKER = os.path.join(ROOT, "pyworkers", "slither_worker")
sys.path.insert(0, os.path.join(ROOT, "pyworkers"))

protocol = importlib.import_module("slither_worker.protocol")
runtime = importlib.import_module("slither_worker.runtime")
store = importlib.import_module("slither_worker.store")  # the module, not store()

DUMP = os.environ.get("PROTOCOL_DUMP") or os.path.join(ROOT, "build", "tests", "protocol_dump")


def c_side():
    out = subprocess.run([DUMP], capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise AssertionError(f"{DUMP} failed: {out.stderr.strip()}")
    return json.loads(out.stdout)


def py_constants():
    """protocol.py's integer constants: every public upper-case name bound to an int."""
    return {k: v for k, v in vars(protocol).items()
            if k.isupper() and not k.startswith("_") and type(v) is int}


def differences(c, py):
    lines = [f"  {k} = {c[k]} in C, missing in protocol.py" for k in sorted(c.keys() - py.keys())]
    lines += [f"  {k} = {py[k]} in protocol.py, missing in C" for k in sorted(py.keys() - c.keys())]
    lines += [f"  {k}: C says {c[k]}, protocol.py says {py[k]}"
              for k in sorted(c.keys() & py.keys()) if c[k] != py[k]]
    return lines


def worker_sources():
    for name in sorted(os.listdir(WORKER)):
        if name.endswith(".py"):
            path = os.path.join(WORKER, name)
            with open(path) as f:
                yield name, ast.parse(f.read(), path)


class ProtocolContract(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.c = c_side()

    def test_constants_equal_c_both_ways(self):
        diff = differences(self.c["constants"], py_constants())
        self.assertFalse(diff, "protocol.py and C disagree (#11):\n" + "\n".join(diff))

    def test_error_kinds_equal_c_in_order(self):
        c_kinds = tuple(self.c["errors"].values())
        self.assertEqual(c_kinds, protocol.ERROR_KINDS,
                         "protocol.ERROR_KINDS must list error.h's kinds in its order (#11)")
        named = {k: v for k, v in vars(protocol).items() if k.isupper() and type(v) is str}
        self.assertTrue(named, "protocol.py names no error kind")
        for name, kind in named.items():
            self.assertIn(name, self.c["errors"], f"protocol.{name}: no SL_{name} in error.h")
            self.assertEqual(self.c["errors"][name], kind, f"protocol.{name} (#11)")

    def test_worker_sends_only_error_kinds_c_knows(self):
        """Every kind the worker can put in an ERROR frame: the second argument of each
        .error(...) call and the value of each {"kind": ...} literal in the worker.
        A kind must be a protocol constant or a literal of ERROR_KINDS; a parameter
        passed through (error()'s own `kind`) is checked at its callers."""
        consts = {k: v for k, v in vars(protocol).items() if k.isupper()}
        sent, unknown = [], []

        def kind_of(node, params, where):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                sent.append(node.value)
            elif isinstance(node, ast.Name) and node.id in consts:
                sent.append(consts[node.id])
            elif isinstance(node, ast.Attribute) and node.attr in consts:
                sent.append(consts[node.attr])
            elif isinstance(node, ast.Name) and node.id in params:
                pass
            else:
                unknown.append(f"{where}: {ast.unparse(node)}")

        for name, tree in worker_sources():
            for fn in ast.walk(tree):
                if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                params = {a.arg for a in fn.args.args + fn.args.kwonlyargs}
                for node in ast.walk(fn):
                    where = f"{name}:{getattr(node, 'lineno', '?')}"
                    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                            and node.func.attr == "error" and len(node.args) >= 2):
                        kind_of(node.args[1], params, where)
                    elif isinstance(node, ast.Dict):
                        for k, v in zip(node.keys, node.values):
                            if isinstance(k, ast.Constant) and k.value == "kind":
                                kind_of(v, params, where)
        self.assertFalse(unknown, "cannot tell which error kind these send:\n" +
                         "\n".join(unknown))
        self.assertGreaterEqual(len(sent), 3, "the scan found no error the worker sends")
        strangers = sorted(set(sent) - set(self.c["errors"].values()))
        self.assertFalse(strangers, f"the worker sends error kinds that error.h lacks: {strangers}")
        # the engine takes from a worker only the kinds wire.h lists: any other
        # fails the call as 'protocol' and replaces the worker
        self.assertEqual(sorted(set(sent)), sorted(self.c["worker_kinds"]),
                         "the kinds the worker sends must be SL_WIRE_WORKER_KINDS (#11)")

    def test_no_other_worker_module_declares_protocol_values(self):
        """protocol.py is the one Python owner: another module may import a constant,
        never bind one (under its own name, without its prefix, or with a leading _)."""
        names = set(py_constants()) | {k for k, v in vars(protocol).items()
                                       if k.isupper() and type(v) is str}
        short = set()
        for n in names:
            for prefix in ("FRAME_", "TABLE_"):
                if n.startswith(prefix):
                    short.add(n[len(prefix):])
        banned = names | short | {"_" + n for n in names | short}
        found = []
        for name, tree in worker_sources():
            if name == "protocol.py":
                continue
            for node in ast.walk(tree):
                targets = []
                if isinstance(node, ast.Assign):
                    targets = node.targets
                elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
                    targets = [node.target]
                for t in targets:
                    for n in ast.walk(t):
                        if isinstance(n, ast.Name) and n.id in banned:
                            found.append(f"{name}:{node.lineno}: {n.id}")
        self.assertFalse(found, "protocol values declared outside protocol.py:\n" +
                         "\n".join(found))

    def test_worker_structs_match_the_layout(self):
        self.assertEqual(protocol.FRAME_PREFIX, runtime._HDR.size)
        self.assertEqual(protocol.SEG_SLOT, store._SLOT.size)
        self.assertEqual(protocol.SEG_BAG_ENTRY, store._ENTRY.size)


if __name__ == "__main__":
    unittest.main()
