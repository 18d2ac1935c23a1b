"""ml_scoring example: a scikit-learn model per session, features from the engine's store.

train_model([spec]): spec is {"model_id": str, "X": [[f1..f4], ...], "y": [0|1, ...]}.
Fits LogisticRegression(max_iter=1000) and keeps it in the call's session state
(slither_worker.session()): the pool runs with strict affinity, so every later
call of the session comes to this worker, and another session's calls, even on
the same worker, see another dict. Returns the training accuracy and the worker.

predict_batch(items): items are {"id": n, "cache_hit": bool}. The features are
not in the payload: the pipeline's Lua stage wrote them to the engine's store
(the feature cache, write-through), and this function reads them back from
shared memory with slither_worker.store("ml_features").get_many. A session
without a model, or a record without cached features, raises: an error fails
the batch rather than coming back as a low-confidence prediction. Every result
carries the features it read, the model id that scored it and the worker; the
last result of a batch carries the session's counters after the batch.

reference([spec]): spec is {"train_a": {"X", "y"}, "train_b": {...}, "features":
[[...], ...]}. Trains both models again, in this one process, with the same
code and data, and predicts every record with each: the independent answer
the engine compares the sessions' predictions with.

Needs scikit-learn (Debian: python3-sklearn).
"""
import os

import slither_worker

STORE = "ml_features"
TABLE = "feature_cache"


def _fit(X, y):
    from sklearn.linear_model import LogisticRegression
    return LogisticRegression(max_iter=1000).fit(X, y)


def _predict(model, X):
    """Prediction and confidence per row, as the pure-Python baseline computes them."""
    proba = model.predict_proba(X)
    return [(int(p[1] >= p[0]), float(max(p)), [float(p[0]), float(p[1])]) for p in proba]


def train_model(specs):
    out = []
    for spec in specs:
        X, y = spec["X"], spec["y"]
        model = _fit(X, y)
        state = slither_worker.session()
        state["model"] = model
        state["model_id"] = spec["model_id"]
        state["predictions"] = 0
        state["batches"] = 0
        out.append({
            "model_id": spec["model_id"],
            "session": slither_worker.current_session_id(),
            "classes": [int(c) for c in model.classes_],
            "n_features": int(model.n_features_in_),
            "n_samples": len(X),
            "accuracy": round(float(model.score(X, y)), 4),
            "worker_pid": os.getpid(),
        })
    return out


def predict_batch(items):
    if not items:
        return []
    state = slither_worker.session()
    model = state.get("model")
    if model is None:
        raise LookupError(f"session {slither_worker.current_session_id()!r} has no model "
                          f"in worker {os.getpid()}")
    ids = [it["id"] for it in items]
    feats = slither_worker.store(STORE).get_many(TABLE, ids)
    for i, f in zip(ids, feats):
        if f is None:
            raise KeyError(f"record {i} has no features in the store's {TABLE}")
    preds = _predict(model, feats)
    pid = os.getpid()
    out = []
    for it, f, (label, conf, proba) in zip(items, feats, preds):
        out.append({
            "id": it["id"],
            "cache_hit": it["cache_hit"],
            "features": f,
            "prediction": label,
            "confidence": conf,
            "probabilities": proba,
            "model_id": state["model_id"],
            "worker_pid": pid,
        })
    state["predictions"] += len(items)
    state["batches"] += 1
    out[-1]["worker_state"] = {
        "pid": pid,
        "session": slither_worker.current_session_id(),
        "model_id": state["model_id"],
        "predictions": state["predictions"],
        "batches": state["batches"],
    }
    return out


def reference(specs):
    out = []
    for spec in specs:
        feats = spec["features"]
        res = {}
        for name in ("train_a", "train_b"):
            model = _fit(spec[name]["X"], spec[name]["y"])
            preds = _predict(model, feats)
            res[name] = {"prediction": [p[0] for p in preds],
                         "confidence": [p[1] for p in preds]}
        res["worker_pid"] = os.getpid()
        out.append(res)
    return out
