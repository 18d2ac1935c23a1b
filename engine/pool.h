/* pool.h: a pool of Python worker processes, called with batches over frame pipes.
 *
 * Each worker is `python -m slither_worker` in its own process group, with one
 * socket pair at fd 3 for frames and its stdout/stderr piped into the engine log.
 * The pool starts workers, waits for their hello, routes calls (session affinity
 * first, then the least loaded worker), times calls out by killing the worker that
 * runs them (so a timed-out call never overlaps the next), replaces crashed
 * workers, recycles old ones (calls, RSS, age) by starting the replacement first
 * and keeping the old one ready until the replacement has said hello, and stops
 * cleanly. Every function runs on the loop thread. */
#ifndef SL_POOL_H
#define SL_POOL_H

#include "engine.h"
#include "frame.h"

#include <stddef.h>
#include <stdint.h>

enum { SL_AFFINITY_HINT = 0, SL_AFFINITY_STRICT = 1 };

typedef struct sl_pool_event sl_pool_event;
typedef void (*sl_pool_event_cb)(sl_pool *p, const sl_pool_event *ev, void *ud);

typedef struct sl_pool_opts {
  const char *name;
  int size;                /* workers */
  const char *python;      /* interpreter; NULL = engine default */
  const char *const *path; /* extra module directories, NULL-terminated or NULL */
  const char *const *env;  /* extra "KEY=VALUE" entries, NULL-terminated or NULL */
  int startup_timeout_ms;
  int threads;             /* concurrent calls per worker */
  int call_timeout_ms;     /* 0 = none */
  int max_calls;           /* recycle after this many calls (0 = never) */
  double max_calls_jitter; /* fraction: a worker's limit is drawn in [max*(1-j), max] */
  int max_rss_mb;          /* recycle above this resident size (0 = never) */
  double ttl_s;            /* recycle after this age (0 = never) */
  int affinity;            /* SL_AFFINITY_* */
  size_t max_frame_bytes;
  int max_start_failures;  /* consecutive start-up failures before the pool fails */
  int codec;               /* -1 auto (pickle when offered), or SL_CODEC_* */
  /* Events from the start on: the first workers' worker.start comes before
   * sl_pool_start returns, too early for sl_pool_on_event. */
  sl_pool_event_cb on_event;
  void *event_ud;
} sl_pool_opts;

/* The most workers a pool may have, and threads a worker may run. */
#define SL_POOL_MAX_SIZE 4096

void sl_pool_opts_default(sl_pool_opts *o);

typedef struct sl_call sl_call;

#define SL_CALL_STICKY 0x100
typedef struct sl_worker sl_worker;

/* Called once per call, on the loop thread. status is 0 or an SL_E* code. The
 * res_* fields and error details are valid only during the callback. */
typedef void (*sl_call_cb)(sl_call *call, int status, void *ud);

struct sl_call {
  /* set by the caller (sl_pool_call copies or takes what it needs) */
  uint32_t id;
  int timeout_ms;   /* 0 = pool default */
  size_t nitems;
  /* the result, valid in the callback */
  const char *res_meta;
  size_t res_meta_len;
  const char *res_data;
  size_t res_data_len;
  const char *res_att;
  size_t res_att_len;
  int res_flags;       /* SL_FRAME_FLAG_PICKLE: res_data is a pickle */
  char message[512];   /* error message for non-Python errors */
  char worker[64];     /* name of the worker that ran (or was to run) it */
  int worker_pid;
  int64_t exit_status; /* for worker_crashed: exit code or -1 */
  int term_signal;     /* for worker_crashed: signal or 0 */
  double queued_ms, run_ms;
  /* private */
  sl_pool *pool;
  sl_call_cb cb;
  void *ud;
  char *session;
  char *module, *function;
  sl_buf meta, data, att; /* moved into the write request when sent */
  sl_worker *w;
  struct sl_call *next, *prev; /* in a queue or in a worker's in-flight list */
  struct sl_call_timer *timer;
  double t_submit, t_sent;
  size_t bytes_out;
  int data_flags;
  char avoid[64];
  int strict_worker; /* worker id a strict session waits for, or -1 */
  int sticky;        /* SL_CALL_STICKY */
};

typedef struct sl_pool_stats {
  int workers, ready, busy, capacity;
  uint64_t calls, errors, restarts, recycles, timeouts;
  int queued;
  int failed, stopped;
} sl_pool_stats;

struct sl_pool_event {
  const char *name;   /* "worker.start", "worker.ready", "worker.exit", "worker.restart",
                         "worker.recycle", "call.start", "call.stop", "call.exception" */
  const char *worker;
  int pid;
  int64_t exit_status;
  int term_signal;
  const char *reason;
  double duration_ms;
  const sl_call *call;
  int status;
  const char *hello;  /* worker.ready: the hello meta JSON */
  size_t hello_len;
};

/* Start finished: status 0 when every worker said hello; otherwise the pool has
 * already stopped its workers and msg names the worker and its stderr tail. */
typedef void (*sl_pool_start_cb)(sl_pool *p, int status, const char *msg, void *ud);
typedef void (*sl_pool_stop_cb)(sl_pool *p, void *ud);

/* Create a pool and start its workers. Returns NULL with *err on bad options. */
sl_pool *sl_pool_start(sl_engine *e, const sl_pool_opts *o, sl_pool_start_cb cb, void *ud,
                       int *err, char *msg, size_t msglen);
void sl_pool_on_event(sl_pool *p, sl_pool_event_cb cb, void *ud);
/* A running Python function called a view: the engine answers with
 * sl_pool_view_reply (now or later). session is the calling call's session. */
typedef void (*sl_pool_view_cb)(sl_pool *p, int worker_id, const char *worker,
                                uint32_t req_id, const char *view, const char *session,
                                const char *data, size_t len, int flags, void *ud);
void sl_pool_on_view(sl_pool *p, sl_pool_view_cb cb, void *ud);
/* Read a successful result before the call's end is reported (call.stop or
 * call.exception, then the call's callback): returns 0 when the caller can use
 * it, or the SL_E* code it becomes (with call->message set), so that telemetry
 * reports what the caller gets. ud is the call's. */
typedef int (*sl_call_check)(sl_call *call, void *ud);
void sl_pool_on_result(sl_pool *p, sl_call_check check);
/* Answer a view request: err NULL and data (taken over) with data_flags, or err set.
 * Returns SL_ENOTFOUND when the worker is gone (the answer is dropped). */
int sl_pool_view_reply(sl_pool *p, int worker_id, uint32_t req_id, const char *err,
                       sl_buf *data, int data_flags);

/* Forget the start, stop and event callbacks (their owner is going away). */
void sl_pool_detach(sl_pool *p);
const char *sl_pool_name(const sl_pool *p);
sl_pool *sl_pool_next(const sl_pool *p);

/* Submit a call. The payload is meta (never includes m/f/s: the pool adds them),
 * JSON data and attachments, which the pool takes over (the buffers are emptied).
 * data_flags: SL_FRAME_FLAG_PICKLE when data is a pickle; SL_CALL_STICKY: the session
 * waits for its worker as under strict affinity, but moves to another worker
 * instead of failing when its worker is gone (dispatch's key groups).
 * The callback always runs, possibly before this returns (pool stopped or failed).
 * Returns the call's id (for sl_pool_cancel), or 0 when it finished at once.
 * avoid: a worker name the call should not run on while another worker lives. */
uint32_t sl_pool_call(sl_pool *p, const char *module, const char *function,
                      const char *session, sl_buf *data, sl_buf *att, int data_flags,
                      size_t nitems, int timeout_ms, const char *avoid, sl_call_cb cb,
                      void *ud);
/* The data format calls to this pool use: SL_CODEC_PICKLE when its workers offer
 * it (and the pool's codec option allows), else SL_CODEC_JSON. Known once the
 * pool has started. */
int sl_pool_codec(const sl_pool *p);
/* Cancel a call by id: a queued call fails at once; a running one fails and its
 * worker is killed and replaced, as on a timeout, so no worker stays busy with
 * work nobody waits for. Both end with SL_ECANCELED. Returns 0, or SL_ENOTFOUND
 * when the call already finished. */
int sl_pool_cancel(sl_pool *p, uint32_t call_id);

/* Drop a session: its mapping in the pool and its state in every worker. */
void sl_pool_release_session(sl_pool *p, const char *session);
void sl_pool_stats_get(const sl_pool *p, sl_pool_stats *s);
typedef struct sl_worker_info {
  const char *name;
  int pid;
  int busy;        /* calls in flight on it */
  int calls;       /* calls it finished */
  const char *state; /* "starting", "ready", "draining", "closing" */
} sl_worker_info;

/* Per-worker load: fills up to max entries, returns how many. */
int sl_pool_workers(const sl_pool *p, sl_worker_info *out, int max);

/* Worker pids, for diagnostics and tests; returns how many were written. */
int sl_pool_pids(const sl_pool *p, int *pids, int max);

/* Stop: refuse new calls, let in-flight calls finish for up to grace_ms, then
 * SIGTERM, then SIGKILL one second later. cb runs when every worker is gone. */
void sl_pool_stop(sl_pool *p, int grace_ms, sl_pool_stop_cb cb, void *ud);
/* Stop at once: SIGKILL every worker, fail every call. */
void sl_pool_kill(sl_pool *p);
int sl_pool_is_stopped(const sl_pool *p);
/* Free a stopped pool (the engine frees the rest when it closes). */
void sl_pool_free(sl_pool *p);
/* The owner lets go of p: no callback of it runs again, its workers are killed
 * if it still runs, and it is freed once stopped (at once when it is). p must not
 * be used after. A program that starts and stops pools all its life keeps no
 * memory for the pools it stopped. */
void sl_pool_release(sl_pool *p);
/* Tell the engine's (new) reaper every live worker group of p. */
void sl_pool_reaper_readd(sl_pool *p);

#endif
