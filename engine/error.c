/* error.c: names and messages for the codes of error.h. */
#include "error.h"

const char *sl_err_name(int code) {
  switch (code) {
    case SL_OK: return "ok";
#define XX(c, name, msg) case SL_##c: return name;
    SL_ERRNO_MAP(XX)
#undef XX
    default: return "unknown";
  }
}

const char *sl_strerror(int code) {
  switch (code) {
    case SL_OK: return "success";
#define XX(c, name, msg) case SL_##c: return msg;
    SL_ERRNO_MAP(XX)
#undef XX
    default: return "unknown error";
  }
}
