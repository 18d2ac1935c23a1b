"""The worker loop: frames in on fd 3, calls, frames out.

Frame layout (little-endian), after a u32 length:
    u8 kind, u8 flags, u16 reserved, u32 id, u32 meta_len, meta,
    u32 data_len, data, attachments
"""
import importlib
import json
import os
import select
import struct
import sys
import threading
import time
import traceback

from . import codec

HELLO, CALL, RESULT, ERROR, RELEASE = 1, 2, 3, 4, 5
FLAG_SPIN = 1
FLAG_PICKLE = 2
_HDR = struct.Struct("<IBBHII")
_BODY = struct.Struct("<BBHII")
_U32 = struct.Struct("<I")

# _SPIN_NOTE: waking a process that sleeps on another CPU costs tens of
# microseconds on virtual machines, more than a small call itself. After a reply to
# a call flagged FLAG_SPIN, the worker polls its pipe for SLITHER_SPIN_US
# microseconds before it blocks, so a caller that sends the next call at once finds
# it awake. The engine sets the flag only while the busy workers and the engine fit
# on the CPUs, so polling never takes a core from real work.
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

    def send(self, kind, rid, meta=b"", data=b"", att=b"", flags=0):
        total = 16 + len(meta) + len(data) + len(att)
        head = _HDR.pack(total, kind, flags, 0, rid, len(meta))
        parts = [head, meta, len(data).to_bytes(4, "little"), data, att]
        with self.lock:
            n = os.writev(self.fd, parts)
            if n < total + 4:  # a short write on a full pipe: finish it piece by piece
                view = memoryview(b"".join(parts))[n:]
                while view:
                    view = view[os.write(self.fd, view):]


class Worker:
    def __init__(self, fd, threads):
        self.chan = Channel(fd)
        self.fd = fd
        self.threads = threads
        self.funcs = {}
        self.meta_cache = {}
        self.spin_next = 0
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
            "codecs": ["pickle", "json"],
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

    def call(self, rid, meta, data, att, flags=0):
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
        pickled = flags & FLAG_PICKLE
        try:
            args = codec.loads_pickle(data) if pickled else codec.decode(data, att)
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
        if pickled:
            out = codec.dumps_pickle(res)
            if out is not None:
                return self.chan.send(RESULT, rid, b"", out, b"", FLAG_PICKLE)
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
        """frame: a memoryview of one frame (after its length), valid until the next
        read; what outlives this call is copied out."""
        kind, flags, _res, rid, mlen = _BODY.unpack_from(frame, 0)
        self.spin_next = flags & FLAG_SPIN
        off = 12
        meta = bytes(frame[off:off + mlen])
        off += mlen
        dlen = _U32.unpack_from(frame, off)[0]
        off += 4
        data = bytes(frame[off:off + dlen])
        att = bytes(frame[off + dlen:]) if off + dlen < len(frame) else b""
        if kind == CALL:
            if self.pool is not None:
                self.pool.submit(self.safe_call, rid, meta, data, att, flags)
            else:
                self.safe_call(rid, meta, data, att, flags)
        elif kind == RELEASE:
            sid = json.loads(meta).get("s")
            _sessions.pop(sid, None)

    def run(self):
        # One reusable buffer: frames are parsed in place, and a read allocates
        # nothing (a fresh 1 MiB bytes per read costs an mmap and an munmap).
        buf = bytearray(1 << 16)
        view = memoryview(buf)
        start = end = 0
        readv, fd, u32 = os.readv, self.fd, _U32.unpack_from
        spin = int(os.environ.get("SLITHER_SPIN_US", "0") or 0) / 1e6
        clock = time.perf_counter
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        poll = poller.poll
        while True:
            while end - start >= 4:
                n = u32(buf, start)[0]
                if end - start < n + 4:
                    break
                self.dispatch(view[start + 4:start + 4 + n])
                start += n + 4
            if start == end:
                start = end = 0
            need = (u32(buf, start)[0] + 4) if end - start >= 4 else 4
            if need > len(buf) - start:
                if need > len(buf):  # a frame larger than the buffer: grow it
                    nbuf = bytearray(max(need, 2 * len(buf)))
                    nbuf[:end - start] = view[start:end]
                    view.release()
                    buf, view = nbuf, memoryview(nbuf)
                else:
                    view[:end - start] = view[start:end]
                end -= start
                start = 0
            if spin and self.spin_next and start == end and self.pool is None:
                # Poll briefly before sleeping: see _SPIN_NOTE.
                deadline = clock() + spin
                while not poll(0) and clock() < deadline:
                    pass
            try:
                k = readv(fd, [view[end:]])
            except OSError:
                k = 0
            if not k:
                break
            end += k
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
