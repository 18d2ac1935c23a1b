#!/bin/sh
# The main job: build Slither and run the demo pipeline with real Python workers.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
"$ROOT/scripts/setup.sh"
exec "$ROOT/build/slither" "$ROOT/scripts/demo.lua" "$@"
