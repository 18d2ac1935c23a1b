/* pool.c: Python worker processes, their frames, routing, timeouts, restarts and
 * recycling (see pool.h). */
#define _GNU_SOURCE
#include "pool.h"
#include "store.h"
#include "codec.h"
#include "error.h"
#include "smap.h"
#include "wire.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern char **environ;

enum { W_STARTING, W_READY, W_DRAINING, W_CLOSING };
enum { P_STARTING, P_RUNNING, P_FAILED, P_STOPPING, P_STOPPED };

#define TAIL_MAX 2048
#define LINE_MAX_BYTES 8192
#define RETIRE_KILL_MS 5000
#define TICK_MS 250

typedef struct sl_call_timer {
  uv_timer_t t;
  sl_call *call;
} sl_call_timer;

typedef struct write_req {
  uv_write_t req;
  char prefix[SL_FRAME_PREFIX];
  char dlen[4];
  sl_buf meta, data, att;
} write_req;

struct sl_worker {
  sl_pool *pool;
  int id;
  char name[64];
  char token[64]; /* SLITHER_WORKER_TOKEN=...: its descendants inherit it */
  int state;
  uv_process_t proc;
  uv_pipe_t chan, out, err;
  uv_timer_t timer; /* start-up deadline, then the retire deadline */
  int open_handles;
  int pid;
  int spawned, exited, gone;
  int64_t exit_status;
  int term_signal;
  sl_frame_decoder dec;
  sl_call *inflight;
  int busy;
  int calls_done, max_calls;
  int calls_sent;     /* max_calls counts these: the limit holds at the moment of sending */
  int awaiting;       /* recycling: its replacement is starting; it leaves on a hello */
  char recycle_reason[32];
  uint64_t last_done; /* pool-wide sequence number of its last finished call */
  double started_ms;
  char tail[TAIL_MAX];
  size_t tail_len;
  sl_buf outline, errline;
  int outline_cont, errline_cont; /* the buffered line continues a logged piece */
  char reason[256];
  int fail_status;
  int retiring;
  int shutdown_sent;
  int hello_seen;
  sl_worker *next;
};

struct sl_pool {
  sl_engine *e;
  sl_pool *next;
  sl_pool_opts o;
  char *name, *python;
  char **envp;
  char *args[4];
  int state;
  sl_worker *workers;
  int next_worker_id;
  sl_call *qhead, *qtail;
  int queued;
  sl_smap sessions;
  uint32_t next_call_id;
  uint64_t done_seq;
  uint64_t calls, errors, restarts, recycles, timeouts;
  int start_failures;
  int rr;
  int pending_respawns;
  double respawn_at;
  sl_pool_start_cb start_cb;
  void *start_ud;
  char start_msg[3072];
  int start_status;
  sl_pool_stop_cb stop_cb;
  void *stop_ud;
  sl_pool_event_cb ev_cb;
  void *ev_ud;
  sl_pool_view_cb view_cb;
  void *view_ud;
  sl_call_check check;
  uv_timer_t tick, stop_timer;
  int open_handles;
  int stop_phase;
  int timers_closed;
  int released; /* no owner: freed when its last handle closes */
  int codec; /* decided by the first hello */
};

/* Start a timer that counts from now. libuv counts from the loop's cached time,
 * taken when the loop last woke; the pool arms its timers from code that Lua
 * called, and Lua may have held the thread for seconds since (a long computation,
 * an io.popen), which would put the deadline in the past. One clock read. */
static void timer_start(uv_timer_t *t, uv_timer_cb cb, uint64_t ms, uint64_t repeat) {
  uv_update_time(t->loop);
  uv_timer_start(t, cb, ms, repeat);
}

static void worker_spawn(sl_pool *p);
static sl_worker *worker_by_id(sl_pool *p, int64_t id);

/* A worker that has been sent max_calls calls takes no more, though it stays
 * ready (and counted ready) until its replacement has said hello. */
static int spent(const sl_worker *w) { return w->max_calls > 0 && w->calls_sent >= w->max_calls; }
static int takes_calls(const sl_worker *w) { return w->state == W_READY && !spent(w); }
/* A strict session on this worker is lost: it is gone, leaving, or will take no
 * more calls. */
static int lost_for_sessions(const sl_worker *w) {
  return !w || w->state == W_CLOSING || w->state == W_DRAINING || spent(w);
}
static int send_frame(sl_worker *w, int kind, int flags, uint32_t id, sl_buf *meta,
                      sl_buf *data, sl_buf *att);
static void worker_kill(sl_worker *w, int status, const char *reason);
static void worker_retire(sl_worker *w);
static void worker_gone(sl_worker *w);
static void pump(sl_pool *p);
static void check_stopped(sl_pool *p);
static void finish_call(sl_call *c, int status);

/* ---- options ------------------------------------------------------------------ */

void sl_pool_opts_default(sl_pool_opts *o) {
  memset(o, 0, sizeof *o);
  o->name = "default";
  o->size = 2;
  o->startup_timeout_ms = 10000;
  o->threads = 1;
  o->max_calls_jitter = 0.1;
  o->affinity = SL_AFFINITY_HINT;
  o->max_frame_bytes = (size_t)1 << 30;
  o->max_start_failures = 3;
  o->codec = -1;
}

static void emit(sl_pool *p, const char *name, sl_worker *w, const char *reason,
                 const sl_call *c, int status, double dur) {
  sl_pool_event ev;
  if (!p->ev_cb) return;
  memset(&ev, 0, sizeof ev);
  ev.name = name;
  ev.worker = w ? w->name : (c ? c->worker : NULL);
  ev.pid = w ? w->pid : (c ? c->worker_pid : 0);
  ev.exit_status = w ? w->exit_status : 0;
  ev.term_signal = w ? w->term_signal : 0;
  ev.reason = reason;
  ev.call = c;
  ev.status = status;
  ev.duration_ms = dur;
  p->ev_cb(p, &ev, p->ev_ud);
}

static char **build_env(sl_pool *p) {
  size_t n = 0, extra = 0, i, k = 0;
  char **envp;
  sl_buf pp;
  const char *old = getenv("PYTHONPATH");
  char tmp[64];
  while (environ[n]) n++;
  if (p->o.env)
    while (p->o.env[extra]) extra++;
  envp = calloc(n + extra + 9, sizeof *envp); /* ours: 8 entries, and the NULL */
  if (!envp) return NULL;
  sl_buf_init(&pp);
  sl_buf_append(&pp, "PYTHONPATH=", 11);
  sl_buf_append(&pp, p->e->worker_path, strlen(p->e->worker_path));
  if (p->o.path)
    for (i = 0; p->o.path[i]; i++) {
      sl_buf_putc(&pp, ':');
      sl_buf_append(&pp, p->o.path[i], strlen(p->o.path[i]));
    }
  if (old && *old) {
    sl_buf_putc(&pp, ':');
    sl_buf_append(&pp, old, strlen(old));
  }
  sl_buf_putc(&pp, '\0');
  envp[k++] = sl_buf_steal(&pp, NULL);
  envp[k++] = strdup("PYTHONUNBUFFERED=1");
  snprintf(tmp, sizeof tmp, "SLITHER_PARENT_PID=%d", (int)getpid());
  envp[k++] = strdup(tmp);
  /* where this process's stores are: their file names hold the token */
  if (sl_store_token()) {
    snprintf(tmp, sizeof tmp, "SLITHER_STORE_TOKEN=%s", sl_store_token());
    envp[k++] = strdup(tmp);
  }
  {
    sl_buf d;
    sl_buf_init(&d);
    sl_buf_append(&d, "SLITHER_SHM_DIR=", 16);
    sl_buf_append(&d, sl_store_shm_dir(), strlen(sl_store_shm_dir()) + 1);
    envp[k++] = sl_buf_steal(&d, NULL);
  }
  snprintf(tmp, sizeof tmp, "SLITHER_THREADS=%d", p->o.threads);
  envp[k++] = strdup(tmp);
  snprintf(tmp, sizeof tmp, "SLITHER_MAX_FRAME=%lu", (unsigned long)p->o.max_frame_bytes);
  envp[k++] = strdup(tmp);
  snprintf(tmp, sizeof tmp, "SLITHER_SPIN_US=%d", p->e->spin_us);
  envp[k++] = strdup(tmp);
  /* The user's entries win over ours and over the inherited environment. */
  for (i = 0; i < extra; i++) envp[k++] = strdup(p->o.env[i]);
  for (i = 0; i < n; i++) {
    size_t j, klen = strcspn(environ[i], "=");
    int shadowed = 0;
    for (j = 0; j < k; j++)
      if (strncmp(envp[j], environ[i], klen + 1) == 0) shadowed = 1;
    if (!shadowed) envp[k++] = strdup(environ[i]);
  }
  envp[k] = NULL;
  return envp;
}

static void free_env(char **envp) {
  size_t i;
  if (!envp) return;
  for (i = 0; envp[i]; i++) free(envp[i]);
  free(envp);
}

static void tick_cb(uv_timer_t *t);

sl_pool *sl_pool_start(sl_engine *e, const sl_pool_opts *o, sl_pool_start_cb cb, void *ud,
                       int *err, char *msg, size_t msglen) {
  sl_pool *p;
  int i;
  {
    /* the first option out of its range, by name (the Lua layer says the same) */
    const char *bad = o->size < 1 || o->size > SL_POOL_MAX_SIZE ? "size must be from 1 to 4096"
                      : o->threads < 1 || o->threads > SL_POOL_MAX_SIZE
                          ? "threads must be from 1 to 4096"
                      : o->startup_timeout_ms < 1             ? "startup_timeout_ms must be >= 1"
                      : o->call_timeout_ms < 0                ? "call_timeout_ms must be >= 0"
                      : o->max_calls < 0                      ? "max_calls must be >= 0"
                      : o->max_rss_mb < 0                     ? "max_rss_mb must be >= 0"
                      : !(o->ttl_s >= 0 && o->ttl_s <= 1e9)   ? "ttl_s must be from 0 to 1e9"
                      : o->max_frame_bytes < 1024             ? "max_frame_bytes must be >= 1024"
                      : !(o->max_calls_jitter >= 0 && o->max_calls_jitter < 1)
                          ? "max_calls_jitter must be in [0, 1)"
                      : o->max_start_failures < 1             ? "max_start_failures must be >= 1"
                      : o->codec < -1 || o->codec > SL_CODEC_PICKLE ? "codec is not a codec"
                                                                    : NULL;
    if (bad) {
      *err = SL_EINVAL;
      snprintf(msg, msglen, "invalid pool option: %s", bad);
      return NULL;
    }
  }
  p = calloc(1, sizeof *p);
  if (!p) {
    *err = SL_ENOMEM;
    snprintf(msg, msglen, "out of memory");
    return NULL;
  }
  p->e = e;
  p->o = *o;
  p->name = strdup(o->name ? o->name : "default");
  p->python = strdup(o->python ? o->python : e->python);
  p->o.name = p->name;
  p->o.python = p->python;
  p->envp = build_env(p);
  p->o.path = NULL; /* only used by build_env */
  p->o.env = NULL;
  p->args[0] = p->python;
  p->args[1] = "-m";
  p->args[2] = "slither_worker";
  p->args[3] = NULL;
  p->state = P_STARTING;
  p->codec = SL_CODEC_JSON;
  p->start_cb = cb;
  p->start_ud = ud;
  p->ev_cb = o->on_event;
  p->ev_ud = o->event_ud;
  sl_smap_init(&p->sessions);
  p->next_call_id = 1;
  uv_timer_init(e->loop, &p->tick);
  uv_timer_init(e->loop, &p->stop_timer);
  p->tick.data = p->stop_timer.data = p;
  p->open_handles = 2;
  timer_start(&p->tick, tick_cb, TICK_MS, TICK_MS);
  uv_unref((uv_handle_t *)&p->tick);
  p->next = e->pools;
  e->pools = p;
  for (i = 0; i < o->size && !p->start_status; i++) worker_spawn(p);
  *err = 0;
  return p;
}

void sl_pool_on_event(sl_pool *p, sl_pool_event_cb cb, void *ud) {
  p->ev_cb = cb;
  p->ev_ud = ud;
}

void sl_pool_on_result(sl_pool *p, sl_call_check check) { p->check = check; }

void sl_pool_on_view(sl_pool *p, sl_pool_view_cb cb, void *ud) {
  p->view_cb = cb;
  p->view_ud = ud;
}

int sl_pool_view_reply(sl_pool *p, int worker_id, uint32_t req_id, const char *err,
                       sl_buf *data, int data_flags) {
  sl_worker *w = worker_by_id(p, worker_id);
  sl_buf meta;
  int rc;
  if (!w || w->state == W_CLOSING || w->exited) {
    if (data) sl_buf_free(data);
    return SL_ENOTFOUND;
  }
  sl_buf_init(&meta);
  if (err) {
    sl_buf_append(&meta, "{\"error\":", 9);
    if (sl_json_string(&meta, (const unsigned char *)err, strlen(err)) == 1)
      sl_json_string(&meta, (const unsigned char *)"(message is not UTF-8)", 22);
    sl_buf_putc(&meta, '}');
  }
  rc = send_frame(w, SL_FRAME_VIEW_REPLY, err ? 0 : data_flags, req_id, &meta,
                  err ? NULL : data, NULL);
  sl_buf_free(&meta);
  if (data) sl_buf_free(data);
  return rc;
}

void sl_pool_detach(sl_pool *p) {
  p->view_cb = NULL;
  p->view_ud = NULL;
  p->ev_cb = NULL;
  p->ev_ud = NULL;
  p->start_cb = NULL;
  p->stop_cb = NULL;
}

const char *sl_pool_name(const sl_pool *p) { return p->name; }
int sl_pool_codec(const sl_pool *p) { return p->codec; }
sl_pool *sl_pool_next(const sl_pool *p) { return p->next; }
int sl_pool_is_stopped(const sl_pool *p) { return p->state == P_STOPPED && p->open_handles == 0; }

/* ---- worker output: stdout and stderr, line by line into the log ---------------- */

static void tail_add(sl_worker *w, const char *s, size_t n) {
  if (n >= TAIL_MAX) {
    s += n - TAIL_MAX;
    n = TAIL_MAX;
  }
  if (w->tail_len + n > TAIL_MAX) {
    size_t drop = w->tail_len + n - TAIL_MAX;
    memmove(w->tail, w->tail + drop, w->tail_len - drop);
    w->tail_len -= drop;
  }
  memcpy(w->tail + w->tail_len, s, n);
  w->tail_len += n;
}

/* cont: the line goes on from the piece logged before it (a line longer than
 * LINE_MAX_BYTES is logged in pieces, each marked, none dropped). */
static void emit_line(sl_worker *w, int is_err, const char *s, size_t n, int cont) {
  sl_log(w->pool->e, is_err ? SL_LOG_WARN : SL_LOG_INFO, "[%s %s%s] %.*s", w->name,
         is_err ? "stderr" : "stdout", cont ? ", continued" : "", (int)n, s);
}

static void lines_feed(sl_worker *w, int is_err, const char *s, size_t n) {
  sl_buf *lb = is_err ? &w->errline : &w->outline;
  if (is_err) tail_add(w, s, n);
  while (n) {
    const char *nl = memchr(s, '\n', n);
    size_t take = nl ? (size_t)(nl - s) : n;
    if (lb->len + take > LINE_MAX_BYTES) take = LINE_MAX_BYTES - lb->len;
    sl_buf_append(lb, s, take);
    s += take;
    n -= take;
    if ((n && *s == '\n') || lb->len >= LINE_MAX_BYTES) {
      int *cont = is_err ? &w->errline_cont : &w->outline_cont;
      emit_line(w, is_err, lb->data ? lb->data : "", lb->len, *cont);
      lb->len = 0;
      *cont = 0;
      if (n && *s == '\n') {
        s++;
        n--;
      } else {
        *cont = 1; /* cut at LINE_MAX_BYTES: the next piece continues it */
      }
    }
  }
}

static void lines_flush(sl_worker *w) {
  if (w->outline.len) emit_line(w, 0, w->outline.data, w->outline.len, w->outline_cont);
  if (w->errline.len) emit_line(w, 1, w->errline.data, w->errline.len, w->errline_cont);
  w->outline.len = w->errline.len = 0;
  w->outline_cont = w->errline_cont = 0;
}

static void alloc_small(uv_handle_t *h, size_t sz, uv_buf_t *b) {
  (void)sz;
  b->base = malloc(16384);
  b->len = b->base ? 16384 : 0;
  (void)h;
}

static void out_read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  sl_worker *w = s->data;
  int is_err = s == (uv_stream_t *)&w->err;
  if (n > 0) lines_feed(w, is_err, b->base, (size_t)n);
  free(b->base);
  if (n < 0) uv_read_stop(s);
}

/* ---- handle bookkeeping --------------------------------------------------------- */

static void worker_free(sl_worker *w) {
  sl_pool *p = w->pool;
  sl_worker **pp;
  for (pp = &p->workers; *pp; pp = &(*pp)->next)
    if (*pp == w) {
      *pp = w->next;
      break;
    }
  sl_frame_decoder_free(&w->dec);
  sl_buf_free(&w->outline);
  sl_buf_free(&w->errline);
  free(w);
  check_stopped(p);
}

static void worker_handle_closed(uv_handle_t *h) {
  sl_worker *w = h->data;
  if (--w->open_handles == 0) worker_free(w);
}

static void close_handle(sl_worker *w, uv_handle_t *h) {
  if (h->data == w && !uv_is_closing(h)) {
    uv_close(h, worker_handle_closed);
  }
}

static void worker_close_handles(sl_worker *w) {
  lines_flush(w);
  uv_timer_stop(&w->timer);
  close_handle(w, (uv_handle_t *)&w->timer);
  close_handle(w, (uv_handle_t *)&w->chan);
  close_handle(w, (uv_handle_t *)&w->out);
  close_handle(w, (uv_handle_t *)&w->err);
  close_handle(w, (uv_handle_t *)&w->proc);
}

/* ---- calls ---------------------------------------------------------------------- */

static void q_push(sl_pool *p, sl_call *c) {
  c->next = NULL;
  c->prev = p->qtail;
  if (p->qtail) p->qtail->next = c;
  else p->qhead = c;
  p->qtail = c;
  p->queued++;
}

static void q_remove(sl_pool *p, sl_call *c) {
  if (c->prev) c->prev->next = c->next;
  else p->qhead = c->next;
  if (c->next) c->next->prev = c->prev;
  else p->qtail = c->prev;
  c->next = c->prev = NULL;
  p->queued--;
}

static void inflight_remove(sl_worker *w, sl_call *c) {
  if (c->prev) c->prev->next = c->next;
  else w->inflight = c->next;
  if (c->next) c->next->prev = c->prev;
  c->next = c->prev = NULL;
  if (--w->busy == 0) w->pool->e->busy_workers--;
  w->pool->e->inflight--;
  c->w = NULL;
}

/* The timer is the first member of sl_call_timer: freeing the handle frees both. */
static void call_timer_closed(uv_handle_t *h) { free(h); }

static void call_stop_timer(sl_call *c) {
  if (c->timer) {
    uv_timer_stop(&c->timer->t);
    c->timer->call = NULL;
    c->timer->t.data = NULL;
    uv_close((uv_handle_t *)&c->timer->t, call_timer_closed);
    c->timer = NULL;
  }
}

static void call_free(sl_call *c) {
  sl_buf_free(&c->meta);
  sl_buf_free(&c->data);
  sl_buf_free(&c->att);
  free(c->session);
  free(c->module);
  free(c->function);
  free(c);
}

/* Deliver the result and free the call. */
static void finish_call(sl_call *c, int status) {
  sl_pool *p = c->pool;
  double now = sl_now_ms(p->e);
  call_stop_timer(c);
  if (c->t_sent > 0) c->run_ms = now - c->t_sent;
  c->queued_ms = (c->t_sent > 0 ? c->t_sent : now) - c->t_submit;
  if (status == 0 && p->check) status = p->check(c, c->ud);
  if (status) {
    p->errors++;
    if (!c->message[0]) snprintf(c->message, sizeof c->message, "%s", sl_strerror(status));
  }
  p->calls++;
  emit(p, status ? "call.exception" : "call.stop", NULL, NULL, c, status, c->run_ms);
  c->cb(c, status, c->ud);
  call_free(c);
}

static void fail_call(sl_call *c, int status, const char *fmt, const char *arg) {
  snprintf(c->message, sizeof c->message, fmt, arg);
  finish_call(c, status);
}

static void call_timeout_cb(uv_timer_t *t) {
  sl_call_timer *ct = (sl_call_timer *)t;
  sl_call *c = ct->call;
  sl_worker *w;
  char reason[128];
  if (!c || !c->w) return;
  w = c->w;
  inflight_remove(w, c);
  c->pool->timeouts++;
  snprintf(reason, sizeof reason, "killed: call %u ran past its timeout", (unsigned)c->id);
  snprintf(c->message, sizeof c->message,
           "call to %s.%s ran past its timeout of %d ms; worker %s was killed and is being "
           "replaced", c->module, c->function, c->timeout_ms, w->name);
  /* The worker goes first, so the timed-out call can never overlap a later one. */
  worker_kill(w, SL_ECRASHED, reason);
  finish_call(c, SL_ETIMEDOUT);
}

static void write_cb(uv_write_t *req, int status) {
  write_req *wr = (write_req *)req;
  sl_worker *w = req->handle->data;
  sl_buf_free(&wr->meta);
  sl_buf_free(&wr->data);
  sl_buf_free(&wr->att);
  free(wr);
  if (status < 0 && status != UV_ECANCELED && w && w->state != W_CLOSING) {
    char reason[128];
    snprintf(reason, sizeof reason, "write to worker failed: %s", uv_strerror(status));
    worker_kill(w, SL_ECRASHED, reason);
  }
}

static int send_frame(sl_worker *w, int kind, int flags, uint32_t id, sl_buf *meta,
                      sl_buf *data, sl_buf *att) {
  write_req *wr = calloc(1, sizeof *wr);
  uv_buf_t bufs[5];
  unsigned nbufs;
  int rc;
  if (!wr) return SL_ENOMEM;
  if (meta) { wr->meta = *meta; sl_buf_init(meta); }
  if (data) { wr->data = *data; sl_buf_init(data); }
  if (att) { wr->att = *att; sl_buf_init(att); }
  sl_frame_prefix(wr->prefix, wr->dlen, kind, id, wr->meta.len, wr->data.len, wr->att.len);
  wr->prefix[5] = (char)flags;
  /* Empty buffers are left out: libuv 1.44 treats a write that ends in one as
   * unfinished and goes back to the loop for it (two more syscalls per call). */
  nbufs = 0;
  bufs[nbufs++] = uv_buf_init(wr->prefix, SL_FRAME_PREFIX);
  if (wr->meta.len) bufs[nbufs++] = uv_buf_init(wr->meta.data, (unsigned)wr->meta.len);
  bufs[nbufs++] = uv_buf_init(wr->dlen, 4);
  if (wr->data.len) bufs[nbufs++] = uv_buf_init(wr->data.data, (unsigned)wr->data.len);
  if (wr->att.len) bufs[nbufs++] = uv_buf_init(wr->att.data, (unsigned)wr->att.len);
  rc = uv_write(&wr->req, (uv_stream_t *)&w->chan, bufs, nbufs, write_cb);
  if (rc) {
    sl_buf_free(&wr->meta);
    sl_buf_free(&wr->data);
    sl_buf_free(&wr->att);
    free(wr);
    return SL_ECRASHED;
  }
  return 0;
}

static sl_worker *worker_by_id(sl_pool *p, int64_t id);
static void maybe_recycle(sl_worker *w, const char *reason);

static void send_call(sl_worker *w, sl_call *c) {
  sl_pool *p = w->pool;
  int rc;
  c->w = w;
  c->next = w->inflight;
  c->prev = NULL;
  if (w->inflight) w->inflight->prev = c;
  w->inflight = c;
  if (w->busy++ == 0) p->e->busy_workers++;
  p->e->inflight++;
  snprintf(c->worker, sizeof c->worker, "%s", w->name);
  c->worker_pid = w->pid;
  c->t_sent = sl_now_ms(p->e);
  c->queued_ms = c->t_sent - c->t_submit;
  /* Counted before anything runs Lua (the call.start event), which may send
   * another call. */
  w->calls_sent++;
  if (c->session) {
    /* Keep an existing binding while its worker lives (a hint call that overflowed
     * to another worker does not move the session). */
    int64_t cur;
    sl_worker *bound;
    if (!sl_smap_get(&p->sessions, c->session, &cur) || !(bound = worker_by_id(p, cur)) ||
        bound->state == W_CLOSING)
      sl_smap_put(&p->sessions, c->session, w->id);
  }
  emit(p, "call.start", w, NULL, c, 0, 0);
  /* Ask the worker to poll after its reply only while polling costs nobody a
   * core: the busy workers and the engine fit on the machine's CPUs. */
  rc = send_frame(w, SL_FRAME_CALL,
                  (sl_spin_allowed(p->e) ? SL_FRAME_FLAG_SPIN : 0) | c->data_flags, c->id,
                  &c->meta, &c->data, &c->att);
  if (rc) {
    worker_kill(w, SL_ECRASHED, "could not write to the worker's pipe");
    return;
  }
  if (c->timeout_ms > 0) {
    c->timer = malloc(sizeof *c->timer);
    if (c->timer) {
      uv_timer_init(p->e->loop, &c->timer->t);
      c->timer->t.data = c->timer;
      c->timer->call = c;
      timer_start(&c->timer->t, call_timeout_cb, (uint64_t)c->timeout_ms, 0);
    }
  }
  /* The last call it may serve is on its way: its replacement starts now, so it
   * is ready as soon as it can be. */
  if (spent(w)) maybe_recycle(w, "max_calls");
}

static sl_worker *worker_by_id(sl_pool *p, int64_t id) {
  sl_worker *w;
  for (w = p->workers; w; w = w->next)
    if (w->id == id) return w;
  return NULL;
}

/* The ready worker with the fewest calls in flight. Ties go to the worker that
 * finished a call last: it is awake and its caches are warm, so one task making
 * calls one after another keeps one worker busy instead of waking each in turn.
 * Concurrent calls still spread, because busy workers are not tied with idle ones. */
static int other_live_worker(sl_pool *p, const char *avoid) {
  sl_worker *w;
  for (w = p->workers; w; w = w->next)
    if ((takes_calls(w) || w->state == W_STARTING) && strcmp(w->name, avoid) != 0)
      return 1;
  return 0;
}

/* avoid: a worker name to pass over while any other worker lives (a retried
 * batch goes elsewhere when it can). */
static sl_worker *least_loaded(sl_pool *p, const char *avoid) {
  sl_worker *w, *best = NULL;
  int n = 0, i = 0, start, best_rank = 0;
  int skip = avoid && avoid[0] && other_live_worker(p, avoid);
  for (w = p->workers; w; w = w->next) n++;
  if (!n) return NULL;
  start = (p->rr++) % n;
  for (w = p->workers; w; w = w->next, i++) {
    int rank = (i - start + n) % n;
    if (!takes_calls(w) || w->busy >= p->o.threads) continue;
    if (skip && strcmp(w->name, avoid) == 0) continue;
    if (!best || w->busy < best->busy ||
        (w->busy == best->busy && (w->last_done > best->last_done ||
                                   (w->last_done == best->last_done && rank < best_rank)))) {
      best = w;
      best_rank = rank;
    }
  }
  return best;
}

static int bind_strict(sl_pool *p, sl_call *c);

/* Send queued calls to workers with room. Sending and failing calls can run Lua
 * (telemetry, callbacks) that changes the queue or stops the pool, so after each
 * one the walk starts again from the head instead of trusting a saved cursor. */
static void pump(sl_pool *p) {
  sl_call *c;
  sl_worker *w;
again:
  if (p->state != P_RUNNING) return;
  {
    int any_free = 0;
    for (w = p->workers; w; w = w->next)
      if (takes_calls(w) && w->busy < p->o.threads) any_free = 1;
    if (!any_free) return;
  }
  for (c = p->qhead; c; c = c->next) {
    if (c->strict_worker >= 0) {
      w = worker_by_id(p, c->strict_worker);
      if (lost_for_sessions(w) && c->sticky) {
        /* a sticky session moves on when its worker is gone */
        sl_smap_del(&p->sessions, c->session);
        c->strict_worker = -1;
        bind_strict(p, c);
        w = c->strict_worker >= 0 ? worker_by_id(p, c->strict_worker) : NULL;
        if (!w || !takes_calls(w) || w->busy >= p->o.threads) continue;
        q_remove(p, c);
        send_call(w, c);
        goto again;
      }
      if (lost_for_sessions(w)) {
        q_remove(p, c);
        fail_call(c, SL_ESESSIONLOST,
                  "session '%s' was held by a worker that is gone; its state is lost",
                  c->session);
        goto again;
      }
      if (!takes_calls(w) || w->busy >= p->o.threads) continue;
    } else {
      w = NULL;
      if (c->session) {
        int64_t id;
        if (sl_smap_get(&p->sessions, c->session, &id)) {
          w = worker_by_id(p, id);
          if (w && (!takes_calls(w) || w->busy >= p->o.threads)) w = NULL;
          if (w && c->avoid[0] && strcmp(w->name, c->avoid) == 0) w = NULL;
        }
      }
      if (!w) w = least_loaded(p, c->avoid);
      if (!w) continue;
    }
    q_remove(p, c);
    send_call(w, c);
    goto again;
  }
}

/* A strict session is bound when its first call is submitted, so that two calls
 * of a new session queued together cannot land on different workers. */
static int bind_strict(sl_pool *p, sl_call *c) {
  int64_t id;
  sl_worker *w, *best = NULL;
  int best_load = 0;
  if (sl_smap_get(&p->sessions, c->session, &id)) {
    w = worker_by_id(p, id);
    if (!lost_for_sessions(w)) {
      c->strict_worker = (int)id;
      return 0;
    }
    if (!c->sticky) return SL_ESESSIONLOST;
    sl_smap_del(&p->sessions, c->session);
  }
  int n = 0, i = 0, start, best_rank = 0;
  for (w = p->workers; w; w = w->next) n++;
  start = n ? (p->rr++) % n : 0;
  for (w = p->workers; w; w = w->next, i++) {
    int load, rank = (i - start + n) % n;
    sl_call *q;
    /* not on a worker about to leave: its replacement is already a candidate */
    if ((w->state != W_READY && w->state != W_STARTING) || spent(w) || w->awaiting) continue;
    load = w->busy;
    for (q = p->qhead; q; q = q->next)
      if (q->strict_worker == w->id) load++;
    /* Ties rotate, so new sessions spread over idle workers. */
    if (!best || load < best_load || (load == best_load && rank < best_rank)) {
      best = w;
      best_load = load;
      best_rank = rank;
    }
  }
  if (best) {
    sl_smap_put(&p->sessions, c->session, best->id);
    c->strict_worker = best->id;
  }
  return 0;
}

uint32_t sl_pool_call(sl_pool *p, const char *module, const char *function,
                      const char *session, sl_buf *data, sl_buf *att, int data_flags,
                      size_t nitems, int timeout_ms, const char *avoid, sl_call_cb cb,
                      void *ud) {
  sl_call *c = calloc(1, sizeof *c);
  uint32_t id;
  if (!c) return 0;
  c->sticky = (data_flags & SL_CALL_STICKY) != 0;
  c->data_flags = data_flags & 0xff;
  if (avoid) snprintf(c->avoid, sizeof c->avoid, "%s", avoid);
  c->pool = p;
  c->cb = cb;
  c->ud = ud;
  c->id = p->next_call_id++;
  if (p->next_call_id == 0) p->next_call_id = 1;
  c->nitems = nitems;
  c->timeout_ms = timeout_ms > 0 ? timeout_ms : p->o.call_timeout_ms;
  c->strict_worker = -1;
  c->exit_status = -1;
  c->module = strdup(module);
  c->function = strdup(function);
  c->session = session ? strdup(session) : NULL;
  c->t_submit = sl_now_ms(p->e);
  sl_buf_init(&c->meta);
  c->data = *data;
  c->bytes_out = data->len + (att ? att->len : 0);
  sl_buf_init(data);
  if (att) {
    c->att = *att;
    sl_buf_init(att);
  } else {
    sl_buf_init(&c->att);
  }
  /* meta: {"m":module,"f":function,"s":session} */
  sl_buf_append(&c->meta, "{\"m\":", 5);
  if (sl_json_string(&c->meta, (const unsigned char *)module, strlen(module)) == 1) {
    fail_call(c, SL_EINVAL, "%s", "module name is not valid UTF-8");
    return 0;
  }
  sl_buf_append(&c->meta, ",\"f\":", 5);
  if (sl_json_string(&c->meta, (const unsigned char *)function, strlen(function)) == 1) {
    fail_call(c, SL_EINVAL, "%s", "function name is not valid UTF-8");
    return 0;
  }
  if (session) {
    sl_buf_append(&c->meta, ",\"s\":", 5);
    if (sl_json_string(&c->meta, (const unsigned char *)session, strlen(session)) == 1) {
      fail_call(c, SL_EINVAL, "%s", "session id is not valid UTF-8");
      return 0;
    }
  }
  sl_buf_putc(&c->meta, '}');
  if (p->state == P_FAILED) {
    fail_call(c, SL_EFAILED,
              "pool '%s' has failed: its workers keep crashing at start-up (see the log)",
              p->name);
    return 0;
  }
  if (p->state != P_RUNNING && p->state != P_STARTING) {
    fail_call(c, SL_ESTOPPED, "pool '%s' is stopped", p->name);
    return 0;
  }
  if (session && (p->o.affinity == SL_AFFINITY_STRICT || c->sticky) && bind_strict(p, c)) {
    fail_call(c, SL_ESESSIONLOST,
              "session '%s' was held by a worker that is gone; its state is lost", session);
    return 0;
  }
  if (SL_FRAME_PREFIX + 4 + c->meta.len + c->data.len + c->att.len > p->o.max_frame_bytes) {
    char msg[128];
    snprintf(msg, sizeof msg, "%lu bytes, more than the pool's max_frame_mb allows",
             (unsigned long)(c->meta.len + c->data.len + c->att.len));
    fail_call(c, SL_ETOOBIG, "the batch encodes to %s", msg);
    return 0;
  }
  id = c->id;
  q_push(p, c);
  pump(p); /* may finish and free c: only its id leaves this function */
  return id;
}

int sl_pool_cancel(sl_pool *p, uint32_t call_id) {
  sl_call *c;
  sl_worker *w;
  for (c = p->qhead; c; c = c->next)
    if (c->id == call_id) {
      q_remove(p, c);
      fail_call(c, SL_ECANCELED, "%s", "the call was cancelled before it ran");
      return 0;
    }
  for (w = p->workers; w; w = w->next) {
    if (w->state == W_CLOSING) continue;
    for (c = w->inflight; c; c = c->next)
      if (c->id == call_id) {
        char reason[96];
        inflight_remove(w, c);
        snprintf(reason, sizeof reason, "killed: call %u was cancelled", (unsigned)call_id);
        worker_kill(w, SL_ECRASHED, reason);
        fail_call(c, SL_ECANCELED, "%s", "the call was cancelled; its worker was replaced");
        return 0;
      }
  }
  return SL_ENOTFOUND;
}

void sl_pool_release_session(sl_pool *p, const char *session) {
  sl_worker *w;
  sl_smap_del(&p->sessions, session);
  for (w = p->workers; w; w = w->next) {
    sl_buf meta;
    if (w->state != W_READY && w->state != W_DRAINING) continue;
    sl_buf_init(&meta);
    sl_buf_append(&meta, "{\"s\":", 5);
    if (sl_json_string(&meta, (const unsigned char *)session, strlen(session))) {
      sl_buf_free(&meta);
      return;
    }
    sl_buf_putc(&meta, '}');
    send_frame(w, SL_FRAME_RELEASE, 0, 0, &meta, NULL, NULL);
  }
}

void sl_pool_stats_get(const sl_pool *p, sl_pool_stats *s) {
  sl_worker *w;
  memset(s, 0, sizeof *s);
  for (w = p->workers; w; w = w->next) {
    if (w->state == W_CLOSING) continue;
    s->workers++;
    if (w->state == W_READY) s->ready++;
    s->busy += w->busy;
  }
  s->capacity = p->o.size * p->o.threads;
  s->calls = p->calls;
  s->errors = p->errors;
  s->restarts = p->restarts;
  s->recycles = p->recycles;
  s->timeouts = p->timeouts;
  s->queued = p->queued;
  s->failed = p->state == P_FAILED;
  s->stopped = p->state == P_STOPPED || p->state == P_STOPPING;
}

int sl_pool_workers(const sl_pool *p, sl_worker_info *out, int max) {
  static const char *names[] = {"starting", "ready", "draining", "closing"};
  sl_worker *w;
  int n = 0;
  for (w = p->workers; w && n < max; w = w->next, n++) {
    out[n].name = w->name;
    out[n].pid = w->pid;
    out[n].busy = w->busy;
    out[n].calls = w->calls_done;
    out[n].state = names[w->state];
  }
  return n;
}

int sl_pool_pids(const sl_pool *p, int *pids, int max) {
  sl_worker *w;
  int n = 0;
  for (w = p->workers; w && n < max; w = w->next)
    if (w->pid > 0 && !w->exited) pids[n++] = w->pid;
  return n;
}

/* ---- frames from the worker ----------------------------------------------------- */

static sl_call *inflight_find(sl_worker *w, uint32_t id) {
  sl_call *c;
  for (c = w->inflight; c; c = c->next)
    if (c->id == id) return c;
  return NULL;
}

static void check_start_done(sl_pool *p);
static void retire_replaced(sl_pool *p);
static void interp_learn(sl_pool *p, const char *hello, size_t n);

static void on_frame(sl_worker *w, const sl_frame *f) {
  sl_pool *p = w->pool;
  sl_call *c;
  switch (f->kind) {
    case SL_FRAME_HELLO: {
      const char *v;
      size_t vlen;
      if (w->state != W_STARTING) {
        worker_kill(w, SL_ECRASHED, "protocol error: second hello");
        return;
      }
      if (sl_wire_member(f->meta, f->meta_len, "codecs", &v, &vlen) < 0) {
        worker_kill(w, SL_ESTART, "sent a hello that is not a JSON object");
        return;
      }
      w->state = W_READY;
      w->hello_seen = 1;
      if (!strchr(p->python, '/')) interp_learn(p, f->meta, f->meta_len);
      if (p->o.codec != SL_CODEC_JSON && p->codec == SL_CODEC_JSON && p->state == P_STARTING &&
          sl_wire_member(f->meta, f->meta_len, "codecs", &v, &vlen) == 1 &&
          sl_wire_array_has(v, vlen, "pickle"))
        p->codec = SL_CODEC_PICKLE; /* every worker of a pool runs the same package */
      uv_timer_stop(&w->timer);
      p->start_failures = 0;
      if (p->ev_cb) {
        sl_pool_event ev;
        memset(&ev, 0, sizeof ev);
        ev.name = "worker.ready";
        ev.worker = w->name;
        ev.pid = w->pid;
        ev.hello = f->meta;
        ev.hello_len = f->meta_len;
        ev.duration_ms = sl_now_ms(p->e) - w->started_ms;
        p->ev_cb(p, &ev, p->ev_ud);
      }
      if (p->state == P_STARTING) check_start_done(p);
      else if (p->state == P_STOPPING) worker_retire(w);
      else if (p->state == P_RUNNING) retire_replaced(p);
      pump(p);
      return;
    }
    case SL_FRAME_RESULT:
    case SL_FRAME_ERROR: {
      int status = 0;
      c = inflight_find(w, f->id);
      if (!c) {
        char reason[96];
        snprintf(reason, sizeof reason, "protocol error: reply to unknown request %u",
                 (unsigned)f->id);
        worker_kill(w, SL_ECRASHED, reason);
        return;
      }
      inflight_remove(w, c);
      w->calls_done++;
      w->last_done = ++p->done_seq;
      c->res_meta = f->meta;
      c->res_meta_len = f->meta_len;
      c->res_data = f->data;
      c->res_data_len = f->data_len;
      c->res_att = f->att;
      c->res_att_len = f->att_len;
      c->res_flags = f->flags;
      if (f->kind == SL_FRAME_ERROR && (status = sl_wire_error_kind(f->meta, f->meta_len)) ==
                                           SL_EPROTO) {
        /* An error nobody can read: the worker is broken, as after a bad frame. */
        snprintf(c->message, sizeof c->message,
                 "worker %s sent an error the engine cannot read (its meta is not a JSON "
                 "object with a worker error kind); the worker is being replaced", w->name);
        c->res_meta_len = 0;
        worker_kill(w, SL_EPROTO, "protocol error: an unreadable error meta");
      }
      finish_call(c, status);
      if (w->state == W_CLOSING) return;
      if (w->state == W_DRAINING && w->busy == 0) worker_retire(w);
      else pump(p);
      return;
    }
    case SL_FRAME_VIEW: {
      /* meta: "<call id>:<view name>"; the call gives the session */
      char name[256];
      uint64_t cid = 0;
      size_t k = 0;
      const char *colon = memchr(f->meta, ':', f->meta_len);
      int ok = colon && colon > f->meta && colon - f->meta <= 10 &&
               (size_t)(f->meta + f->meta_len - colon - 1) < sizeof name;
      for (; ok && f->meta + k < colon; k++) {
        if (f->meta[k] < '0' || f->meta[k] > '9') ok = 0;
        cid = cid * 10 + (uint64_t)(f->meta[k] - '0');
      }
      if (!ok || cid > UINT32_MAX ||
          memchr(colon + 1, '\0', (size_t)(f->meta + f->meta_len - colon - 1))) {
        worker_kill(w, SL_ECRASHED, "protocol error: bad view request");
        return;
      }
      memcpy(name, colon + 1, (size_t)(f->meta + f->meta_len - colon - 1));
      name[f->meta + f->meta_len - colon - 1] = '\0';
      /* The session is the one of the engine's own record of a call this worker
       * holds: an id it does not hold (another worker's call, a finished one) gets
       * nothing, not even a global view. */
      c = inflight_find(w, (uint32_t)cid);
      if (!c || !p->view_cb) {
        char why[160];
        sl_buf none;
        sl_buf_init(&none);
        if (!c)
          snprintf(why, sizeof why, "view '%.64s' refused: call %u is not running on worker "
                   "%s; a view serves only the call that asks", name, (unsigned)cid, w->name);
        sl_pool_view_reply(p, w->id, f->id, c ? "views are not available in this engine" : why,
                           &none, 0);
        return;
      }
      p->view_cb(p, w->id, w->name, f->id, name, c->session, f->data, f->data_len,
                 f->flags, p->view_ud);
      return;
    }
    default: {
      char reason[96];
      snprintf(reason, sizeof reason, "protocol error: unexpected frame kind %d", f->kind);
      worker_kill(w, SL_ECRASHED, reason);
    }
  }
}

static void process_frames(sl_worker *w) {
  sl_frame f;
  int rc;
  while (w->state != W_CLOSING && (rc = sl_frame_next(&w->dec, &f)) != 0) {
    if (rc < 0) {
      char reason[200];
      snprintf(reason, sizeof reason, "bad frame: %s", w->dec.err);
      sl_log(w->pool->e, SL_LOG_WARN, "worker %s sent a bad frame (%s); replacing it", w->name,
             w->dec.err);
      worker_kill(w, SL_EPROTO, reason); /* not a crash to retry: the worker misbehaved */
      return;
    }
    on_frame(w, &f);
  }
}

static void chan_alloc(uv_handle_t *h, size_t sz, uv_buf_t *b) {
  sl_worker *w = h->data;
  size_t len;
  (void)sz;
  b->base = sl_frame_decoder_space(&w->dec, &len);
  b->len = len;
}

static void chan_read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  sl_worker *w = s->data;
  (void)b;
  if (n > 0) {
    sl_frame_decoder_commit(&w->dec, (size_t)n);
    process_frames(w);
  } else if (n < 0) {
    uv_read_stop(s);
    /* End of file while the worker was not leaving (it closed its frame pipe), or
     * no memory for a frame it announced: either way it is of no more use. */
    if (!w->retiring && w->state != W_CLOSING && !w->exited)
      worker_kill(w, n == UV_ENOBUFS ? SL_ENOMEM : SL_ECRASHED,
                  n == UV_ENOBUFS ? "no memory for the frame it sent" : "its frame pipe closed");
  }
}

/* After the process exits, read what it wrote before dying: a result written just
 * before exit must not be lost. */
static void drain_chan(sl_worker *w) {
  uv_os_fd_t fd;
  if (w->state == W_CLOSING || uv_fileno((uv_handle_t *)&w->chan, &fd)) return;
  for (;;) {
    size_t len;
    char *space = sl_frame_decoder_space(&w->dec, &len);
    ssize_t r;
    if (!space) return;
    r = read(fd, space, len);
    if (r <= 0) break;
    sl_frame_decoder_commit(&w->dec, (size_t)r);
    process_frames(w);
    if (w->state == W_CLOSING) break;
  }
}

/* ---- worker life ---------------------------------------------------------------- */

static void exit_cb(uv_process_t *proc, int64_t status, int sig) {
  sl_worker *w = proc->data;
  w->exited = 1;
  w->exit_status = status;
  w->term_signal = sig;
  uv_read_stop((uv_stream_t *)&w->chan);
  drain_chan(w);
  emit(w->pool, "worker.exit", w, w->reason[0] ? w->reason : NULL, NULL, 0,
       sl_now_ms(w->pool->e) - w->started_ms);
  worker_gone(w);
}

static void worker_timer_cb(uv_timer_t *t) {
  sl_worker *w = t->data;
  if (w->state == W_STARTING) {
    char reason[128];
    snprintf(reason, sizeof reason, "did not say hello within %d ms",
             w->pool->o.startup_timeout_ms);
    worker_kill(w, SL_ESTART, reason);
  } else if (!w->exited) {
    /* A retiring worker that did not leave after end-of-file. */
    worker_kill(w, SL_ESTOPPED, "did not exit after its pipe closed");
  }
}

/* The PATH a pool's workers are spawned with (the search uv_spawn makes for a bare
 * name), or NULL when their environment has none. */
static const char *pool_search_path(const sl_pool *p) {
  char **v;
  for (v = p->envp; *v; v++)
    if (strncmp(*v, "PATH=", 5) == 0) return *v + 5;
  return NULL;
}

static int same_search(const char *a, const char *b) {
  return a == b || (a && b && strcmp(a, b) == 0);
}

/* The cache is keyed by the name and the PATH it was found on: two pools with
 * different PATHs may find different interpreters under one name. */
static const char *interp_lookup(sl_engine *e, const char *name, const char *search) {
  struct sl_interp *i;
  for (i = e->interps; i; i = i->next)
    if (strcmp(i->name, name) == 0 && same_search(i->search, search)) return i->path;
  return NULL;
}

/* Remember the executable a worker reported in its hello ("executable"), so the
 * next spawn of the same bare name under the same PATH skips the PATH search. */
static void interp_learn(sl_pool *p, const char *hello, size_t n) {
  sl_engine *e = p->e;
  const char *search = pool_search_path(p);
  char path[4096];
  const char *v;
  size_t vlen;
  struct sl_interp *i;
  if (interp_lookup(e, p->python, search)) return;
  if (sl_wire_member(hello, n, "executable", &v, &vlen) != 1 ||
      sl_wire_string(v, vlen, path, sizeof path) < 1 || path[0] != '/')
    return;
  i = calloc(1, sizeof *i);
  if (!i) return;
  i->name = strdup(p->python);
  i->search = search ? strdup(search) : NULL;
  i->path = strdup(path);
  if (!i->name || !i->path || (search && !i->search)) {
    free(i->name);
    free(i->search);
    free(i->path);
    free(i);
    return;
  }
  i->next = e->interps;
  e->interps = i;
}

static void worker_spawn(sl_pool *p) {
  sl_engine *e = p->e;
  sl_worker *w = calloc(1, sizeof *w);
  uv_process_options_t po;
  uv_stdio_container_t stdio[4];
  char namebuf[96];
  int rc, jitter_span;
  if (!w) return;
  w->pool = p;
  w->id = ++p->next_worker_id;
  snprintf(w->name, sizeof w->name, "%s/w%d", p->name, w->id);
  w->state = W_STARTING;
  w->fail_status = SL_ECRASHED;
  w->exit_status = -1;
  w->started_ms = sl_now_ms(e);
  sl_frame_decoder_init(&w->dec, p->o.max_frame_bytes);
  sl_buf_init(&w->outline);
  sl_buf_init(&w->errline);
  w->max_calls = p->o.max_calls;
  if (p->o.max_calls > 0) {
    jitter_span = (int)(p->o.max_calls * p->o.max_calls_jitter);
    if (jitter_span > 0) w->max_calls -= rand() % (jitter_span + 1);
    if (w->max_calls < 1) w->max_calls = 1;
  }
  w->next = p->workers;
  p->workers = w;

  uv_pipe_init(e->loop, &w->chan, 0);
  uv_pipe_init(e->loop, &w->out, 0);
  uv_pipe_init(e->loop, &w->err, 0);
  uv_timer_init(e->loop, &w->timer);
  w->chan.data = w->out.data = w->err.data = w->timer.data = w->proc.data = w;
  w->open_handles = 5;

  memset(&po, 0, sizeof po);
  stdio[0].flags = UV_IGNORE;
  stdio[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
  stdio[1].data.stream = (uv_stream_t *)&w->out;
  stdio[2].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
  stdio[2].data.stream = (uv_stream_t *)&w->err;
  stdio[3].flags = UV_CREATE_PIPE | UV_READABLE_PIPE | UV_WRITABLE_PIPE;
  stdio[3].data.stream = (uv_stream_t *)&w->chan;
  po.exit_cb = exit_cb;
  /* Only a bare name found on PATH is replaced: an explicit path may be a wrapper
   * that does real set-up, and must run every time. */
  po.file = strchr(p->python, '/') ? NULL : interp_lookup(e, p->python, pool_search_path(p));
  if (!po.file) po.file = p->python;
  /* argv[0] names the file that runs: Python derives sys.executable from it */
  p->args[0] = (char *)po.file;
  po.args = p->args;
  po.env = p->envp;
  po.stdio = stdio;
  po.stdio_count = 4;
  /* Own session and process group: one kill(-pid) reaches the worker's children. */
  po.flags = UV_PROCESS_DETACHED;
  snprintf(namebuf, sizeof namebuf, "SLITHER_WORKER_NAME=%s", w->name);
  {
    /* A serial for the whole process: two engines' workers never share one. */
    static unsigned long serial;
    snprintf(w->token, sizeof w->token, "SLITHER_WORKER_TOKEN=%s.%lu", sl_worker_token(),
             __atomic_add_fetch(&serial, 1, __ATOMIC_RELAXED));
  }
  {
    /* The worker's name and token go first in its environment (a sweep reads
     * only the start of each environment, and children keep the order). */
    size_t n = 0;
    char **envp;
    while (p->envp[n]) n++;
    envp = malloc((n + 3) * sizeof *envp);
    if (envp) {
      envp[0] = namebuf;
      envp[1] = w->token;
      memcpy(envp + 2, p->envp, (n + 1) * sizeof *envp);
      po.env = envp;
    }
    rc = uv_spawn(e->loop, &w->proc, &po);
    free(envp);
  }
  e->spawned++;
  if (rc == 0) w->pid = w->proc.pid;
  emit(p, "worker.start", w, NULL, NULL, rc, 0);
  if (rc) {
    snprintf(w->reason, sizeof w->reason, "cannot start %s: %s", p->python, uv_strerror(rc));
    w->fail_status = SL_ESTART;
    w->exited = 1;
    w->state = W_CLOSING;
    worker_gone(w);
    return;
  }
  w->spawned = 1;
  w->pid = w->proc.pid;
  sl_reaper_add(&e->reaper, w->pid);
  uv_read_start((uv_stream_t *)&w->chan, chan_alloc, chan_read_cb);
  uv_read_start((uv_stream_t *)&w->out, alloc_small, out_read_cb);
  uv_read_start((uv_stream_t *)&w->err, alloc_small, out_read_cb);
  timer_start(&w->timer, worker_timer_cb, (uint64_t)p->o.startup_timeout_ms, 0);
}

static void worker_kill(sl_worker *w, int status, const char *reason) {
  if (w->state == W_CLOSING) return;
  w->state = W_CLOSING;
  w->fail_status = status;
  if (reason && !w->reason[0]) snprintf(w->reason, sizeof w->reason, "%s", reason);
  uv_read_stop((uv_stream_t *)&w->chan);
  if (w->spawned && !w->exited) kill(-w->pid, SIGKILL);
}

/* Graceful end: close our side of the frame pipe; the worker finishes and exits
 * on end-of-file. A deadline kills it if it does not. */
static void shutdown_cb(uv_shutdown_t *req, int status) {
  (void)status;
  free(req);
}

static void worker_retire(sl_worker *w) {
  uv_shutdown_t *req;
  if (w->state == W_CLOSING || w->exited || w->shutdown_sent) return;
  w->shutdown_sent = 1;
  w->state = W_DRAINING;
  w->retiring = 1;
  req = malloc(sizeof *req);
  if (!req || uv_shutdown(req, (uv_stream_t *)&w->chan, shutdown_cb)) {
    free(req);
    worker_kill(w, SL_ESTOPPED, "could not close its pipe");
    return;
  }
  uv_timer_stop(&w->timer);
  timer_start(&w->timer, worker_timer_cb, RETIRE_KILL_MS, 0);
}

/* Recycling keeps the pool's capacity: the replacement starts first, and the old
 * worker stays ready until the replacement has said hello (retire_replaced). Until
 * then it serves calls, unless it recycles for max_calls: then it has had its
 * last one and only waits. The cost is one process more than `size` for the
 * length of a start-up. */
static void maybe_recycle(sl_worker *w, const char *reason) {
  sl_pool *p = w->pool;
  if (w->state != W_READY || w->awaiting || p->state != P_RUNNING) return;
  w->awaiting = 1;
  p->recycles++;
  snprintf(w->recycle_reason, sizeof w->recycle_reason, "%s", reason);
  emit(p, "worker.recycle", w, reason, NULL, 0, sl_now_ms(p->e) - w->started_ms);
  if (p->state == P_RUNNING) worker_spawn(p); /* unless a handler stopped the pool */
}

/* A worker said hello: the oldest worker waiting for its replacement leaves. Any
 * new worker will do: if the replacement itself failed to start, the one started
 * after it takes its place. */
static void retire_replaced(sl_pool *p) {
  sl_worker *w, *old = NULL;
  for (w = p->workers; w; w = w->next)
    if (w->awaiting && w->state == W_READY && (!old || w->id < old->id)) old = w;
  if (!old) return;
  old->state = W_DRAINING;
  old->retiring = 1;
  if (!old->reason[0])
    snprintf(old->reason, sizeof old->reason, "recycled: %s", old->recycle_reason);
  if (old->busy == 0) worker_retire(old);
}

static void fail_start(sl_pool *p, sl_worker *w) {
  sl_worker *o;
  size_t n;
  if (p->start_status) return;
  p->start_status = SL_ESTART;
  n = (size_t)snprintf(p->start_msg, sizeof p->start_msg, "worker %s ", w->name);
  /* The engine's own reason first: a worker it killed (a bad frame, a bad hello,
   * a timeout) died of SIGKILL, which says nothing. Then what the worker did:
   * one that said hello and died is not one that never spoke. */
  if (w->reason[0] && (w->fail_status == SL_ESTART || w->fail_status == SL_EPROTO))
    n += (size_t)snprintf(p->start_msg + n, sizeof p->start_msg - n, "%s%s", w->reason,
                          w->hello_seen ? " (after its hello, before the pool was ready)"
                                        : " (before its hello)");
  else if (w->term_signal)
    n += (size_t)snprintf(p->start_msg + n, sizeof p->start_msg - n, "was killed by signal %d %s",
                          w->term_signal,
                          w->hello_seen ? "after its hello, before the pool was ready"
                                        : "before saying hello");
  else
    n += (size_t)snprintf(p->start_msg + n, sizeof p->start_msg - n, "exited with code %lld %s",
                          (long long)w->exit_status,
                          w->hello_seen ? "after its hello, before the pool was ready"
                                        : "before saying hello");
  if (w->tail_len && n < sizeof p->start_msg)
    snprintf(p->start_msg + n, sizeof p->start_msg - n, "; stderr:\n%.*s", (int)w->tail_len,
             w->tail);
  for (o = p->workers; o; o = o->next) worker_kill(o, SL_ESTOPPED, "pool start failed");
}

static void check_start_done(sl_pool *p) {
  sl_worker *w;
  for (w = p->workers; w; w = w->next)
    if (w->state != W_READY) return;
  p->state = P_RUNNING;
  if (p->start_cb) {
    sl_pool_start_cb cb = p->start_cb;
    p->start_cb = NULL;
    cb(p, 0, NULL, p->start_ud);
  }
}

static void pool_fail(sl_pool *p, sl_worker *w) {
  sl_call *c;
  p->state = P_FAILED;
  size_t tl = w->tail_len;
  while (tl && (w->tail[tl - 1] == '\n' || w->tail[tl - 1] == ' ')) tl--;
  sl_log(p->e, SL_LOG_ERROR,
         "pool '%s' failed: %d workers in a row crashed at start-up (last: %s%s%.*s)", p->name,
         p->start_failures, w->name, tl ? ", stderr: " : "", (int)tl, w->tail);
  while ((c = p->qhead)) {
    q_remove(p, c);
    fail_call(c, SL_EFAILED, "pool '%s' has failed: its workers keep crashing at start-up",
              p->name);
  }
}

static void worker_gone(sl_worker *w) {
  sl_pool *p = w->pool;
  sl_call *c, *next;
  int status = w->fail_status, was_ready = w->hello_seen;
  if (w->gone) return;
  w->gone = 1;
  w->state = W_CLOSING;
  if (w->spawned) {
    kill(-w->pid, SIGKILL); /* sweep what the worker left in its group */
    /* and what left the group (setsid, a double fork) but carries its token */
    sl_sweep_env(w->token, 0);
    sl_reaper_remove(&p->e->reaper, w->pid);
  }
  /* In-flight calls die with the worker. */
  while ((c = w->inflight)) {
    inflight_remove(w, c);
    c->exit_status = w->exit_status;
    c->term_signal = w->term_signal;
    if (status == SL_ESTOPPED)
      snprintf(c->message, sizeof c->message, "pool '%s' stopped before the call finished",
               p->name);
    else if (w->term_signal && !w->reason[0])
      snprintf(c->message, sizeof c->message, "worker %s was killed by signal %d during the call",
               w->name, w->term_signal);
    else if (!w->reason[0])
      snprintf(c->message, sizeof c->message, "worker %s exited with code %lld during the call",
               w->name, (long long)w->exit_status);
    else
      snprintf(c->message, sizeof c->message, "worker %s died during the call (%s)", w->name,
               w->reason);
    finish_call(c, status == SL_ESTOPPED || status == SL_EPROTO ? status : SL_ECRASHED);
  }
  /* Strict sessions waiting for this worker are lost; sticky ones move on. The
   * lost calls are taken out first and failed after: failing runs Lua, which may
   * change the queue. */
  {
    sl_call *lost = NULL;
    for (c = p->qhead; c; c = next) {
      next = c->next;
      if (c->strict_worker == w->id && c->sticky) {
        c->strict_worker = -1;
        sl_smap_del(&p->sessions, c->session);
      } else if (c->strict_worker == w->id) {
        q_remove(p, c);
        c->next = lost;
        lost = c;
      }
    }
    while ((c = lost)) {
      lost = c->next;
      c->next = NULL;
      fail_call(c, SL_ESESSIONLOST,
                "session '%s' was held by a worker that died; its state is lost", c->session);
    }
  }
  worker_close_handles(w);

  if (p->state == P_STARTING) {
    fail_start(p, w);
  } else if (p->state == P_RUNNING && !w->retiring && !w->awaiting) {
    /* (a worker that dies waiting for its replacement needs no other) */
    if (was_ready) {
      p->restarts++;
      emit(p, "worker.restart", w, w->reason[0] ? w->reason : "exited", NULL, 0, 0);
      worker_spawn(p);
    } else if (++p->start_failures >= p->o.max_start_failures) {
      pool_fail(p, w);
    } else {
      /* Back off: 100 ms, 200 ms, 400 ms ... before the next attempt. */
      p->pending_respawns++;
      p->respawn_at = sl_now_ms(p->e) + 100.0 * (1 << (p->start_failures - 1));
      uv_ref((uv_handle_t *)&p->tick);
    }
  }
  pump(p);
}

/* ---- the pool's periodic work: respawns, age and memory checks ----------------- */

static long read_rss_kb(int pid) {
  char path[64], line[256];
  FILE *f;
  long kb = -1;
  snprintf(path, sizeof path, "/proc/%d/status", pid);
  f = fopen(path, "r");
  if (!f) return -1;
  while (fgets(line, sizeof line, f))
    if (strncmp(line, "VmRSS:", 6) == 0) {
      kb = strtol(line + 6, NULL, 10);
      break;
    }
  fclose(f);
  return kb;
}

static void tick_cb(uv_timer_t *t) {
  sl_pool *p = t->data;
  sl_worker *w, *next;
  double now = sl_now_ms(p->e);
  if (p->state != P_RUNNING) return;
  if (p->pending_respawns && now >= p->respawn_at) {
    p->pending_respawns--;
    worker_spawn(p);
    if (!p->pending_respawns) uv_unref((uv_handle_t *)&p->tick);
  }
  for (w = p->workers; w; w = next) {
    next = w->next;
    if (w->state != W_READY) continue;
    if (p->o.ttl_s > 0 && now - w->started_ms >= p->o.ttl_s * 1000.0) {
      maybe_recycle(w, "ttl");
    } else if (p->o.max_rss_mb > 0) {
      long kb = read_rss_kb(w->pid);
      if (kb > (long)p->o.max_rss_mb * 1024) maybe_recycle(w, "max_rss");
    }
  }
}

/* ---- stopping ------------------------------------------------------------------- */

static void pool_handle_closed(uv_handle_t *h) {
  sl_pool *p = h->data;
  p->open_handles--;
  check_stopped(p);
  /* the pool's last handle closes after its last worker: a released pool has no
   * owner left to free it (see sl_pool_release) */
  if (p->released && sl_pool_is_stopped(p)) sl_pool_free(p);
}

static void check_stopped(sl_pool *p) {
  if (p->workers) return;
  if (p->state == P_STARTING && p->start_status) {
    sl_pool_start_cb cb = p->start_cb;
    p->state = P_STOPPED;
    p->start_cb = NULL;
    if (!p->timers_closed) {
      p->timers_closed = 1;
      uv_close((uv_handle_t *)&p->tick, pool_handle_closed);
      uv_close((uv_handle_t *)&p->stop_timer, pool_handle_closed);
    }
    if (cb) cb(p, p->start_status, p->start_msg, p->start_ud);
    return;
  }
  if (p->state != P_STOPPING && p->state != P_STOPPED) return;
  p->state = P_STOPPED;
  if (!p->timers_closed) {
    p->timers_closed = 1;
    uv_close((uv_handle_t *)&p->tick, pool_handle_closed);
    uv_close((uv_handle_t *)&p->stop_timer, pool_handle_closed);
    return;
  }
  if (p->open_handles == 0 && p->stop_cb) {
    sl_pool_stop_cb cb = p->stop_cb;
    p->stop_cb = NULL;
    cb(p, p->stop_ud);
  }
}

static void stop_timer_cb(uv_timer_t *t) {
  sl_pool *p = t->data;
  sl_worker *w;
  if (p->stop_phase == 0) {
    p->stop_phase = 1;
    for (w = p->workers; w; w = w->next) {
      if (w->spawned && !w->exited) {
        w->fail_status = SL_ESTOPPED;
        if (!w->reason[0]) snprintf(w->reason, sizeof w->reason, "pool stopped (SIGTERM)");
        kill(-w->pid, SIGTERM);
      }
    }
    timer_start(&p->stop_timer, stop_timer_cb, 1000, 0);
  } else {
    for (w = p->workers; w; w = w->next) worker_kill(w, SL_ESTOPPED, "pool stopped (SIGKILL)");
  }
}

static void begin_stop(sl_pool *p) {
  sl_call *c;
  int was_starting = p->state == P_STARTING;
  p->state = P_STOPPING;
  uv_timer_stop(&p->tick);
  while ((c = p->qhead)) {
    q_remove(p, c);
    fail_call(c, SL_ESTOPPED, "pool '%s' was stopped before the call ran", p->name);
  }
  if (was_starting && p->start_cb) {
    sl_pool_start_cb cb = p->start_cb;
    p->start_cb = NULL;
    cb(p, SL_ESTOPPED, "the pool was stopped while starting", p->start_ud);
  }
}

void sl_pool_stop(sl_pool *p, int grace_ms, sl_pool_stop_cb cb, void *ud) {
  sl_worker *w, *next;
  p->stop_cb = cb;
  p->stop_ud = ud;
  if (p->state == P_STOPPED || p->state == P_STOPPING) {
    check_stopped(p);
    return;
  }
  begin_stop(p);
  for (w = p->workers; w; w = next) {
    next = w->next;
    if (w->state == W_STARTING) worker_kill(w, SL_ESTOPPED, "pool stopped while it started");
    else if (w->busy == 0) worker_retire(w);
    else if (w->state == W_READY) w->state = W_DRAINING, w->retiring = 1;
  }
  timer_start(&p->stop_timer, stop_timer_cb, (uint64_t)(grace_ms > 0 ? grace_ms : 0), 0);
  check_stopped(p);
}

void sl_pool_kill(sl_pool *p) {
  sl_worker *w;
  if (p->state != P_STOPPED && p->state != P_STOPPING) begin_stop(p);
  for (w = p->workers; w; w = w->next) worker_kill(w, SL_ESTOPPED, "pool killed");
  check_stopped(p);
}

void sl_pool_reaper_readd(sl_pool *p) {
  sl_worker *w;
  for (w = p->workers; w; w = w->next)
    if (w->spawned && !w->gone) sl_reaper_add(&p->e->reaper, w->pid);
}

void sl_pool_release(sl_pool *p) {
  sl_pool_detach(p);
  if (!sl_pool_is_stopped(p)) {
    p->released = 1;
    sl_pool_kill(p);
    return; /* pool_handle_closed frees it */
  }
  sl_pool_free(p);
}

void sl_pool_free(sl_pool *p) {
  sl_pool **pp;
  for (pp = &p->e->pools; *pp; pp = &(*pp)->next)
    if (*pp == p) {
      *pp = p->next;
      break;
    }
  sl_smap_free(&p->sessions);
  free_env(p->envp);
  free(p->name);
  free(p->python);
  free(p);
}
