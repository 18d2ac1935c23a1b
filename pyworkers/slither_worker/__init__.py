"""slither_worker: the Python side of a Slither pool.

The engine starts ``python -m slither_worker``; the worker reads call frames on
fd 3, runs ``module.function(payloads)`` and writes the results back. User code is
plain functions that take a list and return a list of the same length.

Inside a running call:
    slither_worker.session()  -> dict kept in this worker for the call's session
        (calls of one session run one at a time, so updating it needs no lock)
    slither_worker.worker_name() -> this worker's name ("default/w1")
    slither_worker.view(name, args) -> the result of the engine's view `name`
    slither_worker.store(name).get(table, key) -> a value read from the engine's
        store through shared memory, without a message to the engine
"""
from .runtime import session, worker_name, current_session_id, view, ViewError
from .store import store

__all__ = ["session", "worker_name", "current_session_id", "view", "ViewError", "store"]
