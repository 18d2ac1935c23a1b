"""Functions `slither bench store` calls: random lookups in the engine's store from
one Python worker, timed inside Python (time.perf_counter around the loop only),
the way shared/bench/redis_reads.py times its Redis reads: same keys, same random
sequence (random.Random(7)), same values, so the figures differ only in how a value
reaches Python.

Each function takes one job dict and returns one dict of figures: a pool call is
one payload in, one result out.
"""
import random
import time

import slither_worker


def _keys(keys, lookups):
    rng = random.Random(7)  # the peer's seed: the same key sequence
    return [f"user:{rng.randrange(keys)}" for _ in range(lookups)]


def _check(got, want, lookups, what):
    # every lookup found a value of the shape the bench stored: {tier, score}
    if len(got) != lookups:
        raise AssertionError(f"{what}: {len(got)} values for {lookups} lookups")
    missing = sum(1 for g in got if not (isinstance(g, dict) and "tier" in g))
    if missing:
        raise AssertionError(f"{what}: {missing} of {lookups} lookups found no value")
    return sum(g["score"] for g in got) == want


def _want(ks):
    # score is i % 100 for key user:i, as the bench loads it
    return sum(int(k[5:]) % 100 for k in ks)


def direct(jobs):
    """slither_worker.store(name).get in a loop, then get_many in groups."""
    out = []
    for job in jobs:
        store, table = job["store"], job["table"]
        keys, lookups, group = job["keys"], job["lookups"], job.get("group", 100)
        ks = _keys(keys, lookups)
        want = _want(ks)
        s = slither_worker.store(store)
        s.get(table, ks[0])  # maps the segment: not part of the timing

        get = s.get
        t = time.perf_counter()
        got = [get(table, k) for k in ks]
        get_s = time.perf_counter() - t
        get_ok = _check(got, want, lookups, "get")

        get_many = s.get_many
        t = time.perf_counter()
        got = []
        for i in range(0, lookups, group):
            got.extend(get_many(table, ks[i:i + group]))
        many_s = time.perf_counter() - t
        many_ok = _check(got, want, lookups, "get_many")

        out.append({"lookups": lookups, "group": group,
                    "get_wall_s": get_s, "get_lookups_per_s": lookups / get_s,
                    "get_many_wall_s": many_s, "get_many_lookups_per_s": lookups / many_s,
                    "values_ok": get_ok and many_ok})
    return out


def views(jobs):
    """One slither_worker.view call per lookup: a round trip to the engine each,
    whose Lua handler does store:get."""
    out = []
    for job in jobs:
        name, keys, lookups = job["view"], job["keys"], job["lookups"]
        ks = _keys(keys, lookups)
        want = _want(ks)
        view = slither_worker.view
        for k in ks[:min(100, lookups)]:  # warm-up: the handler's trace, the frames
            view(name, {"key": k})
        t = time.perf_counter()
        got = [view(name, {"key": k}) for k in ks]
        dt = time.perf_counter() - t
        ok = _check(got, want, lookups, "view")
        out.append({"lookups": lookups, "wall_s": dt, "lookups_per_s": lookups / dt,
                    "values_ok": ok})
    return out
