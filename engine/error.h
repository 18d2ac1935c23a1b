/* error.h: the one table of engine error codes, shared by C, Lua and Python.
 *
 * Codes are negative integers, as in libuv. Each has a stable name, which is also
 * the `kind` of the error tables that Lua code receives, and a message. */
#ifndef SL_ERROR_H
#define SL_ERROR_H

#define SL_ERRNO_MAP(XX)                                                        \
  XX(ENOMEM, "out_of_memory", "out of memory")                                  \
  XX(EINVAL, "invalid", "invalid argument")                                     \
  XX(EPYTHON, "python", "the Python function raised an exception")              \
  XX(EIMPORT, "import", "Python module or function not found")                  \
  XX(EMISMATCH, "result_mismatch", "result is not a list of the same length")   \
  XX(ECRASHED, "worker_crashed", "the worker died during the call")             \
  XX(ETIMEDOUT, "timeout", "the call timed out")                                \
  XX(ESESSIONLOST, "session_lost", "the worker holding the session is gone")    \
  XX(ESTOPPED, "pool_stopped", "the pool is stopped")                           \
  XX(EFAILED, "pool_failed", "the pool failed: workers crash at start-up")      \
  XX(ESTART, "start_failed", "a worker could not be started")                   \
  XX(EPROTO, "protocol", "bad frame on the worker pipe")                        \
  XX(ECODEC, "codec", "value cannot be encoded or decoded")                     \
  XX(ETOOBIG, "too_big", "frame larger than the configured maximum")           \
  XX(ENOTFOUND, "not_found", "no such object")                                  \
  XX(ECANCELED, "canceled", "the operation was cancelled")                      \
  XX(ENOSPACE, "no_space", "no space left for the store's shared memory")

typedef enum {
  SL_OK = 0,
#define XX(code, name, msg) SL_##code,
  SL__ERRNO_FIRST = -1000,
  SL_ERRNO_MAP(XX)
#undef XX
  SL__ERRNO_LAST
} sl_errno;

/* Name of a code ("worker_crashed"), or "unknown". */
const char *sl_err_name(int code);
/* Human message of a code. */
const char *sl_strerror(int code);

#endif
