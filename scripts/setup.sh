#!/bin/sh
# Shared set-up for scripts/demo.sh and scripts/test.sh: make sure the Debian
# packages are there (installing them when run as root), then build into build/.
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# valgrind runs the embedding example; python3-sklearn and python3-pil are for the
# ml_scoring and image_pipeline examples (installed for /usr/bin/python3, where the
# examples look for them).
# clang and libclang-rt-14-dev build the sanitizer and libFuzzer runs of
# scripts/sanitize.sh; setpriv (util-linux) acts as another user in the store tests.
PACKAGES="gcc make cmake pkg-config libluajit-5.1-dev luajit libuv1-dev libedit-dev lua-cjson \
lua-busted python3 python3-sklearn python3-pil valgrind clang libclang-rt-14-dev util-linux"

missing=""
for p in $PACKAGES; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
    missing="$missing $p"
  fi
done
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "slither: installing Debian packages:$missing"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  else
    echo "slither: missing Debian packages. Install them with:" >&2
    echo "  sudo apt-get install -y$missing" >&2
    exit 1
  fi
fi

cmake -S "$ROOT" -B "$ROOT/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$ROOT/build" -j "$(nproc)" >/dev/null
