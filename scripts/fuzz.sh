#!/bin/sh
# Run every fuzz harness of tests/fuzz for SLITHER_FUZZ_SECONDS each (60 in CI,
# 10 otherwise), two at a time: the libFuzzer harnesses of the engine's decoders
# (built into build-asan by scripts/sanitize.sh, under ASan+UBSan) and the Python
# decoder loop. Each starts from its corpus in tests/fuzz/corpus/<harness>; new
# inputs go to a scratch directory, so a run leaves the tree as it was, except:
# an input that crashes a harness is copied into its corpus and named, and the run
# fails. Fix the defect, then commit the case: every build replays each corpus
# (the c_fuzz_corpus_* tests), so it stays fixed.
#   scripts/fuzz.sh [harness...]     harnesses: frame wire codec_json codec_pickle py
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN="$ROOT/build-asan/tests"
if [ -n "${SLITHER_FUZZ_SECONDS:-}" ]; then
  SECS=$SLITHER_FUZZ_SECONDS
elif [ -n "${CI:-}" ]; then
  SECS=60
else
  SECS=10
fi
HARNESSES=${*:-"frame wire codec_json codec_pickle py"}
SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT

run_one() {
  h=$1
  log="$SCRATCH/$h.log"
  mkdir -p "$SCRATCH/$h" "$SCRATCH/$h.crash"
  if [ "$h" = py ]; then
    if python3 "$ROOT/tests/fuzz/fuzz_py_decoders.py" --seconds "$SECS" \
        --corpus "$ROOT/tests/fuzz/corpus/py" >"$log" 2>&1; then
      echo "fuzz py: $(tail -n 1 "$log")"
      return 0
    fi
    echo "fuzz py: FAILED" >&2
    cat "$log" >&2
    return 1
  fi
  if [ ! -x "$BIN/fuzz_$h" ]; then
    echo "fuzz $h: $BIN/fuzz_$h is missing (scripts/sanitize.sh builds it)" >&2
    return 1
  fi
  if ASAN_OPTIONS="detect_leaks=1" "$BIN/fuzz_$h" -max_total_time="$SECS" -max_len=4096 \
      -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      -artifact_prefix="$SCRATCH/$h.crash/" \
      "$SCRATCH/$h" "$ROOT/tests/fuzz/corpus/$h" >"$log" 2>&1; then
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
    echo "fuzz $h: $execs runs in ${SECS} s ($rate/s), clean"
    return 0
  fi
  for c in "$SCRATCH/$h.crash"/*; do
    [ -e "$c" ] || continue
    cp "$c" "$ROOT/tests/fuzz/corpus/$h/"
    echo "fuzz $h: a crash became the corpus case tests/fuzz/corpus/$h/$(basename "$c")" >&2
  done
  echo "fuzz $h: FAILED; its log:" >&2
  grep -v '^#' "$log" | tail -n 60 >&2
  return 1
}

# two at a time: CI has two cores
status=0
set -- $HARNESSES
while [ $# -gt 0 ]; do
  a=$1; shift
  if [ $# -gt 0 ]; then
    b=$1; shift
    run_one "$a" & pa=$!
    run_one "$b" || status=1
    wait "$pa" || status=1
  else
    run_one "$a" || status=1
  fi
done
exit $status
