"""text_analysis example: per-document analysis with a per-worker word index.

analyze_batch(items): items are {"text": str}. The stopword list comes from the
engine: the pipe's store registers a session-scoped view ("get_stopwords") for
each run, and the first batch a worker runs in that session asks for it once and
keeps it in the session's state.

Every worker also keeps, in the run's session state, a word index of all the
content words it has seen and a document counter. Each process owns its own
counters, so nothing is shared and nothing can be lost to a race; the engine
merges them. The last result of every batch carries a snapshot of the worker's
state after the batch, so the engine receives the final state of every worker
that analyzed anything, without having to find each worker afterwards.

Standard library only.
"""
import os
import re
from collections import Counter

import slither_worker

_WORD = re.compile(r"\b\w+\b")
_SENTENCE = re.compile(r"[.!?]+")
_VOWELS = re.compile(r"[aeiouy]+")

POSITIVE = frozenset({"good", "excellent", "happy", "amazing"})
NEGATIVE = frozenset({"bad", "terrible", "sad", "awful"})


def syllables(word):
    """Vowel groups, a trailing silent 'e' not counted, at least one."""
    n = len(_VOWELS.findall(word))
    if n > 1 and word.endswith("e") and not word.endswith(("le", "ee")):
        n -= 1
    return max(1, n)


def _stopwords(state):
    sw = state.get("stopwords")
    if sw is None:
        answer = slither_worker.view("get_stopwords", {})
        sw = frozenset(answer["stopwords"])
        state["stopwords"] = sw
        state["view_calls"] = state.get("view_calls", 0) + 1
    return sw


def analyze(text, stopwords):
    words = _WORD.findall(text.lower())
    total = len(words)
    sentences = [s for s in _SENTENCE.split(text) if s.strip()]
    n_sent = max(1, len(sentences))
    content = [w for w in words if w not in stopwords]
    counts = Counter(content)
    pos = sum(1 for w in words if w in POSITIVE)
    neg = sum(1 for w in words if w in NEGATIVE)
    if total:
        syl = sum(syllables(w) for w in words)
        readability = round(206.835 - 1.015 * (total / n_sent) - 84.6 * (syl / total), 2)
        sentiment = round((pos - neg) / total, 4)
    else:
        readability = 0.0
        sentiment = 0.0
    return counts, {
        "word_count": total,
        "content_words": len(content),
        "unique_words": len(counts),
        "top_words": dict(counts.most_common(10)),
        "readability": readability,
        "sentiment": sentiment,
        "positive_count": pos,
        "negative_count": neg,
    }


def analyze_batch(items):
    if not items:
        return []
    state = slither_worker.session()
    stopwords = _stopwords(state)
    pid = os.getpid()
    # Analyze the whole batch before touching the worker's state: a batch that
    # fails leaves the counters as they were.
    analyzed = [analyze(it["text"], stopwords) for it in items]
    index = state.setdefault("index", Counter())
    docs = state.get("docs", 0)
    out = []
    for counts, result in analyzed:
        index.update(counts)
        docs += 1
        result["worker_pid"] = pid
        result["worker_doc_seq"] = docs
        out.append(result)
    state["docs"] = docs
    state["batches"] = state.get("batches", 0) + 1
    out[-1]["worker_state"] = {
        "pid": pid,
        "docs": docs,
        "batches": state["batches"],
        "view_calls": state["view_calls"],
        "stopwords": len(stopwords),
        "index": dict(index),
    }
    return out
