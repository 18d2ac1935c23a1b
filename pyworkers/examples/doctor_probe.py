"""What `slither doctor` asks a worker: which optional packages import here.

Runs inside a worker of the interpreter under test, so the answers are that
interpreter's, not those of whatever python3 the shell finds first.
"""
import importlib
import sys

# Debian puts its python3-* packages here; only the interpreter Debian built
# (/usr/bin/python3) has it on sys.path.
DEBIAN_DIST_PACKAGES = "/usr/lib/python3/dist-packages"


def versions(names):
    """For each module name: its version string, or None when it does not import."""
    out = []
    for name in names:
        try:
            mod = importlib.import_module(name)
        except Exception:  # a broken install (not only ImportError) is just as unusable
            out.append(None)
            continue
        out.append(str(getattr(mod, "__version__", None) or "unknown version"))
    return out


def sees_debian_packages(items):
    """Whether Debian's python3-* packages are importable from this interpreter."""
    seen = DEBIAN_DIST_PACKAGES in sys.path
    return [seen for _ in items]
