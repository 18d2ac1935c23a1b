"""data_etl example: row validation against a schema read from the engine's store.

validate_batch(items): items are {"row_id": n, "row": {...}}. For every row the
worker reads the current schema straight from the engine's store (shared memory,
no message): slither_worker.store("etl_schema").get("schemas", "current") returns
one whole value, {"version": v, "fields": {...}}, in which every field rule also
carries the version it belongs to. A row is validated against exactly the value
it read; the result says which version that was and whether the value was whole
(every field rule tagged with the schema's version).

Each worker keeps an audit in the run's session state (validations, valid,
invalid, rows per schema version), updated after the whole batch; the last
result of every batch carries it, so the engine can compare the workers' own
counts with the rows it received.

Standard library only.
"""
import os
import re

import slither_worker

STORE = "etl_schema"
_patterns = {}


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


def validate_row(row, fields):
    """The list of errors of row under the schema's fields (empty: valid)."""
    errors = []
    for name in sorted(fields):
        rule = fields[name]
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
                pat = _patterns.get(rule["pattern"])
                if pat is None:
                    pat = _patterns[rule["pattern"]] = re.compile(rule["pattern"])
                if not pat.search(v):
                    errors.append(f"{name}: does not match {rule['pattern']}")
    return errors


def validate_batch(items):
    if not items:
        return []
    schemas = slither_worker.store(STORE)
    pid = os.getpid()
    out = []
    for it in items:
        schema = schemas.get("schemas", "current")  # one read: one whole value
        version = schema["version"]
        fields = schema["fields"]
        whole = all(rule.get("version") == version for rule in fields.values())
        try:
            errors = validate_row(it["row"], fields)
        except Exception as e:  # a malformed row is invalid, not a failed batch
            errors = [f"row: {type(e).__name__}: {e}"]
        out.append({
            "row_id": it["row_id"],
            "row": it["row"],
            "valid": not errors,
            "errors": errors,
            "schema_version": version,
            "schema_whole": whole,
            "worker_pid": pid,
        })
    state = slither_worker.session()
    audit = state.setdefault("audit", {"validations": 0, "valid": 0, "invalid": 0,
                                       "versions": {}, "batches": 0})
    for r in out:
        audit["validations"] += 1
        audit["valid" if r["valid"] else "invalid"] += 1
        key = f"v{r['schema_version']}"
        audit["versions"][key] = audit["versions"].get(key, 0) + 1
    audit["batches"] += 1
    out[-1]["audit"] = {
        "pid": pid,
        "validations": audit["validations"],
        "valid": audit["valid"],
        "invalid": audit["invalid"],
        "batches": audit["batches"],
        "versions": dict(audit["versions"]),
    }
    return out
