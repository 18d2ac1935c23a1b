/* reaper.h: a tiny forked process that kills the engine's worker process groups
 * if the engine dies without cleaning up (SIGKILL, OOM killer, a crash).
 *
 * Workers run in their own process groups, so one kill(-pgid) takes their
 * children with them. The engine tells the reaper each group it creates and ends;
 * the reaper learns of the engine's death from end-of-file on its pipe, kills every
 * group it still knows, and exits. It only uses async-signal-safe calls, so it is
 * safe to fork from a host application that already runs threads. */
#ifndef SL_REAPER_H
#define SL_REAPER_H

#include <sys/types.h>

typedef struct sl_reaper {
  int fd;    /* write end, -1 when not running */
  pid_t pid; /* the reaper process */
} sl_reaper;

int sl_reaper_start(sl_reaper *r);
void sl_reaper_add(sl_reaper *r, pid_t pgid);
void sl_reaper_remove(sl_reaper *r, pid_t pgid);
/* Ends the reaper: the groups it still knows are killed. */
void sl_reaper_stop(sl_reaper *r);

#endif
