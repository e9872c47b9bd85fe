/* buf: a growable byte buffer (the one string/bytes builder of conprof).
 *
 * Contract: `struct buf b = {0};` is an empty buffer; every append keeps data NUL-terminated (the
 * NUL is not counted in len) so text can be used as a C string. Appends return 0, or -1 when memory
 * runs out (the buffer is then unchanged). buf_free() releases it and leaves an empty buffer.
 * Not thread-safe; one owner at a time.
 */
#ifndef CONPROF_BUF_H
#define CONPROF_BUF_H

#include <stddef.h>
#include <stdint.h>

struct buf {
    char *data;
    size_t len;
    size_t cap;
};

int buf_reserve(struct buf *b, size_t extra);
int buf_append(struct buf *b, const void *data, size_t len);
int buf_append_str(struct buf *b, const char *s);
int buf_append_byte(struct buf *b, uint8_t byte);
int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends s with XML/HTML special characters (& < > " ') escaped. */
int buf_append_xml_escaped(struct buf *b, const char *s);
void buf_reset(struct buf *b); /* len = 0, keeps the memory */
void buf_free(struct buf *b);

#endif
