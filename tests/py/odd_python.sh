#!/bin/sh
# An "interpreter" that starts the way a broken or hostile worker does, chosen by
# SLITHER_TEST_ODD (set through the pool's env):
#   bad_frame        writes bytes that are no frame on the frame pipe, then waits
#   hello_then_exit  the first worker says a real hello and exits with code 3; the
#                    others wait (so the pool is still starting when it dies)
#   long_stderr      writes one 20,000-byte stderr line, then runs the real worker
case "$SLITHER_TEST_ODD" in
  bad_frame)
    printf 'this is not a frame, it is text on the frame pipe' >&3
    exec sleep 30 ;;
  hello_then_exit)
    if mkdir "$SLITHER_TEST_LOCK" 2>/dev/null; then
      exec python3 -c 'import os; from slither_worker import runtime as r
w = r.Worker(3, 1); w.hello(); os._exit(3)'
    fi
    exec sleep 30 ;;
  long_stderr)
    python3 -c 'import sys; sys.stderr.write("<" + "x" * 19998 + ">\n")'
    exec python3 "$@" ;;
esac
echo "odd_python.sh: unknown SLITHER_TEST_ODD '$SLITHER_TEST_ODD'" >&2
exit 2
