"""Decorators for tests that need something of the machine. CI runs as root with
CI set: there a missing piece fails the test with the reason; elsewhere the test
is skipped, saying why."""
import os
import shutil
import unittest


def need_root(doing, tool):
    """A test that needs root to do `doing` (a phrase) with the program `tool`."""
    def wrap(test):
        why = None
        if os.geteuid() != 0:
            why = f"{doing} needs root"
        elif not shutil.which(tool):
            why = f"{tool} (util-linux) is not installed"
        if why is None:
            return test
        if os.environ.get("CI"):
            def fail(self):
                self.fail(why)
            return fail
        return unittest.skip(why)(test)
    return wrap
