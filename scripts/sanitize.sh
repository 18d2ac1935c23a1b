#!/bin/sh
# The suite's sanitizer half, run by scripts/test.sh after the plain build passes:
#   build-asan/  clang with ASan+UBSan: the C tests and the busted specs, then
#                every libFuzzer harness of tests/fuzz (scripts/fuzz.sh)
#   build-tsan/  clang with TSan: the store tests and the host-thread API
# Each build directory is its own, so the plain build/ is never instrumented.
# SLITHER_FUZZ_SECONDS sets how long each fuzzer runs (60 in CI, 10 otherwise).
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
JOBS=$(nproc)

if ! command -v clang >/dev/null 2>&1; then
  echo "slither: the sanitizer builds need clang (scripts/setup.sh installs it as root)" >&2
  exit 1
fi

step() { echo "== sanitize: $*"; }

step "ASan+UBSan build (build-asan)"
CC=clang cmake -S "$ROOT" -B "$ROOT/build-asan" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DSLITHER_SANITIZE=ON -DSLITHER_FUZZ=ON >/dev/null
cmake --build "$ROOT/build-asan" -j "$JOBS" >/dev/null
step "C tests and busted specs under ASan+UBSan"
(cd "$ROOT/build-asan" && ctest --output-on-failure -j "$JOBS" -R '^(c_|lua_)')

step "TSan build (build-tsan)"
CC=clang cmake -S "$ROOT" -B "$ROOT/build-tsan" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DSLITHER_TSAN=ON >/dev/null
cmake --build "$ROOT/build-tsan" -j "$JOBS" \
  --target test_store test_store_race test_host_fail host_example >/dev/null
step "store and host-thread tests under TSan"
(cd "$ROOT/build-tsan" && TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" \
  ctest --output-on-failure -j "$JOBS" -R '^c_(store|store_race|host_fail|host_example)$')

step "fuzzing"
exec "$ROOT/scripts/fuzz.sh"
