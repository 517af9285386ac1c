/*
 * Migration channels: a tiny I/O channel object (fd-backed or in-memory)
 * and the URI schemes used by "migrate" and "migrate-incoming".
 *
 * A QIOChannel is reference counted.  One QEMUFile writes and another one
 * (the return path) may read the same channel from a different thread:
 * readv and writev on an fd channel are plain syscalls and do not share
 * state, so that is safe.
 */
#ifndef MIGRATION_CHANNEL_H
#define MIGRATION_CHANNEL_H

#include "qemu/osdep.h"
#include "qemu/sockets.h"
#include <sys/uio.h>

typedef struct QIOChannel QIOChannel;

/* Returned by readv/writev on a non-blocking channel that would block. */
#define QIO_CHANNEL_ERR_BLOCK -2

typedef enum QIOChannelShutdown {
    QIO_CHANNEL_SHUTDOWN_READ = 1,
    QIO_CHANNEL_SHUTDOWN_WRITE = 2,
    QIO_CHANNEL_SHUTDOWN_BOTH = 3,
} QIOChannelShutdown;

/*
 * Wrap an fd (socket, pipe or file); the channel owns it and closes it.
 * Sockets support shutdown and a return path (the same fd read/written in
 * the other direction).
 */
QIOChannel *qio_channel_new_fd(int fd);
/* Growable in-memory output channel (tests, PACKAGED blob building). */
QIOChannel *qio_channel_new_buffer(void);
/* In-memory input channel over a copy of data[0..len). */
QIOChannel *qio_channel_new_from_bytes(const void *data, size_t len);
/* Same, but takes ownership of a g_malloc'ed buffer (no copy). */
QIOChannel *qio_channel_new_from_bytes_take(void *data, size_t len);
/* Contents written so far to a buffer channel (NULL for other channels). */
const uint8_t *qio_channel_buffer_data(QIOChannel *ioc, size_t *len);

QIOChannel *qio_channel_ref(QIOChannel *ioc);
/* Drops a reference; the last one closes the channel. */
void qio_channel_unref(QIOChannel *ioc);

/* Name used in error messages ("socket", "exec", URI...). */
void qio_channel_set_name(QIOChannel *ioc, const char *name);
const char *qio_channel_get_name(QIOChannel *ioc);
/* The fd, or -1 for memory channels. */
int qio_channel_get_fd(QIOChannel *ioc);
/* True for sockets: shutdown(2) works and a return path can be opened. */
bool qio_channel_is_socket(QIOChannel *ioc);

/*
 * Returns the number of bytes transferred (0 on EOF for readv),
 * QIO_CHANNEL_ERR_BLOCK, or -1 with errp set.  Retries EINTR.  Writes
 * never raise SIGPIPE: a broken peer gives EPIPE.
 */
ssize_t qio_channel_readv(QIOChannel *ioc, const struct iovec *iov,
                          int niov, GError **errp);
ssize_t qio_channel_writev(QIOChannel *ioc, const struct iovec *iov,
                           int niov, GError **errp);
/* Write everything (blocking channels); false with errp on error. */
bool qio_channel_write_all(QIOChannel *ioc, const void *buf, size_t len,
                           GError **errp);

bool qio_channel_set_blocking(QIOChannel *ioc, bool blocking, GError **errp);
/* shutdown(2); a no-op returning true for memory channels. */
bool qio_channel_shutdown(QIOChannel *ioc, QIOChannelShutdown how,
                          GError **errp);
/* Close now (idempotent); later I/O fails with EBADF. Reaps exec children. */
bool qio_channel_close(QIOChannel *ioc, GError **errp);

/*
 * Look up a descriptor received earlier with the QMP "getfd" command.
 * Returns the fd (the caller owns it; the name is forgotten) or -1 with
 * errno set.  Implemented by the monitor (monitor/qmp.c).
 */
int monitor_get_fd(const char *name);

/*
 * Source: connect to uri ("tcp:HOST:PORT", "tcp:[::1]:PORT",
 * "unix:PATH", "exec:CMD", "file:PATH", "fd:NAME").  Blocking.
 */
bool migration_channel_connect(const char *uri, QIOChannel **ioc,
                               GError **errp);

/* tcp and unix URIs can carry more than one connection (preempt). */
bool migration_channel_is_socket_uri(const char *uri);

/*
 * Destination: for tcp/unix, listen now and, from the GLib main loop
 * (default context), accept nconn connections (in the order they
 * complete), calling cb(ioc, opaque) for each, then close the listening
 * socket; the callback owns the reference and may free the listener
 * after the last one.  For exec/file/fd (nconn must be 1) the channel
 * already exists: cb is called from an idle source.  The caller owns the
 * returned listener; NULL on error.
 */
typedef void (*MigrationListenCb)(QIOChannel *ioc, void *opaque);
typedef struct MigrationListener MigrationListener;
MigrationListener *migration_channel_listen(const char *uri, unsigned nconn,
                                            MigrationListenCb cb,
                                            void *opaque, GError **errp);
/* Stop a pending listen without calling cb (migrate_cancel). NULL is ok. */
void migration_listener_cancel(MigrationListener *l);
/* Cancel and free; NULL is ok. */
void migration_listener_free(MigrationListener *l);
/* Port actually bound by a tcp listener (useful with port 0), else 0. */
int migration_listener_port(MigrationListener *l);
/*
 * tcp/unix: the address listened on, with the port actually bound (for
 * query-migrate's "socket-address"); still valid after the accept.  NULL
 * for exec/file/fd.
 */
const SocketAddress *migration_listener_address(MigrationListener *l);

/*
 * Postcopy: keep the socket queues of the main stream short so that an
 * urgent page does not wait behind background ones.  sender: TCP
 * TCP_NOTSENT_LOWAT or unix SO_SNDBUF; receiver: TCP SO_RCVBUF.  Failures
 * are warnings; non-sockets are left alone.
 */
void migration_channel_tune_postcopy(QIOChannel *ioc, bool sender);

#endif
