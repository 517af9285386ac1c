/*
 * QEMUFile: the buffered migration stream over a QIOChannel.
 *
 * Errors are sticky: the first error (negative errno plus a message) is
 * kept and every later put/get does nothing (gets return 0).  Check
 * qemu_file_get_error() at points where it matters.
 *
 * Threading: one thread writes (or reads) a given QEMUFile.  The return
 * path is a separate QEMUFile on the same channel, used by another thread.
 */
#ifndef MIGRATION_QEMU_FILE_H
#define MIGRATION_QEMU_FILE_H

#include "qemu/osdep.h"
#include "migration/channel.h"

typedef struct QEMUFile QEMUFile;

/* Both take a reference on ioc. */
QEMUFile *qemu_file_new_output(QIOChannel *ioc);
QEMUFile *qemu_file_new_input(QIOChannel *ioc);
/*
 * A QEMUFile in the other direction on the same channel, or NULL when the
 * channel cannot carry one (pipes, files, memory).
 */
QEMUFile *qemu_file_get_return_path(QEMUFile *f);
/* Flushes (output), drops the channel reference, frees f.  0 or -errno. */
int qemu_fclose(QEMUFile *f);
QIOChannel *qemu_file_get_ioc(QEMUFile *f);
bool qemu_file_is_writable(QEMUFile *f);

/* Output */
void qemu_put_byte(QEMUFile *f, int v);
void qemu_put_be16(QEMUFile *f, unsigned int v);
void qemu_put_be32(QEMUFile *f, unsigned int v);
void qemu_put_be64(QEMUFile *f, uint64_t v);
void qemu_put_buffer(QEMUFile *f, const uint8_t *buf, size_t len);
/*
 * Queue buf without copying it: it must stay valid and unchanged until the
 * next flush (qemu_fflush, or an implicit one when the queue fills up).
 * Changes made before that flush may or may not be sent.
 */
void qemu_put_buffer_async(QEMUFile *f, const uint8_t *buf, size_t len);
/* u8 length + bytes; strings longer than 255 bytes set an error. */
void qemu_put_counted_string(QEMUFile *f, const char *s);
/* Write out everything queued; the error (if any) is sticky. */
int qemu_fflush(QEMUFile *f);

/* Input; a short read is a sticky -EIO "unexpected end of stream". */
int qemu_get_byte(QEMUFile *f);
unsigned int qemu_get_be16(QEMUFile *f);
unsigned int qemu_get_be32(QEMUFile *f);
uint64_t qemu_get_be64(QEMUFile *f);
/* Returns the number of bytes read (len unless an error occurred). */
size_t qemu_get_buffer(QEMUFile *f, uint8_t *buf, size_t len);
/*
 * Sets *buf to len bytes of stream data: a pointer into the internal buffer
 * when they are contiguous there (valid until the next get), otherwise the
 * data is copied into the caller's *buf.  Returns len or less on error.
 */
size_t qemu_get_buffer_in_place(QEMUFile *f, uint8_t **buf, size_t len);
/*
 * Byte at offset ahead without consuming it; -1 at the end of the stream
 * (a clean EOF while peeking is not an error by itself).
 */
int qemu_peek_byte(QEMUFile *f, int offset);
/*
 * Peek up to size bytes at offset ahead (size + offset <= 32 KiB); *buf
 * points into the internal buffer.  Returns the number available (fewer
 * at the end of the stream, without setting an error).
 */
size_t qemu_peek_buffer(QEMUFile *f, uint8_t **buf, size_t size,
                        size_t offset);
/* Reads u8 len + bytes into buf (NUL terminated); returns len, 0 on error. */
size_t qemu_get_counted_string(QEMUFile *f, char buf[256]);
/* Discard n bytes of input. */
void qemu_file_skip(QEMUFile *f, size_t n);

/* Errors */
int qemu_file_get_error(QEMUFile *f);
/* Like get_error, and copies the message into *errp when there is one. */
int qemu_file_get_error_obj(QEMUFile *f, GError **errp);
/* Keeps the first error only; ret is a negative errno. */
void qemu_file_set_error(QEMUFile *f, int ret);
/* Takes ownership of err (may be NULL). */
void qemu_file_set_error_obj(QEMUFile *f, int ret, GError *err);

/*
 * Bytes put so far, including data still queued (output) and what other
 * channels carried for this stream.
 */
uint64_t qemu_file_transferred(QEMUFile *f);
/*
 * Bytes of this stream sent on another channel (multifd): they count
 * toward its rate limit and its transferred total, as if put here.
 */
void qemu_file_acct_other_channel(QEMUFile *f, uint64_t len);
/* Bytes consumed so far (input): the stream offset for error messages. */
uint64_t qemu_file_tell(QEMUFile *f);

/*
 * Rate limiting by 100 ms slices: rate_limit() is true once the current
 * slice has used bytes_per_sec / 10.  0 = unlimited.
 */
#define BUFFER_DELAY_MS 100
void qemu_file_set_rate_limit(QEMUFile *f, uint64_t bytes_per_sec);
uint64_t qemu_file_get_rate_limit(QEMUFile *f);
bool qemu_file_rate_limit(QEMUFile *f);
/* Start a new slice now. */
void qemu_file_rate_limit_reset(QEMUFile *f);
/* Sleep until the current slice ends, then start a new one. */
void qemu_file_rate_limit_wait(QEMUFile *f);
/* Count bytes sent on other channels against this file's budget. */
void qemu_file_acct_rate_limit(QEMUFile *f, uint64_t len);

/* shutdown(2) both ways: wakes a reader blocked on the channel. */
int qemu_file_shutdown(QEMUFile *f);
bool qemu_file_set_blocking(QEMUFile *f, bool block, GError **errp);

#endif
