/* reaper.h: a tiny forked process that cleans up after the engine if it dies
 * without doing so itself (SIGKILL, the OOM killer, a crash, a forced stop).
 *
 * Workers run in their own process groups, so one kill(-pgid) takes their
 * children with them. A descendant that leaves the group (setsid, a new process
 * group, a double fork) is still found: every worker carries
 * SLITHER_WORKER_TOKEN=<process token>.<serial> in its environment, its
 * descendants inherit it, and a sweep of /proc kills every process that has it
 * (sl_sweep_env). The engine sweeps one worker's token when that worker ends.
 *
 * The engine tells the reaper each group it creates and ends; the reaper learns
 * of the engine's death from end-of-file on its pipe, kills every group it still
 * knows, sweeps every process carrying the engine process's token, unlinks the
 * process's store files, and exits. A clean close says so first ('q'), and the
 * reaper exits without touching anything. It only uses async-signal-safe calls,
 * so it is safe to fork from a host application that already runs threads. */
#ifndef SL_REAPER_H
#define SL_REAPER_H

#include <sys/types.h>

#define SL_REAPER_STR 256

typedef struct sl_reaper {
  int fd;    /* write end, -1 when not running */
  pid_t pid; /* the reaper process */
  /* what it cleans after a death, copied in by sl_reaper_start */
  char env_prefix[SL_REAPER_STR];  /* "SLITHER_WORKER_TOKEN=<token>." */
  char shm_dir[SL_REAPER_STR];     /* the store directory */
  char file_prefix[SL_REAPER_STR]; /* "slither.<pid>.<token>." */
} sl_reaper;

/* env_prefix, shm_dir, file_prefix: as in the struct (NULL or "" for none). */
int sl_reaper_start(sl_reaper *r, const char *env_prefix, const char *shm_dir,
                    const char *file_prefix);
void sl_reaper_add(sl_reaper *r, pid_t pgid);
void sl_reaper_remove(sl_reaper *r, pid_t pgid);
/* 1 while the reaper process runs; 0 once it has died (it is then reaped). */
int sl_reaper_alive(sl_reaper *r);
/* Ends the reaper cleanly: it exits without killing or unlinking anything (the
 * engine has stopped its pools and stores itself). */
void sl_reaper_stop(sl_reaper *r);

/* SIGKILL every process but this one whose environment holds an entry equal to
 * entry (prefix 0) or starting with it (prefix 1), pass after pass until a pass
 * finds none (a process forking meanwhile is caught by the next). Only the first
 * 16 KB of each environment are read. Returns how many were killed.
 * Async-signal-safe. */
int sl_sweep_env(const char *entry, int prefix);

#endif
