#!/bin/sh
# Runs python3 normally, but fails at start-up while the flag file exists.
if [ -n "$SLITHER_FLAKY_FLAG" ] && [ -e "$SLITHER_FLAKY_FLAG" ]; then
  echo "flaky: refusing to start" >&2
  exit 3
fi
exec "${SLITHER_REAL_PYTHON:-python3}" "$@"
