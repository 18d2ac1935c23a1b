/* test_frame.c: the frame stream decoder against whole, split, truncated,
 * oversized and malformed input. */
#include "error.h"
#include "frame.h"
#include "test.h"

#include <stdlib.h>

static void build(sl_buf *out, int kind, uint32_t id, const char *meta, const char *data,
                  const char *att, size_t att_len) {
  char prefix[SL_FRAME_PREFIX], dlen[4];
  sl_frame_prefix(prefix, dlen, kind, id, strlen(meta), strlen(data), att_len);
  sl_buf_append(out, prefix, sizeof prefix);
  sl_buf_append(out, meta, strlen(meta));
  sl_buf_append(out, dlen, 4);
  sl_buf_append(out, data, strlen(data));
  sl_buf_append(out, att, att_len);
}

static void test_whole_and_split(void) {
  sl_buf b;
  sl_frame_decoder d;
  sl_frame f;
  size_t i;
  char att[9] = {5, 0, 0, 0, 'h', 'e', 'l', 'l', 'o'};
  sl_buf_init(&b);
  build(&b, SL_FRAME_RESULT, 7, "{\"a\":1}", "[1,2]", att, sizeof att);
  build(&b, SL_FRAME_HELLO, 0, "{}", "", "", 0);
  /* Fed one byte at a time, the decoder must yield both frames exactly once. */
  sl_frame_decoder_init(&d, 1 << 20);
  {
    int got = 0;
    for (i = 0; i < b.len; i++) {
      int rc;
      sl_frame_decoder_feed(&d, b.data + i, 1);
      while ((rc = sl_frame_next(&d, &f)) == 1) {
        got++;
        if (got == 1) {
          CHECK(f.kind == SL_FRAME_RESULT);
          CHECK(f.id == 7);
          CHECK(f.meta_len == 7 && memcmp(f.meta, "{\"a\":1}", 7) == 0);
          CHECK(f.data_len == 5 && memcmp(f.data, "[1,2]", 5) == 0);
          CHECK(f.att_len == 9);
          {
            size_t off = 0, n;
            const char *p;
            CHECK(sl_att_next(f.att, f.att_len, &off, &p, &n) == 1);
            CHECK(n == 5 && memcmp(p, "hello", 5) == 0);
            CHECK(sl_att_next(f.att, f.att_len, &off, &p, &n) == 0);
          }
        } else {
          CHECK(f.kind == SL_FRAME_HELLO);
          CHECK(f.data_len == 0);
        }
      }
      CHECK(rc == 0);
    }
    CHECK(got == 2);
  }
  sl_frame_decoder_free(&d);
  /* Many frames in one feed. */
  sl_frame_decoder_init(&d, 1 << 20);
  sl_buf_free(&b);
  for (i = 0; i < 1000; i++) build(&b, SL_FRAME_RESULT, (uint32_t)i, "", "[0]", "", 0);
  sl_frame_decoder_feed(&d, b.data, b.len);
  for (i = 0; i < 1000; i++) {
    CHECK(sl_frame_next(&d, &f) == 1);
    if (f.id != i) {
      CHECK(f.id == i);
      break;
    }
  }
  CHECK(sl_frame_next(&d, &f) == 0);
  sl_frame_decoder_free(&d);
  sl_buf_free(&b);
}

static void test_truncated(void) {
  sl_buf b;
  sl_frame_decoder d;
  sl_frame f;
  sl_buf_init(&b);
  build(&b, SL_FRAME_RESULT, 1, "", "[1,2,3]", "", 0);
  sl_frame_decoder_init(&d, 1 << 20);
  sl_frame_decoder_feed(&d, b.data, b.len - 1);
  CHECK(sl_frame_next(&d, &f) == 0); /* incomplete: wait, never read past the end */
  sl_frame_decoder_feed(&d, b.data + b.len - 1, 1);
  CHECK(sl_frame_next(&d, &f) == 1);
  sl_frame_decoder_free(&d);
  sl_buf_free(&b);
}

static void test_oversized(void) {
  sl_frame_decoder d;
  sl_frame f;
  char hdr[4] = {0, 0, 0, 0x40}; /* 1 GiB */
  sl_frame_decoder_init(&d, 1 << 20);
  sl_frame_decoder_feed(&d, hdr, 4);
  CHECK(sl_frame_next(&d, &f) == SL_ETOOBIG);
  CHECK(strstr(d.err, "exceeds the limit") != NULL);
  sl_frame_decoder_free(&d);
}

static void test_garbage(void) {
  sl_frame_decoder d;
  sl_frame f;
  const char *text = "Traceback (most recent call last): garbage";
  char shortlen[4] = {3, 0, 0, 0};
  char badkind[8] = {16, 0, 0, 0, 99, 0, 0, 0};
  char badres[8] = {16, 0, 0, 0, 3, 0, 1, 0};
  sl_frame_decoder_init(&d, 1 << 20);
  sl_frame_decoder_feed(&d, text, strlen(text));
  CHECK(sl_frame_next(&d, &f) < 0); /* "Trac" as a length is > 1 MiB */
  sl_frame_decoder_free(&d);

  sl_frame_decoder_init(&d, 1 << 20);
  sl_frame_decoder_feed(&d, shortlen, 4);
  CHECK(sl_frame_next(&d, &f) == SL_EPROTO);
  sl_frame_decoder_free(&d);

  sl_frame_decoder_init(&d, 1 << 20);
  sl_frame_decoder_feed(&d, badkind, 8);
  CHECK(sl_frame_next(&d, &f) == SL_EPROTO); /* before the body arrives */
  CHECK(strstr(d.err, "unknown frame kind 99") != NULL);
  sl_frame_decoder_free(&d);

  sl_frame_decoder_init(&d, 1 << 20);
  sl_frame_decoder_feed(&d, badres, 8);
  CHECK(sl_frame_next(&d, &f) == SL_EPROTO);
  sl_frame_decoder_free(&d);
}

static void test_lengths_past_end(void) {
  sl_frame_decoder d;
  sl_frame f;
  char fr[20];
  char att_bad[25];
  /* meta_len claims more than the frame holds */
  sl_put_u32le(fr, 16);
  fr[4] = SL_FRAME_RESULT; fr[5] = fr[6] = fr[7] = 0;
  sl_put_u32le(fr + 8, 1);
  sl_put_u32le(fr + 12, 1000);
  sl_put_u32le(fr + 16, 0);
  sl_frame_decoder_init(&d, 1 << 20);
  sl_frame_decoder_feed(&d, fr, 20);
  CHECK(sl_frame_next(&d, &f) == SL_EPROTO);
  CHECK(strstr(d.err, "meta length") != NULL);
  sl_frame_decoder_free(&d);
  /* data_len past the end */
  sl_put_u32le(fr + 12, 0);
  sl_put_u32le(fr + 16, 99);
  sl_frame_decoder_init(&d, 1 << 20);
  sl_frame_decoder_feed(&d, fr, 20);
  CHECK(sl_frame_next(&d, &f) == SL_EPROTO);
  CHECK(strstr(d.err, "data length") != NULL);
  sl_frame_decoder_free(&d);
  /* an attachment whose length runs past the frame */
  sl_put_u32le(att_bad, 21);
  att_bad[4] = SL_FRAME_RESULT; att_bad[5] = att_bad[6] = att_bad[7] = 0;
  sl_put_u32le(att_bad + 8, 1);
  sl_put_u32le(att_bad + 12, 0);
  sl_put_u32le(att_bad + 16, 0);
  sl_put_u32le(att_bad + 20, 50); /* claims 50 bytes, has 1 */
  att_bad[24] = 'x';
  sl_frame_decoder_init(&d, 1 << 20);
  sl_frame_decoder_feed(&d, att_bad, 25);
  CHECK(sl_frame_next(&d, &f) == SL_EPROTO);
  CHECK(strstr(d.err, "attachment") != NULL);
  sl_frame_decoder_free(&d);
}

static void test_random_garbage(void) {
  /* Random bytes never crash the decoder: it either waits or errors. */
  int round;
  srand(42);
  for (round = 0; round < 2000; round++) {
    sl_frame_decoder d;
    sl_frame f;
    char junk[64];
    int i, rc;
    for (i = 0; i < (int)sizeof junk; i++) junk[i] = (char)rand();
    if (round % 2) sl_put_u32le(junk, (uint32_t)(rand() % 80)); /* plausible lengths */
    sl_frame_decoder_init(&d, 1 << 16);
    sl_frame_decoder_feed(&d, junk, sizeof junk);
    while ((rc = sl_frame_next(&d, &f)) == 1) {
      CHECK(f.meta + f.meta_len <= d.buf.data + d.buf.len);
      CHECK(f.data + f.data_len <= d.buf.data + d.buf.len);
    }
    CHECK(rc == 0 || rc == SL_EPROTO || rc == SL_ETOOBIG);
    sl_frame_decoder_free(&d);
  }
}

int main(void) {
  test_whole_and_split();
  test_truncated();
  test_oversized();
  test_garbage();
  test_lengths_past_end();
  test_random_garbage();
  TEST_END();
}
