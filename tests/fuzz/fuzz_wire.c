/* fuzz_wire.c: the engine's reader of worker JSON (hello, error and view metas).
 * Every reader must answer or refuse without reading past the bytes given. */
#include "error.h"
#include "wire.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const char *keys[] = { "kind", "message", "python", "executable", "gil",
                                "features", "pid", "" };
  /* an exact-size copy, so that a read past the end is caught */
  char *s = malloc(size ? size : 1), out[64];
  size_t i;
  if (!s) return 0;
  memcpy(s, data, size);
  for (i = 0; i < sizeof keys / sizeof *keys; i++) {
    const char *v;
    size_t vl;
    if (sl_wire_member(s, size, keys[i], &v, &vl) == 1) {
      sl_wire_string(v, vl, out, sizeof out);
      sl_wire_string(v, vl, out, 1);
      sl_wire_array_has(v, vl, "threads");
    }
  }
  sl_wire_error_kind(s, size);
  free(s);
  return 0;
}
