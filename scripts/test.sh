#!/bin/sh
# The whole test suite: C unit tests, busted specs with real workers, end-to-end
# tests of the binary. Ends with ctest's summary line.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
"$ROOT/scripts/setup.sh"
cd "$ROOT/build"
exec ctest --output-on-failure -j 2 "$@"
