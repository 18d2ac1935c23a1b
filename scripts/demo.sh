#!/bin/sh
# The main job: build Slither and run the examples with real Python workers
# (slither example --all; any arguments are passed on, e.g. --scale small).
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
"$ROOT/scripts/setup.sh"
exec "$ROOT/build/slither" example --all "$@"
