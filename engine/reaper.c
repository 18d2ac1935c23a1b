/* reaper.c: the guardian process of reaper.h. */
#define _GNU_SOURCE
#include "reaper.h"
#include "error.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#define REAPER_MAX 8192 /* groups tracked at once; more is refused, not overflowed */

static pid_t groups[REAPER_MAX];

static void reaper_main(int rfd) {
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
    ssize_t got = 0, r;
    while (got < (ssize_t)sizeof rec) {
      r = read(rfd, (char *)rec + got, sizeof rec - (size_t)got);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) goto eof;
      got += r;
    }
    if (rec[0] == '+') {
      if (n < REAPER_MAX) groups[n++] = rec[1];
    } else if (rec[0] == '-') {
      for (i = 0; i < n; i++)
        if (groups[i] == rec[1]) {
          groups[i] = groups[--n];
          break;
        }
    }
  }
eof:
  for (i = 0; i < n; i++)
    if (groups[i] > 1) kill(-groups[i], SIGKILL);
  _exit(0);
}

int sl_reaper_start(sl_reaper *r) {
  int fds[2];
  pid_t pid;
  r->fd = -1;
  r->pid = -1;
  if (pipe2(fds, O_CLOEXEC)) return SL_EINVAL;
  pid = fork();
  if (pid < 0) {
    close(fds[0]);
    close(fds[1]);
    return SL_EINVAL;
  }
  if (pid == 0) {
    close(fds[1]);
    reaper_main(fds[0]);
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
  do w = write(r->fd, rec, sizeof rec); while (w < 0 && errno == EINTR);
}

void sl_reaper_add(sl_reaper *r, pid_t pgid) { send_rec(r, '+', pgid); }
void sl_reaper_remove(sl_reaper *r, pid_t pgid) { send_rec(r, '-', pgid); }

void sl_reaper_stop(sl_reaper *r) {
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
