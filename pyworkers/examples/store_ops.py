"""Functions the store and pipe examples call."""
import slither_worker


def enrich(items):
    """Reads each user's features straight from the engine's store (shared memory,
    no round trip) and asks the engine's view for the tier's discount."""
    features = slither_worker.store("features")
    out = []
    for user in items:
        f = features.get("features", user) or {}
        discount = slither_worker.view("discount", {"tier": f.get("tier", "none")})
        out.append({"user": user, "tier": f.get("tier", "none"), "discount": discount})
    return out


def score(items):
    return [{"user": it["user"], "score": round(0.2 + it["discount"] * 3, 2)} for it in items]
