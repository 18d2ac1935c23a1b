"""Python's own process pools, measured the way `slither bench pool` measures slither.

Prints one JSON line per measurement, then {"measure": "done"}; `slither bench pool`
runs this with the workers' interpreter and reads those lines. Standard library only.

    python3 scripts/bench/pool_peers.py [--calls N] [--workers W] [--inflight K]

For each of multiprocessing.Pool and concurrent.futures.ProcessPoolExecutor:
  round_trip  N sequential one-item calls of echo after a warm-up: p50, p99 in µs
  throughput  N calls with K in flight at all times: calls/s
  startup     a pool of 8 until all 8 processes have run a task: ms (median of runs)
"""
import argparse
import concurrent.futures as cf
import json
import multiprocessing as mp
import os
import platform
import sys
import threading
import time

PEERS = ("ProcessPoolExecutor", "multiprocessing.Pool")


def echo(x):
    return x


_barrier = None


def _set_barrier(b):
    global _barrier
    _barrier = b


def _meet(_i):
    # Returns only once every process of the pool is inside a task: a pool is
    # counted as started when all of its processes ran one, not when the first did.
    _barrier.wait(timeout=60)
    return os.getpid()


def emit(**fields):
    print(json.dumps(fields), flush=True)


def percentile(sorted_samples, q):
    """Nearest rank, as the Lua side computes it."""
    n = len(sorted_samples)
    k = max(1, -(-q * n // 100))  # ceil(q/100 * n), in integers
    return sorted_samples[int(k) - 1]


def round_trips(call, calls, warmup):
    for i in range(warmup):
        call(i)
    samples = []
    clock = time.perf_counter_ns
    for i in range(calls):
        t0 = clock()
        r = call(i)
        samples.append(clock() - t0)
        if r != i:
            raise RuntimeError(f"echo returned {r!r} for {i}")
    samples.sort()
    us = [s / 1000.0 for s in samples]
    return {"p50_us": percentile(us, 50), "p99_us": percentile(us, 99),
            "mean_us": sum(us) / len(us), "n": calls}


def throughput(submit, calls, inflight):
    """submit(i, done) starts call i and arranges done(ok) to run when it ends."""
    slots = threading.Semaphore(inflight)
    lock = threading.Lock()
    finished = threading.Event()
    state = {"left": calls, "errors": 0}

    def done(ok):
        with lock:
            state["left"] -= 1
            if not ok:
                state["errors"] += 1
            if state["left"] == 0:
                finished.set()
        slots.release()

    t0 = time.perf_counter()
    for i in range(calls):
        slots.acquire()
        submit(i, done)
    if not finished.wait(timeout=600):
        raise RuntimeError("calls did not finish within 600 s")
    elapsed = time.perf_counter() - t0
    if state["errors"]:
        raise RuntimeError(f"{state['errors']} calls failed")
    return {"calls_per_s": calls / elapsed, "calls": calls, "inflight": inflight,
            "seconds": elapsed}


def startup_pool(n, ctx):
    barrier = ctx.Barrier(n)
    t0 = time.perf_counter()
    pool = ctx.Pool(n, initializer=_set_barrier, initargs=(barrier,))
    pids = pool.map(_meet, range(n), chunksize=1)
    ms = (time.perf_counter() - t0) * 1000
    pool.close()
    pool.join()
    assert len(set(pids)) == n, pids
    return ms


def startup_executor(n, ctx):
    barrier = ctx.Barrier(n)
    t0 = time.perf_counter()
    ex = cf.ProcessPoolExecutor(n, mp_context=ctx, initializer=_set_barrier,
                                initargs=(barrier,))
    pids = [f.result() for f in [ex.submit(_meet, i) for i in range(n)]]
    ms = (time.perf_counter() - t0) * 1000
    ex.shutdown(wait=True)
    assert len(set(pids)) == n, pids
    return ms


def median(xs):
    xs = sorted(xs)
    mid = len(xs) // 2
    return xs[mid] if len(xs) % 2 else (xs[mid - 1] + xs[mid]) / 2


def bench_executor(args, ctx):
    name = "ProcessPoolExecutor"
    with cf.ProcessPoolExecutor(args.workers, mp_context=ctx) as ex:
        emit(peer=name, measure="round_trip", workers=args.workers,
             **round_trips(lambda i: ex.submit(echo, i).result(), args.calls, args.warmup))

        def submit(i, done):
            ex.submit(echo, i).add_done_callback(lambda f: done(f.exception() is None))

        emit(peer=name, measure="throughput", workers=args.workers,
             **throughput(submit, args.calls, args.inflight))
    runs = [startup_executor(args.startup_workers, ctx) for _ in range(args.startup_runs)]
    emit(peer=name, measure="startup", workers=args.startup_workers, ms=median(runs), runs=runs)


def bench_pool(args, ctx):
    name = "multiprocessing.Pool"
    with ctx.Pool(args.workers) as pool:
        emit(peer=name, measure="round_trip", workers=args.workers,
             **round_trips(lambda i: pool.apply(echo, (i,)), args.calls, args.warmup))

        def submit(i, done):
            pool.apply_async(echo, (i,), callback=lambda _r: done(True),
                             error_callback=lambda _e: done(False))

        emit(peer=name, measure="throughput", workers=args.workers,
             **throughput(submit, args.calls, args.inflight))
    runs = [startup_pool(args.startup_workers, ctx) for _ in range(args.startup_runs)]
    emit(peer=name, measure="startup", workers=args.startup_workers, ms=median(runs), runs=runs)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=5000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--inflight", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--startup-workers", type=int, default=8)
    ap.add_argument("--startup-runs", type=int, default=3)
    args = ap.parse_args()
    # The interpreter's default start method, as a user of these pools gets it
    # (fork on Linux before Python 3.14, forkserver from 3.14).
    ctx = mp.get_context()
    emit(measure="env", python=platform.python_version(),
         implementation=platform.python_implementation(), executable=sys.executable,
         start_method=ctx.get_start_method())
    bench_executor(args, ctx)
    bench_pool(args, ctx)
    emit(measure="done")


if __name__ == "__main__":
    main()
