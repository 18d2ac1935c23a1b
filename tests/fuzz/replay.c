/* replay.c: a fuzz harness run once over each file it is given (a directory means
 * every file in it), without libFuzzer. Linked with each harness, it makes the
 * harness's corpus, crash cases included, a regression test of every build. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int replay_file(const char *path) {
  FILE *f = fopen(path, "rb");
  uint8_t *data;
  long n;
  if (!f) return perror(path), -1;
  fseek(f, 0, SEEK_END);
  n = ftell(f);
  fseek(f, 0, SEEK_SET);
  /* an exact-size copy, so that a read past the end is caught under ASan */
  data = malloc(n > 0 ? (size_t)n : 1);
  if (!data || fread(data, 1, (size_t)n, f) != (size_t)n) {
    fprintf(stderr, "%s: cannot read\n", path);
    fclose(f);
    free(data);
    return -1;
  }
  fclose(f);
  LLVMFuzzerTestOneInput(data, (size_t)n);
  free(data);
  return 0;
}

int main(int argc, char **argv) {
  int i, count = 0;
  for (i = 1; i < argc; i++) {
    struct stat st;
    if (stat(argv[i], &st)) return perror(argv[i]), 1;
    if (S_ISDIR(st.st_mode)) {
      DIR *d = opendir(argv[i]);
      struct dirent *e;
      char path[4096];
      if (!d) return perror(argv[i]), 1;
      while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        snprintf(path, sizeof path, "%s/%s", argv[i], e->d_name);
        if (replay_file(path)) return closedir(d), 1;
        count++;
      }
      closedir(d);
    } else {
      if (replay_file(argv[i])) return 1;
      count++;
    }
  }
  /* an empty corpus would make this test pass without running anything */
  if (count == 0) {
    fprintf(stderr, "replay: no inputs found\n");
    return 1;
  }
  printf("replay: %d inputs ran clean\n", count);
  return 0;
}
