#!/bin/sh
# An "interpreter" that fails at start-up the way a broken environment does.
echo "boom: cannot import the worker package" >&2
exit 1
