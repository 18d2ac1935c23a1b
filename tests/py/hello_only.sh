#!/bin/sh
# The smallest worker: it says hello on the frame pipe (fd 3) and exits when the
# engine closes the pipe. It serves no calls; tests of the pool's life (start,
# stop, memory) run it thousands of times where Python's start-up would take
# minutes. The frame: len 67, kind HELLO (1), flags 0, reserved 0, id 0,
# meta_len 51, the meta below, data_len 0 (all little-endian).
printf 'C\000\000\000\001\000\000\000\000\000\000\0003\000\000\000%s\000\000\000\000' \
  '{"name":"hello_only","threads":1,"codecs":["json"]}' >&3
exec cat <&3 >/dev/null
