"""The worker loop: frames in on fd 3, calls, frames out (the layout, kinds and
flags are in protocol.py)."""
import importlib
import json
import collections
import os
import pickle
import select
import struct
import sys
import threading
import time
import traceback

from . import codec
from .protocol import (ECODEC, EIMPORT, EMISMATCH, EPYTHON, FRAME_CALL, FRAME_ERROR,
                       FRAME_FLAG_PICKLE, FRAME_FLAG_SPIN, FRAME_HELLO, FRAME_PREFIX,
                       FRAME_RELEASE, FRAME_RESULT, FRAME_VIEW, FRAME_VIEW_REPLY)

_HDR = struct.Struct("<IBBHII")  # FRAME_PREFIX: len, kind, flags, reserved, id, meta_len
_BODY = struct.Struct("<BBHII")
_U32 = struct.Struct("<I")

# _SPIN_NOTE: waking a process that sleeps on another CPU costs tens of
# microseconds on virtual machines, more than a small call itself. After a reply to
# a call flagged FRAME_FLAG_SPIN, the worker polls its pipe for SLITHER_SPIN_US
# microseconds before it blocks, so a caller that sends the next call at once finds
# it awake. The engine sets the flag only while the busy workers and the engine fit
# on the CPUs, so polling never takes a core from real work.
_local = threading.local()
_sessions = {}
_name = os.environ.get("SLITHER_WORKER_NAME", "worker")


_worker = None


def _describe(e, with_type=True):
    """str(e), prefixed with its type's name; an exception whose __str__ raises
    (or returns something that is not a str) is named by its type alone."""
    try:
        text = str(e)
        if not isinstance(text, str):
            raise TypeError
    except BaseException:
        text = f"<the {type(e).__name__}'s __str__ failed>"
    return f"{type(e).__name__}: {text}" if with_type else text


class ViewError(Exception):
    """A view failed in the engine: its handler raised, timed out, or the view is
    not visible to this call's session."""


def view(name, args=None):
    """Call the engine's view `name` from a running function; returns its result."""
    if _worker is None:
        raise RuntimeError("slither_worker.view() works only inside a Slither worker")
    return _worker.call_view(name, args)


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
        # the len field: the prefix after itself, meta, data_len, data, attachments
        total = FRAME_PREFIX + len(meta) + len(data) + len(att)
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
        self.buf = bytearray(1 << 16)
        self.mv = memoryview(self.buf)
        self.start = self.end = 0
        self.pending = collections.deque()
        self.view_waits = {}
        self.view_lock = threading.Lock()
        self.next_view = 1
        self.reader_thread = threading.current_thread()
        self.spin_us = int(os.environ.get("SLITHER_SPIN_US", "0") or 0) / 1e6
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        self.poll = poller.poll
        self.pool = None
        # Calls of one session run one at a time, in arrival order: session_runs
        # maps a session with a call running to the calls of it still waiting. The
        # thread that finishes a session's call runs the next one, so a waiting
        # call never holds a thread and other sessions keep the rest.
        self.session_runs = {}
        self.session_lock = threading.Lock()
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
        self.chan.send(FRAME_HELLO, 0, json.dumps(info).encode())

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
        self.chan.send(FRAME_ERROR, rid, meta.encode())

    def call_meta(self, meta):
        m = self.meta_cache.get(meta)
        if m is None:
            m = json.loads(meta)
            if len(self.meta_cache) > 4096:
                self.meta_cache.clear()
            self.meta_cache[meta] = m
        return m

    def call(self, rid, m, data, att, flags=0):
        mod, fn = m["m"], m["f"]
        try:
            func = self.resolve(mod, fn)
        except LookupError as e:
            return self.error(rid, EIMPORT, "LookupError", _describe(e, False))
        except BaseException as e:  # ImportError, SyntaxError, anything at import time
            if isinstance(e, ModuleNotFoundError) and e.name and mod.startswith(e.name):
                msg = f"module '{mod}' not found"
            else:
                msg = f"importing module '{mod}' failed: {_describe(e)}"
            return self.error(rid, EIMPORT, type(e).__name__, msg, traceback.format_exc())
        pickled = flags & FRAME_FLAG_PICKLE
        try:
            args = codec.loads_pickle(data) if pickled else codec.decode(data, att)
        except Exception as e:
            return self.error(rid, ECODEC, type(e).__name__,
                              f"could not decode payloads: {_describe(e, False)}")
        _local.session = m.get("s")
        _local.call_id = rid
        try:
            res = func(args)
        except BaseException as e:
            tb = "".join(traceback.format_exception(type(e), e, e.__traceback__.tb_next))
            return self.error(rid, EPYTHON, type(e).__name__, _describe(e, False), tb)
        finally:
            _local.session = None
            _local.call_id = None
        if not isinstance(res, (list, tuple)):
            return self.error(rid, EMISMATCH, "TypeError",
                              f"{mod}.{fn} returned {type(res).__name__}, expected a list of "
                              f"{len(args)} results")
        if len(res) != len(args):
            return self.error(rid, EMISMATCH, "ValueError",
                              f"{mod}.{fn} returned {len(res)} results for {len(args)} payloads")
        if pickled:
            out = codec.dumps_pickle(res)
            if out is not None:
                return self.chan.send(FRAME_RESULT, rid, b"", out, b"", FRAME_FLAG_PICKLE)
        try:
            out, oatt = codec.encode(res)
        except Exception as e:  # TypeError, ValueError, RecursionError (too deep)
            return self.error(rid, ECODEC, type(e).__name__,
                              f"could not encode the results: {_describe(e, False)}")
        self.chan.send(FRAME_RESULT, rid, b"", out, oatt)

    def safe_call(self, rid, *a):
        """Run a call and answer it, whatever fails: the engine waits for an answer
        to every call, and an exception lost in a pool thread (or one that ends the
        reader loop) would leave it waiting, or kill the worker over one result.
        Nothing here may raise again: the exception's text and traceback are taken
        through _describe, since user code chose their __str__."""
        try:
            self.call(rid, *a)
        except OSError:
            os._exit(0)  # the engine went away while we were answering
        except BaseException as e:
            self.last_resort(rid, e)

    def last_resort(self, rid, e):
        """Answer call rid with the exception e that escaped Worker.call."""
        try:
            try:
                tb = "".join(traceback.format_exception(type(e), e, e.__traceback__))
            except BaseException:
                tb = ""
            self.error(rid, EPYTHON, type(e).__name__,
                       f"the worker could not answer the call: {_describe(e)}", tb)
        except OSError:
            os._exit(0)
        except BaseException:  # even json.dumps failed: answer with what is sure to encode
            try:
                self.error(rid, EPYTHON, "Exception", "the worker could not answer the call")
            except BaseException:
                os._exit(0)

    def submit(self, job):
        """Hand a call to the thread pool, or queue it behind its session's running
        call. Sessions hold per-session state that user code updates without locks
        (a read-modify-write of session()), so one session's calls must not overlap;
        calls of other sessions and calls without one run in parallel."""
        sid = job[1].get("s")
        if sid is not None:
            with self.session_lock:
                waiting = self.session_runs.get(sid)
                if waiting is not None:
                    waiting.append(job)
                    return
                self.session_runs[sid] = collections.deque()
            self.pool.submit(self.run_session, sid, job)
        else:
            self.pool.submit(self.safe_call, *job)

    def run_session(self, sid, job):
        while True:
            self.safe_call(*job)
            with self.session_lock:
                waiting = self.session_runs[sid]
                if not waiting:
                    del self.session_runs[sid]
                    return
                job = waiting.popleft()

    def dispatch(self, frame):
        """frame: one frame (after its length), a memoryview valid until the next
        read or bytes; what outlives this call is copied out."""
        kind, flags, _res, rid, mlen = _BODY.unpack_from(frame, 0)
        off = 12
        meta = bytes(frame[off:off + mlen])
        off += mlen
        dlen = _U32.unpack_from(frame, off)[0]
        off += 4
        data = bytes(frame[off:off + dlen])
        att = bytes(frame[off + dlen:]) if off + dlen < len(frame) else b""
        if kind == FRAME_CALL:
            self.spin_next = flags & FRAME_FLAG_SPIN
            try:
                m = self.call_meta(meta)
                m["m"], m["f"]
            except Exception as e:  # the engine checks names; this answers, whatever came
                return self.error(rid, ECODEC, type(e).__name__,
                                  f"the call's header could not be read: {_describe(e, False)}")
            job = (rid, m, data, att, flags)
            if self.pool is not None:
                self.submit(job)
            else:
                self.safe_call(*job)
        elif kind == FRAME_RELEASE:
            sid = json.loads(meta).get("s")
            _sessions.pop(sid, None)
        elif kind == FRAME_VIEW_REPLY:
            with self.view_lock:
                slot = self.view_waits.pop(rid, None)
            if slot is not None:
                slot[1] = (flags, meta, data)
                slot[0].set()

    def read_frame(self, spin=False):
        """The next frame as a memoryview into the read buffer (valid until the next
        read), or None at end of file. One reusable buffer: a read allocates
        nothing (a fresh 1 MiB bytes per read costs an mmap and an munmap)."""
        u32 = _U32.unpack_from
        while True:
            buf, start, end = self.buf, self.start, self.end
            if end - start >= 4:
                n = u32(buf, start)[0]
                if end - start >= n + 4:
                    self.start = start + n + 4
                    return self.mv[start + 4:start + 4 + n]
                need = n + 4
            else:
                need = 4
            if start == end:
                self.start = self.end = start = end = 0
            if need > len(buf) - start:
                if need > len(buf):  # a frame larger than the buffer: grow it
                    nbuf = bytearray(max(need, 2 * len(buf)))
                    nbuf[:end - start] = self.mv[start:end]
                    self.mv.release()
                    self.buf, self.mv = nbuf, memoryview(nbuf)
                else:
                    self.mv[:end - start] = self.mv[start:end]
                self.end = end = end - start
                self.start = start = 0
            if spin and self.spin_us and start == end:
                # Poll briefly before sleeping: see _SPIN_NOTE.
                deadline = time.perf_counter() + self.spin_us
                while not self.poll(0) and time.perf_counter() < deadline:
                    pass
            try:
                k = os.readv(self.fd, [self.mv[end:]])
            except OSError:
                k = 0
            if not k:
                return None
            self.end = end + k

    def run(self):
        pending = self.pending
        while True:
            if pending:
                frame = pending.popleft()
            else:
                frame = self.read_frame(spin=self.spin_next and self.pool is None)
                if frame is None:
                    break
            self.dispatch(frame)
        # End of file: the engine retires this worker. Finish what is running.
        if self.pool is not None:
            self.pool.shutdown(wait=True)

    def call_view(self, name, args):
        """Ask the engine to run view `name` with args; its result, or ViewError."""
        call_id = getattr(_local, "call_id", None)
        if call_id is None:
            raise RuntimeError("slither_worker.view() works only inside a call")
        with self.view_lock:
            vid = self.next_view
            self.next_view = (self.next_view + 1) & 0xffffffff or 1
            slot = [threading.Event(), None]
            self.view_waits[vid] = slot
        meta = f"{call_id}:{name}".encode()
        self.chan.send(FRAME_VIEW, vid, meta, pickle.dumps(args, protocol=5), b"",
                       FRAME_FLAG_PICKLE)
        if threading.current_thread() is self.reader_thread:
            # This thread is also the frame reader: read until the reply comes, and
            # keep other frames for later.
            while not slot[0].is_set():
                # the engine answers views at once: poll before sleeping (_SPIN_NOTE)
                frame = self.read_frame(spin=True)
                if frame is None:
                    raise ConnectionError("the engine went away during a view call")
                kind = frame[0]
                if kind == FRAME_VIEW_REPLY:
                    self.dispatch(frame)
                else:
                    self.pending.append(bytes(frame))
        else:
            slot[0].wait()
        flags, rmeta, data = slot[1]
        if rmeta:
            raise ViewError(json.loads(rmeta).get("error", "view failed"))
        return pickle.loads(data) if flags & FRAME_FLAG_PICKLE else json.loads(data)


def main():
    _die_with_parent()
    threads = int(os.environ.get("SLITHER_THREADS", "1") or 1)
    global _worker
    w = _worker = Worker(3, threads)
    w.hello()
    w.run()
    sys.stdout.flush()
    os._exit(0)
