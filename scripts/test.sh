#!/bin/sh
# The whole test suite: C unit tests, busted specs with real workers, end-to-end
# tests of the binary, then the sanitizer builds and the fuzzers.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
"$ROOT/scripts/setup.sh"
cd "$ROOT/build"
ctest --output-on-failure -j 2 "$@"
# The same C tests and specs under ASan+UBSan and TSan, and the fuzzers
# (scripts/sanitize.sh). SLITHER_SANITIZE=0 leaves them out of a local run; CI
# always runs them.
# Arguments (ctest's, such as -R spec) make a focused run of the plain build only.
if [ $# -gt 0 ] || { [ "${SLITHER_SANITIZE:-1}" = 0 ] && [ -z "${CI:-}" ]; }; then
  echo "slither: sanitizer and fuzzing runs left out (scripts/sanitize.sh runs them)"
  exit 0
fi
exec "$ROOT/scripts/sanitize.sh"
