"""The worker loop: frames in on fd 3, calls, frames out.

Frame layout (little-endian), after a u32 length:
    u8 kind, u8 flags, u16 reserved, u32 id, u32 meta_len, meta,
    u32 data_len, data, attachments
"""
import importlib
import json
import os
import struct
import sys
import threading
import traceback

from . import codec

HELLO, CALL, RESULT, ERROR, RELEASE = 1, 2, 3, 4, 5
_HDR = struct.Struct("<IBBHII")

_local = threading.local()
_sessions = {}
_name = os.environ.get("SLITHER_WORKER_NAME", "worker")


def worker_name():
    return _name


def current_session_id():
    return getattr(_local, "session", None)


def session():
    """The dict that holds this worker's state for the running call's session."""
    sid = getattr(_local, "session", None)
    if sid is None:
        raise RuntimeError("this call has no session: pass session= when calling the pool")
    st = _sessions.get(sid)
    if st is None:
        st = _sessions.setdefault(sid, {})
    return st


def _die_with_parent():
    """Ask the kernel for SIGKILL when the engine dies, then make sure it has not
    died already (the request only covers deaths after it is made)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0)
    except Exception:
        pass
    ppid = os.environ.get("SLITHER_PARENT_PID")
    if ppid and os.getppid() != int(ppid):
        os._exit(70)


class Channel:
    def __init__(self, fd):
        self.fd = fd
        self.lock = threading.Lock()

    def send(self, kind, rid, meta=b"", data=b"", att=b""):
        total = 16 + len(meta) + len(data) + len(att)
        head = _HDR.pack(total, kind, 0, 0, rid, len(meta))
        buf = b"".join((head, meta, len(data).to_bytes(4, "little"), data, att))
        view = memoryview(buf)
        with self.lock:
            while view:
                n = os.write(self.fd, view)
                view = view[n:]


class Worker:
    def __init__(self, fd, threads):
        self.chan = Channel(fd)
        self.fd = fd
        self.threads = threads
        self.funcs = {}
        self.meta_cache = {}
        self.pool = None
        if threads > 1:
            from concurrent.futures import ThreadPoolExecutor

            self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="slither")

    def hello(self):
        import platform
        import sysconfig

        gil = getattr(sys, "_is_gil_enabled", None)
        info = {
            "name": _name,
            "pid": os.getpid(),
            "python": platform.python_version(),
            "implementation": platform.python_implementation(),
            "executable": sys.executable,
            "free_threaded": bool(sysconfig.get_config_var("Py_GIL_DISABLED")),
            "gil_enabled": bool(gil()) if gil else True,
            "threads": self.threads,
        }
        self.chan.send(HELLO, 0, json.dumps(info).encode())

    def resolve(self, mod, fn):
        key = (mod, fn)
        f = self.funcs.get(key)
        if f is not None:
            return f
        m = importlib.import_module(mod)
        f = getattr(m, fn, None)
        if f is None:
            raise LookupError(f"module '{mod}' has no function '{fn}'")
        if not callable(f):
            raise LookupError(f"'{mod}.{fn}' is not callable")
        self.funcs[key] = f
        return f

    def error(self, rid, kind, etype, message, tb=""):
        meta = json.dumps({"kind": kind, "type": etype, "message": message,
                           "traceback": tb, "worker": _name, "pid": os.getpid()})
        self.chan.send(ERROR, rid, meta.encode())

    def call(self, rid, meta, data, att):
        m = self.meta_cache.get(meta)
        if m is None:
            m = json.loads(meta)
            if len(self.meta_cache) > 4096:
                self.meta_cache.clear()
            self.meta_cache[meta] = m
        mod, fn = m["m"], m["f"]
        try:
            func = self.resolve(mod, fn)
        except LookupError as e:
            return self.error(rid, "import", "LookupError", str(e))
        except BaseException as e:  # ImportError, SyntaxError, anything at import time
            if isinstance(e, ModuleNotFoundError) and e.name and mod.startswith(e.name):
                msg = f"module '{mod}' not found"
            else:
                msg = f"importing module '{mod}' failed: {type(e).__name__}: {e}"
            return self.error(rid, "import", type(e).__name__, msg, traceback.format_exc())
        try:
            args = codec.decode(data, att)
        except Exception as e:
            return self.error(rid, "python", type(e).__name__, f"could not decode payloads: {e}")
        _local.session = m.get("s")
        try:
            res = func(args)
        except BaseException as e:
            tb = "".join(traceback.format_exception(type(e), e, e.__traceback__.tb_next))
            return self.error(rid, "python", type(e).__name__, str(e), tb)
        finally:
            _local.session = None
        if not isinstance(res, (list, tuple)):
            return self.error(rid, "result_mismatch", "TypeError",
                              f"{mod}.{fn} returned {type(res).__name__}, expected a list of "
                              f"{len(args)} results")
        if len(res) != len(args):
            return self.error(rid, "result_mismatch", "ValueError",
                              f"{mod}.{fn} returned {len(res)} results for {len(args)} payloads")
        try:
            out, oatt = codec.encode(res)
        except (TypeError, ValueError) as e:
            return self.error(rid, "python", type(e).__name__, f"could not encode the results: {e}")
        self.chan.send(RESULT, rid, b"", out, oatt)

    def safe_call(self, *a):
        try:
            self.call(*a)
        except OSError:
            os._exit(0)  # the engine went away while we were answering

    def dispatch(self, frame):
        kind, _flags, _res, rid, mlen = struct.unpack_from("<BBHII", frame, 0)
        off = 12
        meta = frame[off:off + mlen]
        off += mlen
        dlen = int.from_bytes(frame[off:off + 4], "little")
        off += 4
        data = frame[off:off + dlen]
        att = frame[off + dlen:]
        if kind == CALL:
            if self.pool is not None:
                self.pool.submit(self.safe_call, rid, meta, data, att)
            else:
                self.safe_call(rid, meta, data, att)
        elif kind == RELEASE:
            sid = json.loads(meta).get("s")
            _sessions.pop(sid, None)

    def run(self):
        buf = bytearray()
        read = os.read
        fd = self.fd
        while True:
            while len(buf) >= 4:
                n = int.from_bytes(buf[0:4], "little")
                if len(buf) < n + 4:
                    break
                frame = bytes(buf[4:n + 4])
                del buf[:n + 4]
                self.dispatch(frame)
            try:
                chunk = read(fd, 1 << 20)
            except OSError:
                chunk = b""
            if not chunk:
                break
            buf += chunk
        # End of file: the engine retires this worker. Finish what is running.
        if self.pool is not None:
            self.pool.shutdown(wait=True)


def main():
    _die_with_parent()
    threads = int(os.environ.get("SLITHER_THREADS", "1") or 1)
    w = Worker(3, threads)
    w.hello()
    w.run()
    sys.stdout.flush()
    os._exit(0)
