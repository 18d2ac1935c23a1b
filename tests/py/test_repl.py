"""The REPL driven through a pseudo-terminal, and with piped input."""
import os
import pty
import select
import signal
import subprocess
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SLITHER = os.environ.get("SLITHER_BIN") or os.path.join(HERE, "..", "..", "build", "slither")


class Pty:
    """A slither REPL on a pseudo-terminal: send lines, wait for text."""

    def __init__(self, history):
        env = dict(os.environ, SLITHER_HISTORY=history, SLITHER_LOG="warn", TERM="xterm")
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.execvpe(SLITHER, [SLITHER], env)
        self.out = b""

    def read_until(self, text, timeout=10.0):
        want = text.encode()
        deadline = time.monotonic() + timeout
        while want not in self.out:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"did not see {text!r}; screen so far:\n{self.out.decode(errors='replace')}")
            r, _, _ = select.select([self.fd], [], [], left)
            if r:
                try:
                    self.out += os.read(self.fd, 4096)
                except OSError:
                    break
        i = self.out.index(want) + len(want)
        seen, self.out = self.out[:i], self.out[i:]
        return seen.decode(errors="replace")

    def send(self, text):
        os.write(self.fd, text.encode())

    def close(self):
        try:
            self.send("\x04")  # Ctrl-D
        except OSError:
            pass
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                os.close(self.fd)
                return os.waitstatus_to_exitcode(status)
            try:
                select.select([self.fd], [], [], 0.1)
                os.read(self.fd, 4096)
            except OSError:
                pass
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        os.close(self.fd)
        raise AssertionError("the REPL did not exit on Ctrl-D")


class ReplTest(unittest.TestCase):
    def setUp(self):
        self.history = tempfile.mktemp(prefix="slither-history-")

    def tearDown(self):
        if os.path.exists(self.history):
            os.remove(self.history)

    def test_expressions_multiline_errors_and_interrupt(self):
        r = Pty(self.history)
        r.read_until("> ")
        r.send("1 + 2\r")
        self.assertIn("3", r.read_until("\n> "))
        r.send('1, "two", { a = { b = 1 } }, nil\r')
        self.assertIn('1\t"two"\t{ a = { b = 1 } }\tnil', r.read_until("\n> "))
        r.send("for i = 1, 2 do\r")
        r.read_until(">> ")
        r.send("print('line', i)\r")
        r.read_until(">> ")
        r.send("end\r")
        out = r.read_until("\n> ")
        self.assertIn("line\t1", out)
        self.assertIn("line\t2", out)
        r.send("error('oops')\r")
        self.assertIn("oops", r.read_until("\n> "))
        r.send("t = {}; t.me = t; return t\r")
        self.assertIn("<cycle>", r.read_until("\n> "))
        # a long dispatch, interrupted: no worker is left busy
        r.send(f'pool = assert(slither.pool.start{{ size = 2, path = {{ "{HERE}" }} }})\r')
        r.read_until("\n> ")
        r.send('slither.dispatch.run({ 30, 30, 30, 30 }, { pool = pool, module = "sl_testmod", '
               '["function"] = "slow", batch_size = 1 })\r')
        time.sleep(1.0)
        r.send("\x03")
        self.assertIn("interrupted", r.read_until("interrupted"))
        r.read_until("> ")
        r.send("slither.sleep(300) return pool:stats().busy\r")
        self.assertIn("0", r.read_until("\n> "))
        r.send("#pool:pids()\r")
        self.assertIn("2", r.read_until("\n> "))
        # the loop runs between lines: a spawned task finishes while we wait
        r.send("done = false; slither.spawn(function() slither.sleep(100); done = true end)\r")
        r.read_until("\n> ")
        time.sleep(0.5)
        r.send("done\r")
        self.assertIn("true", r.read_until("\n> "))
        self.assertEqual(r.close(), 0)

    def test_history_persists(self):
        r = Pty(self.history)
        r.read_until("> ")
        r.send("answer = 40 + 2\r")
        r.read_until("\n> ")
        self.assertEqual(r.close(), 0)
        with open(self.history) as f:
            self.assertIn("answer", f.read())
        r = Pty(self.history)
        r.read_until("> ")
        r.send("\x1b[A")  # up arrow recalls the last line
        r.read_until("answer")
        r.send("\r")
        r.read_until("\n> ")
        r.send("answer\r")
        self.assertIn("42", r.read_until("\n> "))
        self.assertEqual(r.close(), 0)

    def test_piped_input(self):
        src = "x = 6 * 7\nx\nfunction f(n)\n  return n + 1\nend\nf(x)\nerror('bad')\nx\n"
        r = subprocess.run([SLITHER], input=src, capture_output=True, text=True, timeout=60,
                           env=dict(os.environ, SLITHER_LOG="warn"))
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.splitlines()
        self.assertEqual(lines[0], "42")
        self.assertEqual(lines[1], "43")
        self.assertIn("bad", r.stdout)
        self.assertEqual(lines[-1], "42")


if __name__ == "__main__":
    unittest.main()
