#!/usr/bin/env python3
"""Pure-Python baselines for the Slither examples.

Each Slither example runs its Python stage on pooled worker processes: every worker has
its own state, and the engine merges the results. This script does the same work the
plain-Python way, in ONE process with a thread pool, in two versions:

  unsafe  the state the example keeps per worker is module-level state shared by all
          the threads, updated without locks: `_global_index[w] += c`, `_doc_count += 1`,
          running Welford statistics, audit counters, and a schema hot-reloaded in place
          while rows are being validated.
  safe    the same work with per-thread state merged once in the main thread after the
          pool has joined, or with locks where the state must be shared (the schema,
          the session table).

It prints the interpreter it runs under, whether that is a free-threaded build
(sysconfig Py_GIL_DISABLED) and whether the GIL is enabled right now, wall time and
throughput, and checks like the Slither examples' ones:

    <label>: expected=E observed=O [OK|MISMATCH]

Expected values never come from the shared state: they come from the generated data or
from a reference computed in the main thread. A MISMATCH in the unsafe version is a lost
update or a torn read that really happened in this run. With the GIL they are rare, and
the script says so rather than pretend otherwise: nothing here widens a race window on
purpose (no sleep inside a read-modify-write, no sys.setswitchinterval).

Usage:
    python3 pure_python_baselines.py NAME|--all [--mode unsafe|safe|both] [--threads N]
                                     [--scale small|full] [--json] [--require-free-threaded]

  NAME     text_analysis | batch_stats | data_etl | ml_scoring | image_pipeline
  --all    all five; ml_scoring needs scikit-learn and image_pipeline needs Pillow: each
           is skipped, with a message, when its package does not import
  --scale  full: the sizes of the Slither examples (default); small: theirs at --scale small
  --json   one JSON document on stdout instead of the text report

Exit status: 0 when the script ran (a MISMATCH in unsafe mode is the demonstration, not
a failure; a skipped example is not a failure either); 1 when a safe-mode check failed
or a run raised; 2 on bad arguments; 3 when --require-free-threaded was given and the
GIL is enabled.

The interpreter is the caller's choice: this runs under whatever python runs it. For a
free-threaded one see scripts/build-free-threaded-python.sh (SLITHER_BASELINE_PYTHON).

Data. The generators are ports of those of scripts/examples/*.lua, with the same
Park-Miller generator (slither.examples.rng), seeds and draw order, so the baseline
processes exactly the items the Slither example processes:

  text_analysis   rng(42137256). full 5,000 docs, small 500. A doc has 15 + int(1,50)
                  words (16-65) in sentences of int(4,12) words, drawn from 44 words:
                  28 neutral, 4 positive, 4 negative, 8 stopwords. The index counts all
                  content (non-stopword) words. Batches of 50.
  batch_stats     rng(42137256). Datasets of int(100,100000)/100 values: 800 small (5-10
                  values), 800 medium (50-100), 350 large (200-500), and 50 poison pills
                  (20 with None, 20 with "NaN", 10 empty), shuffled; small scale a fifth.
                  Fixed batches of 10 with the "isolate" policy: a failed batch is split
                  in halves until the pill stands alone. The running statistics take a
                  batch's values only after the whole batch succeeded.
  data_etl        rng(101), rng(202), rng(303): three batches of 5,000 rows (small 500)
                  at 10%, 20%, 15% invalid under both schema versions, plus 6% valid
                  under v1 only and 4% under v2 only. Batch 1 runs under v1, batch 2
                  under v2 (a reload in between), batch 3 while a thread toggles v1/v2
                  every millisecond until the batch is done. Batches of 25.

ml_scoring and image_pipeline have no Slither example in this tree yet; their data
follow the original examples' description (seeded with the same generator):

  ml_scoring      Two 4-feature training sets: A has class 0 around (1,2,1,2) and
                  class 1 around (3,4,3,4), B class 0 around 0 and class 1 around 5,
                  sigma 1 (full 2,000 samples each, small 400). Test records i = 1..N
                  (full 2,000, small 400): i % 3 == 0 around (2,3,2,3), else even i
                  around (3.5,4.5,3.5,4.5), else (0.5,1.5,0.5,1.5), sigma 0.3; ids 1-10
                  come from a pre-filled feature cache. LogisticRegression(max_iter=1000)
                  per session; both sessions scored concurrently in batches of 100.
  image_pipeline  Solid-colour PNGs with a white label: small 100+int(1,300) square-ish,
                  medium 500+int(1,780) x 400+int(1,520), 1920x1080, 3840x2160; full
                  50/80/50/20, small 5/8/5/2, shuffled. Thumbnails 150 px wide, LANCZOS,
                  PNG optimize. safe: WeightedBatch (2,000,000 px per batch, bigger images
                  alone), at most 4 batches in flight; unsafe: every image its own task.
"""

import argparse
import collections
import io
import json
import math
import os
import re
import sys
import sysconfig
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor

# ---------------------------------------------------------------------------------------
# interpreter, data generator, formatting, checks


def gil_enabled():
    """True when the GIL is on right now. A free-threaded build can still have it on
    (PYTHON_GIL=1, or an imported extension without free-threading support)."""
    probe = getattr(sys, "_is_gil_enabled", None)
    return True if probe is None else bool(probe())


def interpreter_info():
    ft = sysconfig.get_config_var("Py_GIL_DISABLED")
    return {
        "executable": sys.executable,
        "version": sys.version.split()[0],
        "implementation": sys.implementation.name,
        "free_threaded_build": bool(ft),
        "py_gil_disabled": ft,
        "gil_enabled": gil_enabled(),
        "gil_probe": hasattr(sys, "_is_gil_enabled"),
        "cpu_count": os.cpu_count(),
    }


class Rng:
    """slither.examples.rng: Park-Miller (multiplier 48271, modulus 2^31 - 1), exact
    in doubles, so the Lua examples and this script draw the same numbers."""

    M = 2147483647

    def __init__(self, seed):
        s = math.floor(seed) % self.M
        if s <= 0:
            s += self.M - 1
        self.s = s

    def next(self):
        self.s = (self.s * 48271) % self.M
        return self.s

    def int(self, lo, hi):
        """An integer in [lo, hi]."""
        return lo + self.next() % (hi - lo + 1)

    def float(self):
        """A float in [0, 1)."""
        return (self.next() - 1) / (self.M - 1)

    def pick(self, seq):
        return seq[self.int(1, len(seq)) - 1]

    def shuffle(self, lst):
        for i in range(len(lst), 1, -1):
            j = self.int(1, i)
            lst[i - 1], lst[j - 1] = lst[j - 1], lst[i - 1]
        return lst

    def gauss(self, mu, sigma):
        """Box-Muller; one draw per call."""
        u1 = max(self.float(), 1e-12)
        u2 = self.float()
        return mu + sigma * math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


def fmt_time(seconds):
    """As the Slither examples print it: ms under 1 s, s under a minute, then m s."""
    ms = seconds * 1000
    if ms < 1000:
        return f"{ms:.0f}ms"
    if ms < 60000:
        return f"{seconds:.2f}s"
    return f"{int(ms // 60000)}m {int(ms // 1000) % 60}s"


def fmt_value(v):
    """As the Slither examples print values (integral numbers as integers, others with
    10 significant digits, booleans yes/no, maps {k:v} sorted by key)."""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if v != v:
            return "nan"
        if v.is_integer() and abs(v) < 1e15:
            return str(int(v))
        return f"{v:.10g}"
    if isinstance(v, dict):
        return "{" + ",".join(f"{k}:{fmt_value(v[k])}" for k in sorted(v, key=str)) + "}"
    if isinstance(v, (set, frozenset)):
        return "{" + ",".join(fmt_value(x) for x in sorted(v, key=str)) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(fmt_value(x) for x in v) + "]"
    if v is None:
        return "nil"
    return str(v)


class Check:
    __slots__ = ("label", "expected", "observed", "ok")

    def __init__(self, label, expected, observed, ok):
        self.label, self.expected, self.observed, self.ok = label, expected, observed, ok

    def line(self):
        return (f"  {self.label}: expected={fmt_value(self.expected)} "
                f"observed={fmt_value(self.observed)} [{'OK' if self.ok else 'MISMATCH'}]")

    def as_dict(self):
        def plain(v):
            if isinstance(v, (set, frozenset)):
                return [plain(x) for x in sorted(v, key=str)]
            if isinstance(v, (list, tuple)):
                return [plain(x) for x in v]
            if isinstance(v, dict):
                return {str(k): plain(x) for k, x in v.items()}
            if isinstance(v, float) and not math.isfinite(v):
                return str(v)           # JSON has no inf/nan
            return v
        return {"label": self.label, "expected": plain(self.expected),
                "observed": plain(self.observed), "ok": self.ok}


def eq(label, expected, observed):
    return Check(label, expected, observed, expected == observed)


def rel_close(label, expected, observed, rel=1e-9):
    ok = (isinstance(observed, (int, float)) and math.isfinite(observed)
          and abs(observed - expected) <= rel * max(1.0, abs(expected)))
    return Check(label, expected, observed, ok)


def at_most(label, bound, observed):
    return Check(label, f"<={bound}", observed, observed <= bound)


class ModeResult:
    def __init__(self, mode):
        self.mode = mode
        self.wall_s = 0.0
        self.items = 0
        self.unit = "items"
        self.extra_rates = []        # (label, text)
        self.checks = []
        self.info = []               # free-form lines printed after the checks
        self.error = None

    @property
    def ok(self):
        return self.error is None and all(c.ok for c in self.checks)

    def as_dict(self):
        return {"mode": self.mode, "wall_s": round(self.wall_s, 6), "items": self.items,
                "unit": self.unit,
                "items_per_sec": round(self.items / max(self.wall_s, 1e-9), 1),
                "ok": self.ok, "error": self.error,
                "checks": [c.as_dict() for c in self.checks], "info": self.info}


class PerThread:
    """Per-thread state, registered once per thread so that the main thread can merge
    it after the pool has joined. The registry lock is taken once per thread, not per
    update."""

    def __init__(self, factory):
        self._factory = factory
        self._local = threading.local()
        self._lock = threading.Lock()
        self.states = []

    def get(self):
        s = getattr(self._local, "s", None)
        if s is None:
            s = self._factory()
            self._local.s = s
            with self._lock:
                self.states.append(s)
        return s


def run_pool(fn, tasks, threads):
    """Submit every task; the results in submission order (an exception a task raised
    is returned in its place)."""
    out = []
    with ThreadPoolExecutor(max_workers=threads) as ex:
        futures = [ex.submit(fn, t) for t in tasks]
        for f in futures:
            try:
                out.append(f.result())
            except Exception as e:
                out.append(e)
    return out


def chunks(seq, n):
    return [seq[i:i + n] for i in range(0, len(seq), n)]


# ---------------------------------------------------------------------------------------
# text_analysis: 5K docs / shared accumulator races (scripts/examples/text_analysis.lua)

NEUTRAL = ("system", "data", "process", "network", "model", "signal", "report", "market",
           "service", "design", "energy", "policy", "result", "method", "value", "project",
           "engine", "river", "garden", "window", "machine", "library", "station", "paper",
           "music", "theory", "budget", "harbor")
POSITIVE = ("good", "excellent", "happy", "amazing")
NEGATIVE = ("bad", "terrible", "sad", "awful")
DRAWN_STOPWORDS = ("the", "a", "and", "of", "to", "is", "in", "it")
STOPWORDS = frozenset("""
a about above after again against all am an and any are as at be because been before
being below between both but by can could did do does doing down during each few for
from further had has have having he her here hers herself him himself his how i if in
into is it its itself just me more most my myself no nor not now of off on once only or
other ought our ours ourselves out over own same she should so some such than that the
their theirs them themselves then there these they this those through to too under until
up very was we were what when where which while who whom why will with would you your
yours yourself yourselves
""".split())
_POS, _NEG = frozenset(POSITIVE), frozenset(NEGATIVE)
_WORD_RE = re.compile(r"\b\w+\b")
_SENT_RE = re.compile(r"[.!?]+")
_VOWELS_RE = re.compile(r"[aeiouy]+")


def text_corpus(n):
    rng = Rng(42137256)
    vocab = NEUTRAL + POSITIVE + NEGATIVE + DRAWN_STOPWORDS
    docs = []
    for _ in range(n):
        left = 15 + rng.int(1, 50)
        sentences = []
        while left > 0:
            k = min(left, rng.int(4, 12))
            s = [rng.pick(vocab) for _ in range(k)]
            s[0] = s[0][:1].upper() + s[0][1:]
            sentences.append(" ".join(s) + ".")
            left -= k
        docs.append(" ".join(sentences))
    return docs


def _syllables(word):
    n = len(_VOWELS_RE.findall(word))
    if n > 1 and word.endswith("e") and not word.endswith(("le", "ee")):
        n -= 1
    return max(1, n)


def analyze_doc(text):
    """What the example's analyze_batch computes for one document: the content-word
    counts (for the index) and the result."""
    words = _WORD_RE.findall(text.lower())
    total = len(words)
    n_sent = max(1, len([s for s in _SENT_RE.split(text) if s.strip()]))
    content = [w for w in words if w not in STOPWORDS]
    counts = collections.Counter(content)
    pos = sum(1 for w in words if w in _POS)
    neg = sum(1 for w in words if w in _NEG)
    if total:
        syl = sum(_syllables(w) for w in words)
        readability = round(206.835 - 1.015 * (total / n_sent) - 84.6 * (syl / total), 2)
        sentiment = round((pos - neg) / total, 4)
    else:
        readability = sentiment = 0.0
    return counts, {"word_count": total, "content_words": len(content),
                    "unique_words": len(counts), "top_words": dict(counts.most_common(10)),
                    "readability": readability, "sentiment": sentiment,
                    "positive_count": pos, "negative_count": neg}


def classify(result):
    s = result["sentiment"]
    return "positive" if s > 0.15 else "negative" if s < -0.15 else "default"


# unsafe: the worker's index and document counter, as module globals shared by threads
_global_index = collections.Counter()
_doc_count = 0


def analyze_batch_unsafe(texts):
    global _doc_count
    out = []
    for text in texts:
        counts, result = analyze_doc(text)
        for w, c in counts.items():
            _global_index[w] += c          # read-modify-write on a shared dict
        _doc_count += 1                    # read-modify-write on a shared global
        out.append(result)
    return out


class _TextState:
    __slots__ = ("index", "docs")

    def __init__(self):
        self.index = collections.Counter()
        self.docs = 0


def run_text_analysis(mode, threads, scale):
    global _global_index, _doc_count
    n = 5000 if scale == "full" else 500
    docs = text_corpus(n)
    ref_index = collections.Counter()
    refs = []
    for text in docs:                      # the reference, in one thread, untimed
        counts, result = analyze_doc(text)
        ref_index.update(counts)
        refs.append(result)
    res = ModeResult(mode)
    res.unit = "docs"

    t0 = time.perf_counter()
    if mode == "unsafe":
        _global_index = collections.Counter()
        _doc_count = 0
        outs = run_pool(analyze_batch_unsafe, chunks(docs, 50), threads)
        index, doc_count = _global_index, _doc_count
    else:
        per = PerThread(_TextState)

        def analyze_batch_safe(texts):
            st = per.get()
            out = []
            for text in texts:
                counts, result = analyze_doc(text)
                st.index.update(counts)
                st.docs += 1
                out.append(result)
            return out

        outs = run_pool(analyze_batch_safe, chunks(docs, 50), threads)
        index, doc_count = collections.Counter(), 0
        for st in per.states:
            index.update(st.index)
            doc_count += st.docs
        res.info.append(f"per-thread states merged: {len(per.states)}")
    res.wall_s = time.perf_counter() - t0

    failed = sum(1 for o in outs if isinstance(o, Exception))
    results = [r for o in outs if not isinstance(o, Exception) for r in o]
    res.items = len(results)
    buckets = collections.Counter(classify(r) for r in results)
    ref_buckets = collections.Counter(classify(r) for r in refs)
    where = "_global_index" if mode == "unsafe" else "merged per-thread index"
    counter = "_doc_count" if mode == "unsafe" else "merged per-thread counters"
    res.checks += [
        eq("batches failed", 0, failed),
        eq("documents classified (positive + negative + default)", n, len(results)),
        eq("positive documents (reference: sentiment > 0.15)", ref_buckets["positive"],
           buckets["positive"]),
        eq("negative documents (reference: sentiment < -0.15)", ref_buckets["negative"],
           buckets["negative"]),
        eq("default documents", ref_buckets["default"], buckets["default"]),
        eq("documents whose analysis equals the reference", n,
           sum(1 for a, b in zip(results, refs) if a == b)),
        eq(f"documents counted ({counter})", n, doc_count),
        eq(f"vocabulary size ({where}; reference: one thread)", len(ref_index), len(index)),
        eq(f"content-word occurrences ({where})", sum(ref_index.values()),
           sum(index.values())),
        eq(f"words whose count differs from the reference ({where})", 0,
           sum(1 for w in set(ref_index) | set(index) if index[w] != ref_index[w])),
        eq(f"stopwords in the index ({where})", 0, sum(1 for w in index if w in STOPWORDS)),
    ]
    res.info.append("buckets: " + " ".join(f"{k}={buckets[k]}"
                                           for k in ("default", "negative", "positive")))
    return res


# ---------------------------------------------------------------------------------------
# batch_stats: 2K datasets / fault-isolated parallel compute (scripts/examples/batch_stats.lua)

STAT_KINDS = (("small", 800, 5, 10), ("medium", 800, 50, 100), ("large", 350, 200, 500))
POISON_KINDS = (("none", 20, "ValueError"), ("nan", 20, "TypeError"),
                ("empty", 10, "ValueError"))
STAT_FIELDS = ("mean", "median", "variance", "stdev", "min", "max", "range", "count")


def stats_datasets(scale):
    div = 5 if scale == "small" else 1
    rng = Rng(42137256)
    data = []
    for kind, count, lo, hi in STAT_KINDS:
        for _ in range(count // div):
            data.append({"kind": kind,
                         "values": [rng.int(100, 100000) / 100 for _ in range(rng.int(lo, hi))]})
    for kind, count, err in POISON_KINDS:
        for _ in range(count // div):
            if kind == "none":
                values = [1.0, 2.0, None, 4.0, None, 6.0]
            elif kind == "nan":
                values = [10.0, "NaN", 30.0, "NaN", 50.0]
            else:
                values = []
            data.append({"kind": "poison", "poison": kind, "error": err, "values": values})
    rng.shuffle(data)
    for i, d in enumerate(data):
        d["index"] = i
    return data


def _check_values(values):
    if len(values) == 0:
        raise ValueError("dataset is empty")
    for v in values:
        if v is None:
            raise ValueError("dataset has a missing value (None)")
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise TypeError(f"non-numeric value {v!r}")
        if math.isnan(v) or math.isinf(v):
            raise ValueError(f"value {v!r} is not finite")


def describe(values):
    """The example's per-dataset statistics (rounded to 6 places); raises on a pill."""
    _check_values(values)
    n = len(values)
    mean = math.fsum(values) / n
    var = math.fsum((x - mean) ** 2 for x in values) / (n - 1) if n > 1 else 0.0
    s = sorted(values)
    median = s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2
    return {"mean": round(mean, 6), "median": round(median, 6),
            "stdev": round(math.sqrt(var), 6), "variance": round(var, 6),
            "min": round(s[0], 6), "max": round(s[-1], 6), "range": round(s[-1] - s[0], 6),
            "count": n}


def _stats_close(a, b):
    return isinstance(a, (int, float)) and abs(a - b) <= 1.01e-6 + 1e-12 * abs(b)


# unsafe: the worker's running statistics, as module globals shared by threads
_run_n = 0
_run_mean = 0.0
_run_m2 = 0.0
_run_min = math.inf
_run_max = -math.inf
_run_datasets = 0


def compute_stats_unsafe(datasets):
    global _run_n, _run_mean, _run_m2, _run_min, _run_max, _run_datasets
    # all of the batch first: a poisoned dataset raises before any state changes
    results = [(d["index"], describe(d["values"])) for d in datasets]
    for d in datasets:
        for x in d["values"]:
            _run_n += 1
            delta = x - _run_mean
            _run_mean += delta / _run_n
            _run_m2 += delta * (x - _run_mean)
            if x < _run_min:
                _run_min = x
            if x > _run_max:
                _run_max = x
        _run_datasets += 1
    return results


class RunningStats:
    __slots__ = ("n", "mean", "m2", "min", "max", "datasets")

    def __init__(self):
        self.n, self.mean, self.m2 = 0, 0.0, 0.0
        self.min, self.max = math.inf, -math.inf
        self.datasets = 0

    def add(self, x):
        self.n += 1
        delta = x - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (x - self.mean)
        if x < self.min:
            self.min = x
        if x > self.max:
            self.max = x

    def merge(self, o):
        """Chan et al.'s combination of two Welford states."""
        if o.n == 0:
            self.datasets += o.datasets
            return
        n = self.n + o.n
        delta = o.mean - self.mean
        self.mean += delta * o.n / n
        self.m2 += o.m2 + delta * delta * self.n * o.n / n
        self.n = n
        self.min, self.max = min(self.min, o.min), max(self.max, o.max)
        self.datasets += o.datasets


def isolate(fn, batch):
    """The examples' on_error = "isolate", in the calling thread: a failed batch is
    split in halves, recursively, until each poisoned dataset stands alone. Returns
    (results, [(dataset, exception)])."""
    try:
        return fn(batch), []
    except Exception as e:
        if len(batch) == 1:
            return [], [(batch[0], e)]
        mid = len(batch) // 2
        ok_a, bad_a = isolate(fn, batch[:mid])
        ok_b, bad_b = isolate(fn, batch[mid:])
        return ok_a + ok_b, bad_a + bad_b


def run_batch_stats(mode, threads, scale):
    global _run_n, _run_mean, _run_m2, _run_min, _run_max, _run_datasets
    data = stats_datasets(scale)
    res = ModeResult(mode)
    res.unit = "datasets"

    t0 = time.perf_counter()
    if mode == "unsafe":
        _run_n, _run_mean, _run_m2 = 0, 0.0, 0.0
        _run_min, _run_max, _run_datasets = math.inf, -math.inf, 0
        outs = run_pool(lambda b: isolate(compute_stats_unsafe, b), chunks(data, 10), threads)
        run = RunningStats()
        run.n, run.mean, run.m2 = _run_n, _run_mean, _run_m2
        run.min, run.max, run.datasets = _run_min, _run_max, _run_datasets
    else:
        per = PerThread(RunningStats)

        def compute_stats_safe(datasets):
            results = [(d["index"], describe(d["values"])) for d in datasets]
            st = per.get()
            for d in datasets:
                for x in d["values"]:
                    st.add(x)
                st.datasets += 1
            return results

        outs = run_pool(lambda b: isolate(compute_stats_safe, b), chunks(data, 10), threads)
        run = RunningStats()
        for st in per.states:
            run.merge(st)
        res.info.append(f"per-thread states merged: {len(per.states)}")
    res.wall_s = time.perf_counter() - t0

    crashed = sum(1 for o in outs if isinstance(o, Exception))
    results = [r for o in outs if not isinstance(o, Exception) for r in o[0]]
    failures = [f for o in outs if not isinstance(o, Exception) for f in o[1]]
    good = [d for d in data if d["kind"] != "poison"]
    poison = [d for d in data if d["kind"] == "poison"]
    expect_err = collections.Counter(d["error"] for d in poison)
    got_err = collections.Counter(type(e).__name__ for _, e in failures)
    equal = 0
    for idx, r in results:
        d = data[idx]
        if d["kind"] == "poison":
            continue
        ref = describe(d["values"])
        if all(_stats_close(r[f], ref[f]) for f in STAT_FIELDS):
            equal += 1
    xs = [x for d in good for x in d["values"]]
    e_n = len(xs)
    e_mean = math.fsum(xs) / e_n
    e_var = math.fsum((x - e_mean) ** 2 for x in xs) / (e_n - 1)
    res.items = len(data)
    where = "shared globals" if mode == "unsafe" else "merged per-thread"
    res.checks += [
        eq("batches that raised past isolation", 0, crashed),
        eq("datasets ok", len(good), len(results)),
        eq("datasets failed (the poison pills)", len(poison), len(failures)),
        eq("failed datasets that are poison pills", len(poison),
           sum(1 for d, _ in failures if d["kind"] == "poison")),
        eq("failures by error type", dict(expect_err), dict(got_err)),
        eq("results whose statistics equal the reference", len(good), equal),
        eq(f"datasets counted by the running stats ({where})", len(good), run.datasets),
        eq(f"values in the running stats ({where})", e_n, run.n),
        rel_close(f"running mean ({where}, rel. tol 1e-9)", e_mean, run.mean),
        rel_close(f"running sample variance ({where}, rel. tol 1e-9)", e_var,
                  run.m2 / (run.n - 1) if run.n > 1 else float("nan")),
        eq(f"running min / max ({where})", [min(xs), max(xs)], [run.min, run.max]),
    ]
    res.info.append(f"{len(data)} datasets in {len(chunks(data, 10))} batches of 10, "
                    f"{len(poison)} poison pills isolated by splitting failed batches")
    return res


# ---------------------------------------------------------------------------------------
# data_etl: 15K rows / hot reload under contention (scripts/examples/data_etl.lua)

SCHEMA_V1 = {"version": 1, "fields": {
    "name": {"type": "string", "required": True, "min_length": 1, "max_length": 20,
             "version": 1},
    "age": {"type": "integer", "required": True, "min": 0, "max": 150, "version": 1},
    "email": {"type": "string", "required": True, "version": 1},
}}
SCHEMA_V2 = {"version": 2, "fields": {
    "name": {"type": "string", "required": True, "min_length": 2, "max_length": 40,
             "version": 2},
    "age": {"type": "integer", "required": True, "min": 18, "max": 120, "version": 2},
    "email": {"type": "string", "required": True, "pattern": r"^[^@]+@[^@]+$",
              "version": 2},
    "role": {"type": "string", "required": False, "version": 2},
}}
SCHEMAS = {1: SCHEMA_V1, 2: SCHEMA_V2}
TRANSFORM = {"rename": {"name": "full_name"}, "cast": {"age": "integer"},
             "defaults": {"role": "user"}}
NAMES = ("Alice", "Bob", "Carol", "Dave", "Eve", "Frank", "Grace", "Heidi", "Ivan", "Judy",
         "Mallory", "Niaj", "Olivia", "Peggy", "Rupert", "Sybil", "Trent", "Victor", "Walter",
         "Xena", "Yusuf", "Zoe", "Amir", "Bea", "Chen", "Dana", "Emil", "Fay", "Gus", "Hana")
ETL_BATCHES = (("batch 1", 0.10, 101, False), ("batch 2", 0.20, 202, False),
               ("batch 3", 0.15, 303, True))


def etl_rows(count, ratio, seed):
    """count rows: `ratio` invalid under both versions, 6% valid under v1 only, 4% valid
    under v2 only (the Lua example's generate_rows, row i = 1..count)."""
    rng = Rng(seed)
    rows = []
    for i in range(1, count + 1):
        name = NAMES[i % len(NAMES)]
        row = {"name": name, "age": 20 + i % 60, "email": f"{name.lower()}{i}@example.com"}
        if i % 3 == 0:
            row["role"] = "admin" if i % 2 == 0 else "analyst"
        u = rng.float()
        if u < ratio:
            k = i % 4
            if k == 0:
                row["name"] = ""
            elif k == 1:
                row["age"] = -5
            elif k == 2:
                del row["name"]
            else:
                row["age"] = 200
        elif u < ratio + 0.06:
            k = rng.int(1, 4)
            if k == 1:
                row["age"] = 16
            elif k == 2:
                row["age"] = 130
            elif k == 3:
                row["name"] = name[:1]
            else:
                row["email"] = f"{name.lower()}{i}.example.com"
        elif u < ratio + 0.10:
            row["name"] = name + " " + "Longname" * 3     # over v1's 20 characters
        rows.append(row)
    return rows


def _is_type(v, t):
    if t == "string":
        return isinstance(v, str)
    if t == "integer":
        return isinstance(v, int) and not isinstance(v, bool)
    if t == "float":
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    if t == "boolean":
        return isinstance(v, bool)
    return True


_PATTERNS = {}


def validate_row(row, fields, used=None):
    """The example's validate_row: the list of errors of row under fields. `used`
    collects the version tag of every rule applied (for the torn-read check)."""
    errors = []
    for name in sorted(fields):
        rule = fields[name]
        if used is not None:
            used.append(rule.get("version"))
        v = row.get(name)
        if v is None:
            if rule.get("required"):
                errors.append(f"{name}: required")
            continue
        t = rule.get("type")
        if t and not _is_type(v, t):
            errors.append(f"{name}: expected {t}")
            continue
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            if "min" in rule and v < rule["min"]:
                errors.append(f"{name}: {v} < min {rule['min']}")
            if "max" in rule and v > rule["max"]:
                errors.append(f"{name}: {v} > max {rule['max']}")
        if isinstance(v, str):
            if "min_length" in rule and len(v) < rule["min_length"]:
                errors.append(f"{name}: shorter than {rule['min_length']}")
            if "max_length" in rule and len(v) > rule["max_length"]:
                errors.append(f"{name}: longer than {rule['max_length']}")
            if "pattern" in rule:
                pat = _PATTERNS.get(rule["pattern"])
                if pat is None:
                    pat = _PATTERNS[rule["pattern"]] = re.compile(rule["pattern"])
                if not pat.search(v):
                    errors.append(f"{name}: does not match {rule['pattern']}")
    return errors


def transform_row(row):
    """The example's transform stage (Lua there): rename, cast, defaults."""
    r = dict(row)
    for old, new in TRANSFORM["rename"].items():
        if r.get(old) is not None:
            r[new] = r.pop(old)
    for f, t in TRANSFORM["cast"].items():
        v = r.get(f)
        if t == "integer":
            if isinstance(v, str):
                try:
                    v = float(v)
                except ValueError:
                    pass
            if isinstance(v, float):
                v = math.trunc(v)
            r[f] = v
    for f, v in TRANSFORM["defaults"].items():
        if r.get(f) is None:
            r[f] = v
    return r


# unsafe: one schema dict that every thread holds, reloaded in place, and the audit
# counters, all module globals
_schema = {"version": 1, "fields": dict(SCHEMA_V1["fields"])}
_audit = {"validations": 0, "valid": 0, "invalid": 0, "versions": {}}


def reload_schema_unsafe(schema):
    """Hot reload in place, key by key: every thread holds a reference to _schema (as
    code holding a module-level config does), so it is updated rather than rebound."""
    fields = _schema["fields"]
    for name in [n for n in fields if n not in schema["fields"]]:
        del fields[name]
    for name, rule in schema["fields"].items():
        fields[name] = rule
    _schema["version"] = schema["version"]


def _validate_one(row_id, row, version, fields, errors_fn):
    used = []
    crashed = False
    try:
        errors = errors_fn(row, fields, used)
    except Exception as e:   # a row that breaks the validator is invalid, not a failed batch
        errors, crashed = [f"row: {type(e).__name__}: {e}"], True
    valid = not errors
    return {"row_id": row_id, "valid": valid, "errors": errors, "schema_version": version,
            "torn": crashed or any(v != version for v in used), "crashed": crashed,
            "row": transform_row(row) if valid else row}


def validate_batch_unsafe(items):
    out = []
    for row_id, row in items:
        version = _schema["version"]
        r = _validate_one(row_id, row, version, _schema["fields"], validate_row)
        _audit["validations"] += 1
        _audit["valid" if r["valid"] else "invalid"] += 1
        key = f"v{version}"
        _audit["versions"][key] = _audit["versions"].get(key, 0) + 1
        out.append(r)
    return out


class SchemaStore:
    """The safe store: the schema is one immutable value carrying its version, swapped
    and read whole under a lock."""

    def __init__(self, schema):
        self._lock = threading.Lock()
        self._schema = schema

    def reload(self, schema):
        with self._lock:
            self._schema = schema

    def current(self):
        with self._lock:
            return self._schema


class _EtlAudit:
    __slots__ = ("validations", "valid", "invalid", "versions")

    def __init__(self):
        self.validations = self.valid = self.invalid = 0
        self.versions = collections.Counter()


def run_data_etl(mode, threads, scale):
    global _schema, _audit
    per_batch = 5000 if scale == "full" else 500
    res = ModeResult(mode)
    res.unit = "rows"

    if mode == "unsafe":
        _schema = {"version": 1, "fields": dict(SCHEMA_V1["fields"])}
        _audit = {"validations": 0, "valid": 0, "invalid": 0, "versions": {}}
        reload = reload_schema_unsafe
        validate = validate_batch_unsafe
    else:
        store = SchemaStore(SCHEMA_V1)
        reload = store.reload
        per = PerThread(_EtlAudit)

        def validate(items):
            out = []
            for row_id, row in items:
                schema = store.current()          # one read: one whole value
                r = _validate_one(row_id, row, schema["version"], schema["fields"],
                                  validate_row)
                out.append(r)
            a = per.get()                          # per-thread audit, after the batch
            for r in out:
                a.validations += 1
                if r["valid"]:
                    a.valid += 1
                else:
                    a.invalid += 1
                a.versions[f"v{r['schema_version']}"] += 1
            return out

    torn = wrong = transformed = valid_total = total_rows = total_out = 0
    wall = 0.0
    for b, (label, ratio, seed, toggle) in enumerate(ETL_BATCHES, start=1):
        rows = etl_rows(per_batch, ratio, seed)
        total_rows += len(rows)
        expect = {v: [len(validate_row(row, SCHEMAS[v]["fields"])) for row in rows]
                  for v in (1, 2)}
        if b == 2:
            reload(SCHEMA_V2)                 # the reload between batches 1 and 2
        stop = threading.Event()
        toggles = [0]

        def toggler():
            active = 2
            while not stop.is_set():
                active = 3 - active
                reload(SCHEMAS[active])
                toggles[0] += 1
                time.sleep(0.001)

        tog = threading.Thread(target=toggler, name="schema-toggler") if toggle else None
        t0 = time.perf_counter()
        if tog:
            tog.start()
        items = list(enumerate(rows, start=1))
        outs = run_pool(validate, chunks(items, 25), threads)
        secs = time.perf_counter() - t0
        wall += secs
        if tog:
            stop.set()
            tog.join()
            reload(SCHEMA_V2)

        crashed = sum(1 for o in outs if isinstance(o, Exception))
        results = [r for o in outs if not isinstance(o, Exception) for r in o]
        total_out += len({r["row_id"] for r in results})
        per_version = collections.Counter(f"v{r['schema_version']}" for r in results)
        valid_per_version = collections.Counter(f"v{r['schema_version']}"
                                                for r in results if r["valid"])
        expected_valid_per_version = collections.Counter()
        n_valid = 0
        for r in results:
            errs = expect.get(r["schema_version"], [None] * len(rows))[r["row_id"] - 1]
            if errs == 0:
                expected_valid_per_version[f"v{r['schema_version']}"] += 1
            if r["torn"]:
                torn += 1
            if errs is None or (errs == 0) != r["valid"] or errs != len(r["errors"]):
                wrong += 1
            if r["valid"]:
                n_valid += 1
                valid_total += 1
                if "full_name" in r["row"] and "name" not in r["row"] and r["row"].get("role"):
                    transformed += 1
        res.checks.append(eq(f"{label}: batches failed", 0, crashed))
        res.checks.append(eq(f"{label}: rows out (valid + invalid)", len(rows), len(results)))
        if toggle:
            res.checks.append(eq(f"{label}: rows validated with v1 or v2", len(rows),
                                 per_version["v1"] + per_version["v2"]))
            res.checks.append(eq(f"{label}: valid rows, each under the version it read",
                                 sum(expected_valid_per_version.values()), n_valid))
            res.checks.append(eq(f"{label}: valid rows per version",
                                 dict(expected_valid_per_version), dict(valid_per_version)))
            res.info.append(f"{label}: schema toggled {toggles[0]} times while the batch "
                            f"ran; rows per version: v1 {per_version['v1']}, "
                            f"v2 {per_version['v2']}")
        else:
            v = f"v{b}"
            exp_valid = sum(1 for e in expect[b] if e == 0)
            res.checks.append(eq(f"{label}: rows validated with {v}", len(rows),
                                 per_version[v]))
            res.checks.append(eq(f"{label}: valid rows ({v} rules)", exp_valid, n_valid))
            res.checks.append(eq(f"{label}: invalid rows ({v} rules)",
                                 len(rows) - exp_valid, len(results) - n_valid))
        res.extra_rates.append((label, f"{len(rows) / max(secs, 0.001):.1f} rows/s "
                                       f"({fmt_time(secs)})"))
    res.wall_s = wall
    res.items = total_rows

    if mode == "unsafe":
        validations, audit_valid = _audit["validations"], _audit["valid"]
        audit_invalid = _audit["invalid"]
        audit_versions = dict(_audit["versions"])
        audit_name = "_audit (shared)"
    else:
        validations = sum(a.validations for a in per.states)
        audit_valid = sum(a.valid for a in per.states)
        audit_invalid = sum(a.invalid for a in per.states)
        audit_versions = dict(sum((a.versions for a in per.states), collections.Counter()))
        audit_name = "merged per-thread audits"
        res.info.append(f"per-thread states merged: {len(per.states)}")
    res.checks += [
        eq("rows validated against a torn schema (rules of another version)", 0, torn),
        eq("rows whose outcome differs from their version's rules", 0, wrong),
        eq("valid rows transformed (name -> full_name, role defaulted)", valid_total,
           transformed),
        eq("audit total: rows received", total_rows, total_out),
        eq(f"audit total: validations counted ({audit_name})", total_rows, validations),
        eq(f"audit valid + invalid ({audit_name})", total_rows, audit_valid + audit_invalid),
        eq(f"audit valid rows ({audit_name})", valid_total, audit_valid),
        eq(f"audit rows per version ({audit_name}), all batches", total_rows,
           sum(audit_versions.values())),
    ]
    return res


# ---------------------------------------------------------------------------------------
# ml_scoring: 2K records / session-scoped state (needs scikit-learn)

def ml_data(scale):
    rng = Rng(42137256)
    n_train = 2000 if scale == "full" else 400
    n_test = 2000 if scale == "full" else 400

    def training(c0, c1):
        X, y = [], []
        for i in range(n_train):
            label = i % 2
            X.append([rng.gauss(c, 1.0) for c in (c1 if label else c0)])
            y.append(label)
        return X, y

    train_a = training((1, 2, 1, 2), (3, 4, 3, 4))
    train_b = training((0, 0, 0, 0), (5, 5, 5, 5))
    cache = {i: [rng.float() for _ in range(4)] for i in range(1, 11)}
    records = []
    for i in range(1, n_test + 1):
        if i % 3 == 0:
            base = (2, 3, 2, 3)
        elif i % 2 == 0:
            base = (3.5, 4.5, 3.5, 4.5)
        else:
            base = (0.5, 1.5, 0.5, 1.5)
        records.append({"id": i, "data": {f"f{k + 1}": rng.gauss(b, 0.3)
                                          for k, b in enumerate(base)}})
    return train_a, train_b, cache, records


def featurize(record, cache):
    hit = cache.get(record["id"])
    if hit is not None:
        return hit
    d = record["data"]
    return [float(d[k]) for k in sorted(d) if isinstance(d[k], (int, float))]


def route(confidence):
    return ("high_confidence" if confidence >= 0.9 else
            "low_confidence" if confidence < 0.6 else "default")


# unsafe: the session table and counters, as module globals shared by threads
_sessions = {}
_prediction_count = 0


def run_ml_scoring(mode, threads, scale):
    global _sessions, _prediction_count
    from sklearn.linear_model import LogisticRegression

    train_a, train_b, cache, records = ml_data(scale)
    training = {"session_a": train_a, "session_b": train_b}
    res = ModeResult(mode)
    res.unit = "predictions"
    lock = threading.Lock()
    safe_sessions = {}
    safe_count = [0]

    def train(sid):
        X, y = training[sid]
        model = LogisticRegression(max_iter=1000).fit(X, y)
        if mode == "unsafe":
            _sessions[sid] = {"model": model, "prediction_count": 0}
        else:
            with lock:
                safe_sessions[sid] = {"model": model, "prediction_count": 0,
                                      "lock": threading.Lock()}
        return sid

    def predict_batch(job):
        global _prediction_count
        sid, items = job
        sess = (_sessions if mode == "unsafe" else safe_sessions)[sid]
        proba = sess["model"].predict_proba([featurize(r, cache) for r in items])
        out = [{"id": r["id"], "prediction": int(p[1] >= p[0]), "confidence": float(max(p))}
               for r, p in zip(items, proba)]
        if mode == "unsafe":
            sess["prediction_count"] += len(items)
            _prediction_count += len(items)
        else:
            with sess["lock"]:
                sess["prediction_count"] += len(items)
            with lock:
                safe_count[0] += len(items)
        return sid, out

    t0 = time.perf_counter()
    if mode == "unsafe":
        _sessions, _prediction_count = {}, 0
    with ThreadPoolExecutor(max_workers=threads) as ex:
        list(ex.map(train, training))
        jobs = [(sid, b) for b in chunks(records, 100) for sid in training]
        outs = list(ex.map(predict_batch, jobs))
    res.wall_s = time.perf_counter() - t0

    store = _sessions if mode == "unsafe" else safe_sessions
    total_count = _prediction_count if mode == "unsafe" else safe_count[0]
    preds = {sid: {} for sid in training}
    for sid, out in outs:
        for r in out:
            preds[sid][r["id"]] = (r["prediction"], r["confidence"])
    # the reference: both models on every record, one thread, after the run
    feats = [featurize(r, cache) for r in records]
    pa = store["session_a"]["model"].predict(feats)
    pb = store["session_b"]["model"].predict(feats)
    e_div = sum(1 for a, b in zip(pa, pb) if a != b)
    o_div = sum(1 for r in records
                if preds["session_a"].get(r["id"], (None,))[0]
                != preds["session_b"].get(r["id"], (None,))[0])
    n = len(records)
    res.items = sum(len(p) for p in preds.values())
    where = "shared globals" if mode == "unsafe" else "locked"
    res.checks += [
        eq("sessions stored", {"session_a", "session_b"}, set(store)),
        eq("predictions returned", 2 * n, res.items),
        eq(f"predictions counted ({where})", 2 * n, total_count),
        eq(f"session_a predictions counted ({where})", n, store["session_a"]["prediction_count"]),
        eq(f"session_b predictions counted ({where})", n, store["session_b"]["prediction_count"]),
        eq("records predicted differently by the two sessions (reference: one thread)",
           e_div, o_div),
    ]
    for sid in training:
        b = collections.Counter(route(c) for _, c in preds[sid].values())
        res.info.append(f"{sid}: " + " ".join(f"{k}={b[k]}" for k in
                                              ("high_confidence", "default", "low_confidence")))
    return res


# ---------------------------------------------------------------------------------------
# image_pipeline: 200 images / backpressure + memory (needs Pillow)

MAX_WEIGHT = 2_000_000
MAX_IN_FLIGHT = 4
THUMB_W = 150


def image_specs(scale):
    rng = Rng(42137256)
    k = 1 if scale == "full" else 10
    specs = []

    def color():
        return [rng.int(0, 255) for _ in range(3)]

    for _ in range(50 // k):
        w, h = 100 + rng.int(1, 300), 100 + rng.int(1, 300)
        specs.append({"width": w, "height": h, "color": color(), "label": f"small-{w}x{h}"})
    for _ in range(80 // k):
        w, h = 500 + rng.int(1, 780), 400 + rng.int(1, 520)
        specs.append({"width": w, "height": h, "color": color(), "label": f"medium-{w}x{h}"})
    for _ in range(50 // k):
        specs.append({"width": 1920, "height": 1080, "color": color(), "label": "large-1080p"})
    for _ in range(20 // k):
        specs.append({"width": 3840, "height": 2160, "color": color(), "label": "xl-4k"})
    return rng.shuffle(specs)


def make_image(spec):
    from PIL import Image, ImageDraw
    img = Image.new("RGB", (spec["width"], spec["height"]), tuple(spec["color"]))
    ImageDraw.Draw(img).text((10, 10), spec["label"], fill=(255, 255, 255))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def weighted_batches(items, weight, max_weight):
    """WeightedBatch: consecutive items up to max_weight; a heavier item goes alone."""
    batches, cur, w = [], [], 0
    for it in items:
        iw = weight(it)
        if cur and w + iw > max_weight:
            batches.append(cur)
            cur, w = [], 0
        cur.append(it)
        w += iw
    if cur:
        batches.append(cur)
    return batches


# unsafe: memory accounting as module globals shared by threads
_current_memory = 0
_memory_watermark = 0
_images_processed = 0
_in_flight = 0
_in_flight_peak = 0


def run_image_pipeline(mode, threads, scale):
    global _current_memory, _memory_watermark, _images_processed, _in_flight, _in_flight_peak
    from PIL import Image

    specs = image_specs(scale)
    res = ModeResult(mode)
    res.unit = "images"
    # the input images are made first, untimed (the example times generation apart)
    with ThreadPoolExecutor(max_workers=threads) as ex:
        images = [{"data": d, **s} for s, d in zip(specs, ex.map(make_image, specs))]
    lanczos = getattr(Image, "Resampling", Image).LANCZOS

    def open_image(item):
        img = Image.open(io.BytesIO(item["data"]))
        img.load()
        w, h = img.size
        return img, (w, h), (THUMB_W, max(1, int(h * THUMB_W / w)))

    def encode(img, size):
        buf = io.BytesIO()
        img.resize(size, lanczos).save(buf, format="PNG", optimize=True)
        return buf.getvalue()

    def result(item, size, tsize, data):
        return {"label": item["label"], "original_size": list(size),
                "thumb_size": list(tsize), "original_bytes": len(item["data"]),
                "thumb_bytes": len(data)}

    lock = threading.Lock()
    safe = {"current": 0, "watermark": 0, "processed": 0, "in_flight": 0, "peak": 0,
            "batches_in_flight": 0, "batch_peak": 0}

    def process_unsafe(item):
        global _current_memory, _memory_watermark, _images_processed
        global _in_flight, _in_flight_peak
        img, (w, h), (tw, th) = open_image(item)
        est = w * h * 3 + tw * th * 3
        _in_flight += 1
        _in_flight_peak = max(_in_flight_peak, _in_flight)
        _current_memory += est
        _memory_watermark = max(_memory_watermark, _current_memory)
        data = encode(img, (tw, th))
        _current_memory -= est
        _in_flight -= 1
        _images_processed += 1
        return result(item, (w, h), (tw, th), data)

    def process_safe_batch(batch):
        with lock:
            safe["batches_in_flight"] += 1
            safe["batch_peak"] = max(safe["batch_peak"], safe["batches_in_flight"])
        out = []
        try:
            for item in batch:
                img, (w, h), (tw, th) = open_image(item)
                est = w * h * 3 + tw * th * 3
                with lock:
                    safe["in_flight"] += 1
                    safe["peak"] = max(safe["peak"], safe["in_flight"])
                    safe["current"] += est
                    safe["watermark"] = max(safe["watermark"], safe["current"])
                data = encode(img, (tw, th))
                with lock:
                    safe["current"] -= est
                    safe["in_flight"] -= 1
                    safe["processed"] += 1
                out.append(result(item, (w, h), (tw, th), data))
        finally:
            with lock:
                safe["batches_in_flight"] -= 1
        return out

    t0 = time.perf_counter()
    if mode == "unsafe":
        _current_memory = _memory_watermark = _images_processed = 0
        _in_flight = _in_flight_peak = 0
        outs = run_pool(process_unsafe, images, threads)
        results = [o for o in outs if not isinstance(o, Exception)]
        failed = len(outs) - len(results)
        processed, current, watermark = _images_processed, _current_memory, _memory_watermark
        peak = _in_flight_peak
    else:
        batches = weighted_batches(images, lambda it: it["width"] * it["height"], MAX_WEIGHT)
        outs = run_pool(process_safe_batch, batches, min(threads, MAX_IN_FLIGHT))
        results = [r for o in outs if not isinstance(o, Exception) for r in o]
        failed = sum(1 for o in outs if isinstance(o, Exception))
        processed, current, watermark = safe["processed"], safe["current"], safe["watermark"]
        peak = safe["peak"]
        res.info.append(f"WeightedBatch: {len(batches)} batches "
                        f"({sum(1 for b in batches if len(b) == 1)} single images), "
                        f"max_in_flight {MAX_IN_FLIGHT}")
    res.wall_s = time.perf_counter() - t0

    n = len(images)
    res.items = len(results)
    where = "shared globals" if mode == "unsafe" else "locked"
    right_size = sum(1 for r in results
                     if r["thumb_size"] == [THUMB_W, max(1, int(r["original_size"][1] * THUMB_W
                                                                 / r["original_size"][0]))])
    res.checks += [
        eq("failed tasks", 0, failed),
        eq("thumbnails returned", n, len(results)),
        eq("thumbnails of the right size", n, right_size),
        eq(f"images counted ({where})", n, processed),
        eq(f"memory estimate after the run ({where}, bytes)", 0, current),
        eq(f"images in flight after the run ({where})", 0,
           _in_flight if mode == "unsafe" else safe["in_flight"]),
    ]
    if mode == "safe":
        res.checks.append(at_most("peak images in flight", MAX_IN_FLIGHT, peak))
        res.checks.append(at_most("peak batches in flight", MAX_IN_FLIGHT, safe["batch_peak"]))
    mpx = sum(s["width"] * s["height"] for s in specs) / 1e6
    res.extra_rates.append(("megapixels", f"{mpx / max(res.wall_s, 0.001):.1f} MP/s "
                            f"({mpx:.1f} MP)"))
    res.info.append(f"peak images in flight: {peak}; peak memory estimate "
                    f"(w*h*3 + thumbnail): {watermark / 2**20:.1f} MB")
    return res


# ---------------------------------------------------------------------------------------
# driver

EXAMPLES = collections.OrderedDict([
    ("text_analysis", ("5K Docs / Shared Accumulator Races", None, run_text_analysis)),
    ("batch_stats", ("2K Datasets / Fault-Isolated Parallel Compute", None, run_batch_stats)),
    ("data_etl", ("15K Rows / Hot-Reload Under Contention", None, run_data_etl)),
    ("ml_scoring", ("2K Records / Session-Scoped State Isolation",
                    ("sklearn", "scikit-learn", "python3-sklearn"), run_ml_scoring)),
    ("image_pipeline", ("200 Images / Backpressure + Memory Safety",
                        ("PIL", "Pillow", "python3-pil"), run_image_pipeline)),
])

MODE_TITLE = {
    "unsafe": "unsafe: module-level state shared by all threads, no locks",
    "safe": "safe: per-thread state merged after the pool joins, locks where shared",
}


class Report:
    def __init__(self, as_json):
        self.as_json = as_json

    def __call__(self, line=""):
        if not self.as_json:
            print(line, flush=True)


def unsafe_note(res, info):
    if not res.ok:
        note = ("the MISMATCH above is a lost update or torn read that happened in this "
                "run: the demonstration, not a script failure.")
        if info["gil_enabled"]:
            note += (" With the GIL on, a thread is switched out only at some bytecodes, "
                     "calls among them: a read-modify-write with a call inside "
                     "(d[k] = d.get(k, 0) + 1) or related reads with calls between them "
                     "(a schema's version, then its rules) can still be split, and one "
                     "stale write-back undoes every update made meanwhile.")
        return note
    if info["gil_enabled"]:
        return ("no lost update or torn read in this run. The GIL is enabled: threads "
                "switch only at some bytecodes (calls, loop back-edges), so a "
                "read-modify-write such as n += 1 or d[w] += c is rarely split. The code "
                "is still unsafe; with the GIL off (free-threaded build) it can lose "
                "updates.")
    return ("no lost update or torn read in this run, with the GIL off. Races are "
            "timing-dependent: another run, more threads or more cores may show them.")


def run_example(name, args, out, info):
    desc, requires, fn = EXAMPLES[name]
    entry = {"name": name, "desc": desc, "status": "ran", "modes": []}
    out(f"=== Pure-Python baseline: {name} ({desc}) ===")
    if requires:
        module, package, debian = requires
        try:
            __import__(module)
        except Exception as e:
            msg = (f"SKIPPED {name}: {package} does not import under {sys.executable} "
                   f"({type(e).__name__}: {e}). Install it for that interpreter "
                   f"({sys.executable} -m pip install {package}; for Debian's python3: "
                   f"apt-get install {debian}) to run this baseline.")
            out(msg)
            out()
            entry.update(status="skipped", skip_reason=msg)
            return entry
        now = gil_enabled()
        if now != info["gil_enabled"]:
            out(f"GIL enabled now: {'yes' if now else 'no'} (changed when {module} was "
                f"imported: an extension without free-threading support turns it back on)")
            info["gil_enabled"] = now
    modes = ["unsafe", "safe"] if args.mode == "both" else [args.mode]
    for mode in modes:
        out(f"--- {MODE_TITLE[mode]} ({args.threads} threads) ---")
        try:
            res = fn(mode, args.threads, args.scale)
        except Exception:
            res = ModeResult(mode)
            res.error = traceback.format_exc()
            out(f"  ERROR: the {mode} run raised:")
            for line in res.error.rstrip().splitlines():
                out("    " + line)
            entry["modes"].append(res.as_dict())
            continue
        secs = res.wall_s
        out(f"  wall: {fmt_time(secs)}")
        out(f"  throughput: {res.items / max(secs, 0.001):.1f} {res.unit}/s "
            f"({res.items} {res.unit} in {secs:.2f}s)")
        for label, text in res.extra_rates:
            out(f"  throughput ({label}): {text}")
        for c in res.checks:
            out(c.line())
        for line in res.info:
            out(f"  {line}")
        bad = sum(1 for c in res.checks if not c.ok)
        out(f"  result: {'all checks OK' if bad == 0 else f'{bad} MISMATCH'}")
        d = res.as_dict()
        if mode == "unsafe":
            note = unsafe_note(res, info)
            out(f"  note: {note}")
            d["note"] = note
        entry["modes"].append(d)
    out()
    return entry


def main(argv=None):
    p = argparse.ArgumentParser(
        description="Pure-Python (one process, thread pool) baselines for the Slither "
                    "examples: unsafe (shared state, no locks) and safe.")
    p.add_argument("example", nargs="?", choices=list(EXAMPLES), metavar="NAME",
                   help="one of: " + ", ".join(EXAMPLES))
    p.add_argument("--all", action="store_true", help="run all five examples")
    p.add_argument("--mode", choices=("unsafe", "safe", "both"), default="both")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 4,
                   help="thread pool size (default: the CPU count, %(default)s)")
    p.add_argument("--scale", choices=("small", "full"), default="full")
    p.add_argument("--json", action="store_true", help="print one JSON document instead")
    p.add_argument("--require-free-threaded", action="store_true",
                   help="exit 3 unless the GIL is disabled")
    args = p.parse_args(argv)
    if args.all and args.example:
        p.error("cannot combine --all with an example name")
    if not args.all and not args.example:
        p.print_help(sys.stderr)
        return 2
    if args.threads < 1:
        p.error("--threads must be at least 1")

    info = interpreter_info()
    out = Report(args.json)
    if args.require_free_threaded and info["gil_enabled"]:
        print("ERROR: free-threaded Python with the GIL disabled is required; "
              f"{info['executable']} ({info['version']}) runs with the GIL "
              f"(free-threaded build: {'yes' if info['free_threaded_build'] else 'no'}).\n"
              "Build one with scripts/build-free-threaded-python.sh and set "
              "SLITHER_BASELINE_PYTHON.", file=sys.stderr)
        return 3

    out("=== Pure-Python baselines for the Slither examples ===")
    out(f"interpreter: {info['executable']} ({info['implementation']} {info['version']})")
    ft = info["py_gil_disabled"]
    out(f"free-threaded build: {'yes' if info['free_threaded_build'] else 'no'} "
        f"(sysconfig Py_GIL_DISABLED={ft if ft is not None else 'unset'})")
    if info["gil_probe"]:
        out(f"GIL enabled now: {'yes' if info['gil_enabled'] else 'no'} "
            f"(sys._is_gil_enabled())")
    else:
        out("GIL enabled now: yes (no sys._is_gil_enabled() before 3.13: a GIL build)")
    out(f"threads: {args.threads}  scale: {args.scale}  mode: {args.mode}  "
        f"cpus: {info['cpu_count']}")
    out()

    names = list(EXAMPLES) if args.all else [args.example]
    entries = [run_example(n, args, out, info) for n in names]

    safe_failed = [e["name"] for e in entries for m in e["modes"]
                   if m["mode"] == "safe" and not m["ok"]]
    errors = [e["name"] for e in entries for m in e["modes"] if m["error"]]
    out("=== Summary ===")
    for e in entries:
        if e["status"] == "skipped":
            out(f"  {e['name']}: SKIPPED")
            continue
        parts = []
        for m in e["modes"]:
            if m["error"]:
                parts.append(f"{m['mode']}=ERROR")
            else:
                bad = sum(1 for c in m["checks"] if not c["ok"])
                parts.append(f"{m['mode']}={'OK' if bad == 0 else f'MISMATCH({bad})'} "
                             f"[{fmt_time(m['wall_s'])}]")
        out(f"  {e['name']}: " + " ".join(parts))
    status = 1 if safe_failed or errors else 0
    if safe_failed:
        out("  safe-mode MISMATCH in: " + ", ".join(sorted(set(safe_failed)))
            + " (a bug in this baseline)")
    if errors:
        out("  raised: " + ", ".join(sorted(set(errors))))
    out(f"exit status: {status}")
    if args.json:
        info["gil_enabled_at_end"] = gil_enabled()
        json.dump({"interpreter": info, "threads": args.threads, "scale": args.scale,
                   "mode": args.mode, "examples": entries, "safe_ok": not safe_failed,
                   "exit_status": status}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
