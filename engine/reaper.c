/* reaper.c: the guardian process of reaper.h. */
#define _GNU_SOURCE
#include "reaper.h"
#include "error.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define REAPER_MAX 8192 /* groups tracked at once; more is refused, not overflowed */
#define ENV_READ 16384  /* bytes of each environment a sweep reads */

static pid_t groups[REAPER_MAX];

/* ---- async-signal-safe helpers: no stdio, no malloc, no opendir -------------- */

struct linux_dirent64 {
  uint64_t d_ino;
  int64_t d_off;
  unsigned short d_reclen;
  unsigned char d_type;
  char d_name[];
};

static int all_digits(const char *s) {
  if (!*s) return 0;
  for (; *s; s++)
    if (*s < '0' || *s > '9') return 0;
  return 1;
}

static pid_t to_pid(const char *s) {
  long v = 0;
  for (; *s && v < 1 << 30; s++) v = v * 10 + (*s - '0');
  return (pid_t)v;
}

/* 1 when the NUL-separated entries in buf[0..n) hold entry (or one starting with
 * it, prefix). */
static int env_has(const char *buf, size_t n, const char *entry, size_t elen, int prefix) {
  size_t i = 0;
  while (i < n) {
    const char *e = buf + i;
    size_t len = strnlen(e, n - i);
    if (len >= elen && memcmp(e, entry, elen) == 0 && (prefix || len == elen)) return 1;
    i += len + 1;
  }
  return 0;
}

/* One pass over /proc: kill what holds the entry. */
static int sweep_pass(const char *entry, size_t elen, int prefix, pid_t self) {
  char dents[4096], path[64], env[ENV_READ];
  int dfd, killed = 0;
  long got;
  dfd = open("/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return 0;
  while ((got = syscall(SYS_getdents64, dfd, dents, sizeof dents)) > 0) {
    long off = 0;
    while (off < got) {
      struct linux_dirent64 *d = (struct linux_dirent64 *)(dents + off);
      off += d->d_reclen;
      if (all_digits(d->d_name)) {
        pid_t pid = to_pid(d->d_name);
        size_t k = 0, nl = strlen(d->d_name);
        ssize_t n = 0, r;
        int fd;
        if (pid == self || nl > 20) continue;
        memcpy(path, "/proc/", 6);
        memcpy(path + 6, d->d_name, nl);
        memcpy(path + 6 + nl, "/environ", 9);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) continue; /* gone, or another user's */
        while (k < sizeof env && (r = read(fd, env + k, sizeof env - k)) != 0) {
          if (r < 0) {
            if (errno == EINTR) continue;
            break;
          }
          k += (size_t)r;
        }
        n = (ssize_t)k;
        close(fd);
        if (n > 0 && env_has(env, (size_t)n, entry, elen, prefix) && kill(pid, SIGKILL) == 0)
          killed++;
      }
    }
  }
  close(dfd);
  return killed;
}

int sl_sweep_env(const char *entry, int prefix) {
  size_t elen = entry ? strlen(entry) : 0;
  pid_t self = getpid();
  int total = 0, pass, k;
  if (!elen) return 0;
  /* a killed process reads as an empty environment while it is a zombie, so the
   * passes end; 16 bounds a process that forks faster than a pass */
  for (pass = 0; pass < 16; pass++) {
    k = sweep_pass(entry, elen, prefix, self);
    total += k;
    if (!k) break;
  }
  return total;
}

/* Unlink the files of dir whose names start with prefix. */
static void unlink_prefixed(const char *dir, const char *prefix) {
  char dents[4096], path[SL_REAPER_STR * 2 + 2];
  size_t dl = strlen(dir), pl = strlen(prefix);
  long got;
  int dfd;
  if (!dl || !pl) return;
  dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return;
  while ((got = syscall(SYS_getdents64, dfd, dents, sizeof dents)) > 0) {
    long off = 0;
    while (off < got) {
      struct linux_dirent64 *d = (struct linux_dirent64 *)(dents + off);
      size_t nl = strlen(d->d_name);
      off += d->d_reclen;
      if (nl < pl || memcmp(d->d_name, prefix, pl) != 0 || dl + 1 + nl >= sizeof path) continue;
      memcpy(path, dir, dl);
      path[dl] = '/';
      memcpy(path + dl + 1, d->d_name, nl + 1);
      unlink(path);
    }
  }
  close(dfd);
}

static void reaper_main(int rfd, const sl_reaper *r) {
  int n = 0, i, fd;
  int32_t rec[2];
  /* Keep only the pipe (and stderr): holding other descriptors would keep the
   * engine's pipes open after its death. */
  for (fd = 3; fd < 1024; fd++)
    if (fd != rfd) close(fd);
  signal(SIGINT, SIG_IGN);
  signal(SIGTERM, SIG_IGN);
  signal(SIGHUP, SIG_IGN);
  signal(SIGPIPE, SIG_IGN);
  for (;;) {
    ssize_t got = 0, k;
    while (got < (ssize_t)sizeof rec) {
      k = read(rfd, (char *)rec + got, sizeof rec - (size_t)got);
      if (k < 0 && errno == EINTR) continue;
      if (k <= 0) goto eof;
      got += k;
    }
    if (rec[0] == '+') {
      if (n < REAPER_MAX) groups[n++] = rec[1];
    } else if (rec[0] == '-') {
      for (i = 0; i < n; i++)
        if (groups[i] == rec[1]) {
          groups[i] = groups[--n];
          break;
        }
    } else if (rec[0] == 'q') {
      _exit(0); /* a clean close: the engine cleaned up itself */
    }
  }
eof:
  for (i = 0; i < n; i++)
    if (groups[i] > 1) kill(-groups[i], SIGKILL);
  sl_sweep_env(r->env_prefix, 1);
  unlink_prefixed(r->shm_dir, r->file_prefix);
  _exit(0);
}

static void copy_str(char *dst, const char *src) {
  size_t n = src ? strlen(src) : 0;
  if (n >= SL_REAPER_STR) n = 0; /* too long to be ours: clean nothing rather than a part */
  memcpy(dst, src ? src : "", n);
  dst[n] = '\0';
}

int sl_reaper_start(sl_reaper *r, const char *env_prefix, const char *shm_dir,
                    const char *file_prefix) {
  int fds[2];
  pid_t pid;
  r->fd = -1;
  r->pid = -1;
  if (env_prefix != r->env_prefix) copy_str(r->env_prefix, env_prefix);
  if (shm_dir != r->shm_dir) copy_str(r->shm_dir, shm_dir);
  if (file_prefix != r->file_prefix) copy_str(r->file_prefix, file_prefix);
  if (pipe2(fds, O_CLOEXEC)) return SL_EINVAL;
  pid = fork();
  if (pid < 0) {
    close(fds[0]);
    close(fds[1]);
    return SL_EINVAL;
  }
  if (pid == 0) {
    close(fds[1]);
    reaper_main(fds[0], r);
  }
  close(fds[0]);
  r->fd = fds[1];
  r->pid = pid;
  return 0;
}

static void send_rec(sl_reaper *r, int op, pid_t pgid) {
  int32_t rec[2];
  ssize_t w;
  if (r->fd < 0) return;
  rec[0] = op;
  rec[1] = (int32_t)pgid;
  /* a dead reaper gives EPIPE (SIGPIPE is ignored); sl_reaper_alive notices */
  do w = write(r->fd, rec, sizeof rec); while (w < 0 && errno == EINTR);
}

void sl_reaper_add(sl_reaper *r, pid_t pgid) { send_rec(r, '+', pgid); }
void sl_reaper_remove(sl_reaper *r, pid_t pgid) { send_rec(r, '-', pgid); }

int sl_reaper_alive(sl_reaper *r) {
  int st;
  pid_t got;
  if (r->pid <= 0) return 0;
  do got = waitpid(r->pid, &st, WNOHANG); while (got < 0 && errno == EINTR);
  if (got == 0) return 1;
  /* it died (got == pid), or is not our child any more: either way it is gone */
  if (r->fd >= 0) close(r->fd);
  r->fd = -1;
  r->pid = -1;
  return 0;
}

void sl_reaper_stop(sl_reaper *r) {
  send_rec(r, 'q', 0);
  if (r->fd >= 0) {
    close(r->fd);
    r->fd = -1;
  }
  if (r->pid > 0) {
    int st;
    while (waitpid(r->pid, &st, 0) < 0 && errno == EINTR) {
    }
    r->pid = -1;
  }
}
