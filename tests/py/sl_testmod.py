"""Python functions the pool specs call: each one misbehaves in a chosen way."""
import os
import signal
import subprocess
import sys
import threading
import time

import slither_worker


def double(items):
    return [x * 2 for x in items]


def echo(items):
    return items


def pid(items):
    return [os.getpid() for _ in items]


def types(items):
    return [type(x).__name__ for x in items]


def boom(items):
    raise ValueError("bad value: %r" % (items[0],))


def wrong_length(items):
    return items + [0]


def not_a_list(items):
    return {"x": 1}


def unencodable(items):
    return [object() for _ in items]


def hang(items):
    time.sleep(3600)
    return items


def slow(items):
    time.sleep(items[0])
    return [os.getpid() for _ in items]


def exit_now(items):
    sys.stdout.flush()
    os._exit(items[0])


def garbage(items):
    os.write(3, b"this is not a frame at all, just text on the frame pipe\n")
    time.sleep(5)
    return items


def chatty(items):
    line = "x" * 99
    for _ in range(items[0]):
        print(line)
    return [len(line) for _ in items]


def count_calls(items):
    state = slither_worker.session()
    state["calls"] = state.get("calls", 0) + 1
    return [[state["calls"], os.getpid()] for _ in items]


_hog = []


def hog(items):
    _hog.append(bytearray(items[0] * 1024 * 1024))
    for i in range(0, len(_hog[-1]), 4096):
        _hog[-1][i] = 1
    return [os.getpid() for _ in items]


_barrier = None
_lock = threading.Lock()


def rendezvous(items):
    """Every caller waits until `n` calls are inside this function at once: it
    only returns when the worker really runs that many calls concurrently."""
    global _barrier
    with _lock:
        if _barrier is None:
            _barrier = threading.Barrier(items[0], timeout=10)
    _barrier.wait()
    return [threading.get_ident() for _ in items]


def spawn_grandchild(items):
    p = subprocess.Popen(["sleep", "300"])
    return [p.pid for _ in items]


def spawn_escapee(items):
    """A descendant that leaves the worker's session and group: a shell in a new
    session starts sleep in the background and exits, so sleep is orphaned in a
    session of its own (what a daemonizing library does)."""
    out = subprocess.run(["sh", "-c", "sleep 300 >/dev/null 2>&1 & echo $!"],
                         start_new_session=True, capture_output=True, text=True, check=True)
    return [int(out.stdout) for _ in items]


def session_id(items):
    return [slither_worker.current_session_id() for _ in items]


def raw_error_meta(items):
    """Answers its own call with an ERROR frame whose meta is items[0], text the
    engine must parse without trusting it, then leaves (no second reply)."""
    from slither_worker import runtime

    runtime._worker.chan.send(runtime.FRAME_ERROR, runtime._local.call_id, items[0].encode("latin-1"))
    os._exit(0)


def unreadable_result(items):
    """A result the worker can send but the engine refuses to read (a set)."""
    return [{1, 2} for _ in items]
