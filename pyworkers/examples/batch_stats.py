"""batch_stats example: descriptive statistics per dataset, and per-worker
running statistics (Welford) over every value the worker accepted.

compute_stats(datasets): datasets are {"values": [numbers]}. A dataset with a
missing value (None), a non-numeric value (the string "NaN"), a NaN or an
infinity, or no values at all raises, which fails the batch; the engine's
"isolate" policy then splits the batch until the poisoned dataset stands alone.

The running statistics live in the call's session state (one per dispatch run,
or per key group) and are updated only after the whole batch succeeded, so a
batch that fails and is retried in halves never counts a dataset twice. The last
result of each batch carries the worker's running state after the batch.

Standard library only.
"""
import math
import os
import statistics

import slither_worker


def _check(values):
    if values is None:
        raise ValueError("dataset has no values (None)")
    if not isinstance(values, (list, tuple)):
        raise TypeError(f"values must be a list, got {type(values).__name__}")
    if len(values) == 0:
        raise ValueError("dataset is empty")
    for v in values:
        if v is None:
            raise ValueError("dataset has a missing value (None)")
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise TypeError(f"non-numeric value {v!r}")
        if math.isnan(v) or math.isinf(v):
            raise ValueError(f"value {v!r} is not finite")


def stats(values):
    _check(values)
    n = len(values)
    mean = statistics.fmean(values)
    var = statistics.variance(values) if n > 1 else 0.0
    lo, hi = min(values), max(values)
    return {
        "mean": round(mean, 6),
        "median": round(float(statistics.median(values)), 6),
        "stdev": round(math.sqrt(var), 6),
        "variance": round(float(var), 6),
        "min": round(float(lo), 6),
        "max": round(float(hi), 6),
        "range": round(float(hi - lo), 6),
        "count": n,
    }


def _welford(acc, values):
    n, mean, m2 = acc["n"], acc["mean"], acc["m2"]
    for x in values:
        n += 1
        d = x - mean
        mean += d / n
        m2 += d * (x - mean)
    acc["n"], acc["mean"], acc["m2"] = n, mean, m2
    acc["min"] = min(acc["min"], min(values)) if acc["min"] is not None else min(values)
    acc["max"] = max(acc["max"], max(values)) if acc["max"] is not None else max(values)


def compute_stats(datasets):
    if not datasets:
        return []
    # All of the batch first: a poisoned dataset raises before any state changes.
    results = [stats(d["values"]) for d in datasets]
    state = slither_worker.session()
    acc = state.setdefault("running", {"n": 0, "mean": 0.0, "m2": 0.0, "min": None,
                                       "max": None, "datasets": 0, "batches": 0})
    for d in datasets:
        _welford(acc, [float(v) for v in d["values"]])
    acc["datasets"] += len(datasets)
    acc["batches"] += 1
    pid = os.getpid()
    for r in results:
        r["worker_pid"] = pid
    results[-1]["worker_state"] = {
        "pid": pid,
        "session": slither_worker.current_session_id(),
        "n": acc["n"], "mean": acc["mean"], "m2": acc["m2"],
        "min": acc["min"], "max": acc["max"],
        "datasets": acc["datasets"], "batches": acc["batches"],
    }
    return results
