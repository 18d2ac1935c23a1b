"""A real worker process driven with raw frames over its pipe: frames the engine
would never send still get an answer for their call, and the worker lives on
(#12 item 11)."""
import json
import os
import socket
import struct
import subprocess
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "pyworkers"))
from slither_worker.protocol import (ECODEC, FRAME_CALL, FRAME_ERROR, FRAME_HELLO,  # noqa: E402
                                     FRAME_RESULT)

HDR = struct.Struct("<IBBHII")


class RawWorker:
    def __init__(self, threads):
        self.sock, theirs = socket.socketpair()
        env = dict(os.environ, SLITHER_THREADS=str(threads),
                   PYTHONPATH=os.pathsep.join([os.path.join(ROOT, "pyworkers"), HERE]))
        # the worker's pipe is its fd 3, as the engine starts it
        self.proc = subprocess.Popen(
            ["/bin/sh", "-c", 'exec "$0" -m slither_worker 3<&0 </dev/null', sys.executable],
            env=env, stdin=theirs)
        theirs.close()
        self.sock.settimeout(30)
        self.buf = b""

    def send(self, kind, rid, meta, data=b""):
        total = 16 + len(meta) + len(data)
        self.sock.sendall(HDR.pack(total, kind, 0, 0, rid, len(meta)) + meta +
                          len(data).to_bytes(4, "little") + data)

    def read(self):
        while True:
            if len(self.buf) >= 4:
                n = int.from_bytes(self.buf[:4], "little")
                if len(self.buf) >= n + 4:
                    frame, self.buf = self.buf[4:n + 4], self.buf[n + 4:]
                    _, kind, _flags, _r, rid, mlen = HDR.unpack_from(b"\0\0\0\0" + frame)
                    meta = frame[12:12 + mlen]
                    dlen = int.from_bytes(frame[12 + mlen:16 + mlen], "little")
                    return kind, rid, meta, frame[16 + mlen:16 + mlen + dlen]
            chunk = self.sock.recv(65536)
            if not chunk:
                raise AssertionError("the worker closed its pipe")
            self.buf += chunk

    def close(self):
        self.sock.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class BadCallFrames(unittest.TestCase):
    def check(self, threads):
        w = RawWorker(threads)
        try:
            kind, _, _, _ = w.read()
            self.assertEqual(kind, FRAME_HELLO)
            bad = [b'{"m":,"f":"pid"}', b'{"m":"sl_worker_mod\xff","f":"pid"}', b'[1]',
                   b'{"f":"pid"}', b'']
            for rid, meta in enumerate(bad, start=7):
                w.send(FRAME_CALL, rid, meta, b"[0]")
                kind, got, meta_out, _ = w.read()
                self.assertEqual((kind, got), (FRAME_ERROR, rid), f"meta {meta!r}")
                err = json.loads(meta_out)
                self.assertEqual(err["kind"], ECODEC, err)
                self.assertIn("header could not be read", err["message"])
            w.send(FRAME_CALL, 99, b'{"m":"sl_worker_mod","f":"pid"}', b"[0]")
            kind, got, _, data = w.read()
            self.assertEqual((kind, got), (FRAME_RESULT, 99))
            self.assertEqual(json.loads(data), [w.proc.pid])
        finally:
            w.close()

    def test_threads_1(self):
        self.check(1)

    def test_threads_4(self):
        self.check(4)


if __name__ == "__main__":
    unittest.main()
