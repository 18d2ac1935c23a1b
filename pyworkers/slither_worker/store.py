"""Direct reads of the engine's store through shared memory (see engine/store.h).

    features = slither_worker.store("features")
    features.get("features", "user:42")        # -> {"tier": "gold"} or None
    features.get_many("features", ["a", "b"])  # one consistent snapshot
    features.size("features")

No message goes to the engine: the worker maps each table's segment read-only and
follows the same rules as the engine's own readers. Words are read whole (8-byte
aligned loads are atomic on the platforms Slither runs on) and bytes behind a
published word never change, so a single read needs no lock (a bag's list grows in
place, but past the length its value word gives). A segment replaced by
reload or compaction is marked retired; the next read finds the new one through
the store's directory.
"""
import io
import mmap
import os
import pickle
import stat
import struct
import time
import zlib

from .protocol import (DIR_E_NAME, DIR_E_PATH, DIR_ENTRY, DIR_H_MAGIC, DIR_H_NTABLES,
                       DIR_H_SEQ, DIR_HDR, DIR_MAGIC, SEG_BAG_ENTRY, SEG_BAG_HDR, SEG_H_CAP,
                       SEG_H_COUNT, SEG_H_HEAP_OFF, SEG_H_MAGIC, SEG_H_NVALS, SEG_H_RETIRED,
                       SEG_H_SEQ, SEG_H_TYPE, SEG_HDR, SEG_MAGIC, SEG_PATH_MAX, SEG_SLOT,
                       STORE_NAME_MAX, TABLE_BAG, TABLE_ORDERED_SET, TABLE_SET)

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_SLOT = struct.Struct("<QQQ")  # hash, key word, value word: SEG_SLOT bytes
_ENTRY = struct.Struct("<II")  # a bag list entry, value offset and length: SEG_BAG_ENTRY bytes

_stores = {}

# A reader waits this long for a writer in the middle of a write, or for a segment
# the directory names, then raises TimeoutError naming what it waited for: a writer
# that died mid-write, or a missing file, must not hang a worker forever.
WAIT_S = 5.0


class _PlainUnpickler(pickle.Unpickler):
    """Store values are plain values (the engine writes no class or reduce): a
    value that names a global is refused before anything runs."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(
            f"a store value names the global {module}.{name}; store values are plain "
            "values, so it is refused")


def _loads(b):
    try:
        return _PlainUnpickler(io.BytesIO(b)).load()
    except pickle.UnpicklingError:
        raise
    except Exception as e:  # noqa: BLE001
        # Python's unpickler raises many types on bytes that are not a whole pickle
        # (EOFError, AttributeError for APPEND on a dict, ...): one type for all
        raise pickle.UnpicklingError(f"a store value is not a valid pickle: "
                                     f"{type(e).__name__}: {e}") from None


def _open_private(path):
    """A read-only mapping of path, if it is a regular file of this user that no one
    else may write (the engine creates them 0600); symlinks are not followed."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if (not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or
                st.st_mode & 0o077):
            raise PermissionError(
                f"{path} is not a private store file of this user (uid {st.st_uid}, "
                f"mode {stat.filemode(st.st_mode)}): refusing to read it")
        if st.st_size == 0:
            raise _corrupt(path, "it is empty")
        return mmap.mmap(fd, 0, prot=mmap.PROT_READ)
    finally:
        os.close(fd)


class _Wait:
    """A wait for another process's write, given up after WAIT_S. A write in
    progress ends within microseconds, so the first rounds only yield the CPU; then
    the wait sleeps, twice as long each round up to 5 ms. Spinning on sched_yield
    alone kept a core busy for all of WAIT_S (the scheduler returns at once when
    nothing else runs); sleeping costs a wait that does end up to 5 ms more."""

    __slots__ = ("deadline", "rounds", "pause")

    def __init__(self):
        self.deadline = time.monotonic() + WAIT_S
        self.rounds = 0
        self.pause = 50e-6

    def again(self, what):
        """Wait a little; raise TimeoutError(what()) once the deadline has passed."""
        if time.monotonic() > self.deadline:
            raise TimeoutError(what())
        self.rounds += 1
        if self.rounds <= 100:
            os.sched_yield()
        else:
            time.sleep(self.pause)
            self.pause = min(self.pause * 2, 5e-3)


def _engine_pid():
    pid = os.environ.get("SLITHER_PARENT_PID")
    return int(pid) if pid else os.getppid()


def _dir_path(name):
    """/dev/shm/slither.<engine pid>.<token>.<name>: the token is random per engine
    process and reaches its workers in SLITHER_STORE_TOKEN, the directory (another
    than /dev/shm when the engine has SLITHER_SHM_DIR) in SLITHER_SHM_DIR."""
    if not isinstance(name, str) or not name or "/" in name or "\0" in name:
        raise KeyError(f"no store named {name!r}: a store name is a non-empty str "
                       "without '/'")
    token = os.environ.get("SLITHER_STORE_TOKEN")
    if not token:
        raise KeyError(f"no store named {name!r}: this process was not started by a "
                       "Slither engine (SLITHER_STORE_TOKEN is not set)")
    shm = os.environ.get("SLITHER_SHM_DIR") or "/dev/shm"
    return f"{shm}/slither.{_engine_pid()}.{token}.{name}"


class StoreCorrupt(OSError):
    """A store file whose bytes do not hold together: it was not written by the
    engine, or not by this version of it. Nothing is read past its end."""


def _corrupt(path, why):
    return StoreCorrupt(f"{path} is not a valid Slither store file: {why}")


def store(name):
    """The engine's store `name`. KeyError names it when no such store runs."""
    s = _stores.get(name)
    if s is None:
        s = _stores[name] = StoreReader(name)
    elif not os.path.exists(s.dir_path):
        _stores.pop(name, None)
        raise KeyError(f"no store named {name!r} is running in the engine")
    return s


def _key(key):
    if isinstance(key, str):
        return b"s" + key.encode()
    if isinstance(key, (int, float)) and not isinstance(key, bool):
        return b"n" + struct.pack("<d", float(key) + 0.0)
    if isinstance(key, bytes):
        return b"s" + key
    raise TypeError(f"store keys are str or numbers, got {type(key).__name__}")


class _Table:
    __slots__ = ("mm", "type", "cap", "heap", "size", "path")

    def __init__(self, path):
        self.mm = mm = _open_private(path)
        self.path = path
        self.size = size = len(mm)
        if size < SEG_HDR or _U32.unpack_from(mm, SEG_H_MAGIC)[0] != SEG_MAGIC:
            raise _corrupt(path, "no table segment header")
        self.type = _U32.unpack_from(mm, SEG_H_TYPE)[0]
        self.cap = cap = _U32.unpack_from(mm, SEG_H_CAP)[0]
        self.heap = heap = _U64.unpack_from(mm, SEG_H_HEAP_OFF)[0]
        if self.type not in (TABLE_SET, TABLE_ORDERED_SET, TABLE_BAG):
            raise _corrupt(path, f"table type {self.type}")
        if cap == 0 or cap & (cap - 1):
            raise _corrupt(path, f"{cap} slots is not a power of two")
        if SEG_HDR + cap * SEG_SLOT > heap or heap > size:
            raise _corrupt(path, f"{cap} slots and a heap at {heap} do not fit {size} bytes")

    def bytes_at(self, off, n):
        """n bytes at heap offset off, refused when they are not all in the file."""
        start = self.heap + off
        if start + n > self.size:
            raise _corrupt(self.path, f"{n} bytes at heap offset {off} run past its end")
        return self.mm[start:start + n]


class StoreReader:
    def __init__(self, name):
        self.name = name
        self.dir_path = _dir_path(name)
        self._open_dir()

    def _open_dir(self):
        try:
            self.dir = _open_private(self.dir_path)
            self.dir_ino = os.stat(self.dir_path, follow_symlinks=False).st_ino
        except FileNotFoundError:
            raise KeyError(f"no store named {self.name!r} is running in the engine") from None
        if len(self.dir) < DIR_HDR or _U32.unpack_from(self.dir, DIR_H_MAGIC)[0] != DIR_MAGIC:
            raise _corrupt(self.dir_path, "no store directory header")
        self.tables = {}

    def _lookup_dir(self, table):
        """The current segment path of `table`, read under the directory's seqlock."""
        d = self.dir
        wait = _Wait()
        while True:
            s1 = _U64.unpack_from(d, DIR_H_SEQ)[0]
            if s1 & 1:
                wait.again(lambda: f"store {self.name!r}: its directory stayed mid-write "
                                   f"for {WAIT_S:g} s")
                continue
            n = _U32.unpack_from(d, DIR_H_NTABLES)[0]
            if DIR_HDR + n * DIR_ENTRY > len(d):
                raise _corrupt(self.dir_path, f"{n} tables do not fit {len(d)} bytes")
            want = table.encode()
            path = None
            for i in range(n):
                off = DIR_HDR + i * DIR_ENTRY
                nm = d[off + DIR_E_NAME:off + DIR_E_NAME + STORE_NAME_MAX]
                if nm.split(b"\0", 1)[0] == want:
                    path = d[off + DIR_E_PATH:off + DIR_E_PATH + SEG_PATH_MAX]
                    path = path.split(b"\0", 1)[0]
                    break
            if _U64.unpack_from(d, DIR_H_SEQ)[0] == s1:
                if path is None:
                    raise KeyError(f"store {self.name!r} has no table {table!r}")
                # a segment is always a file of this store: <directory>.<index>.<gen>
                prefix = self.dir_path.encode() + b"."
                if not path.startswith(prefix) or b"/" in path[len(prefix):]:
                    raise _corrupt(self.dir_path, f"table {table!r} names the file {path!r}, "
                                                  "which is not one of this store's")
                return os.fsdecode(path)

    def _table(self, table):
        t = self.tables.get(table)
        if t is not None and not _U32.unpack_from(t.mm, SEG_H_RETIRED)[0]:
            return t
        try:
            ino = os.stat(self.dir_path).st_ino
        except FileNotFoundError:
            raise KeyError(f"store {self.name!r} has stopped") from None
        if ino != self.dir_ino:  # the store was stopped and started again
            self._open_dir()
        wait = _Wait()
        while True:
            path = self._lookup_dir(table)
            try:
                t = _Table(path)
            except FileNotFoundError:
                if not os.path.exists(self.dir_path):
                    raise KeyError(f"store {self.name!r} has stopped") from None
                # replaced between the directory read and the open: read again
                wait.again(lambda: f"store {self.name!r}: the segment of table {table!r} "
                                   f"({path}) stayed missing for {WAIT_S:g} s")
                continue
            # The old mapping is not closed here: another thread may still be
            # reading it. It closes when the last reference to it goes.
            self.tables[table] = t
            return t

    def _find(self, t, kb):
        """The value word for key bytes kb in table t, or 0."""
        mm, cap = t.mm, t.cap
        h = zlib.crc32(kb)
        i = h & (cap - 1)
        klen = len(kb)
        unpack, slots, step = _SLOT.unpack_from, SEG_HDR, SEG_SLOT
        for _ in range(cap):
            at = slots + i * step
            hw, kw, vw = unpack(mm, at)
            if kw == 0:
                return 0
            if (hw & 0xFFFFFFFF) == h and (kw & 0xFFFFFFFF) == klen:
                if t.bytes_at(kw >> 32, klen) == kb:
                    # the value word again, after the key: it is the freshest
                    return _U64.unpack_from(mm, at + 16)[0]
            i = (i + 1) & (cap - 1)
        return 0

    def _values(self, t, vw):
        off, ln = vw >> 32, vw & 0xFFFFFFFF
        blob = t.bytes_at(off, ln)
        if t.type != TABLE_BAG:
            return _loads(blob)
        # the word's length counts the list's entries; the blob's capacity after
        # them is the writer's, and nothing past the length is read
        if ln < SEG_BAG_HDR or (ln - SEG_BAG_HDR) % SEG_BAG_ENTRY:
            raise _corrupt(t.path, f"a bag list of {ln} bytes")
        return [_loads(t.bytes_at(o, n))
                for o, n in _ENTRY.iter_unpack(blob[SEG_BAG_HDR:])]

    def get(self, table, key, default=None):
        t = self._table(table)
        vw = self._find(t, _key(key))
        if not vw:
            return [] if t.type == TABLE_BAG else default
        return self._values(t, vw)

    def get_many(self, table, keys):
        """Values of several keys seen at one instant (a put_many is all or nothing)."""
        kbs = [_key(k) for k in keys]
        wait = _Wait()
        while True:
            t = self._table(table)
            s1 = _U64.unpack_from(t.mm, SEG_H_SEQ)[0]
            if s1 & 1:
                wait.again(lambda: f"store {self.name!r}: table {table!r} stayed mid-write "
                                   f"for {WAIT_S:g} s")
                continue
            words = [self._find(t, kb) for kb in kbs]
            bag = t.type == TABLE_BAG
            out = [self._values(t, w) if w else ([] if bag else None) for w in words]
            if _U64.unpack_from(t.mm, SEG_H_SEQ)[0] == s1:
                return out

    def size(self, table):
        t = self._table(table)
        return _U64.unpack_from(t.mm, SEG_H_NVALS if t.type == TABLE_BAG else SEG_H_COUNT)[0]
