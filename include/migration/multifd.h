/*
 * Multifd: RAM pages over extra connections, in QEMU 7.2's format.
 *
 * The main stream keeps the sections, zero pages and EOS; full pages go
 * in packets of at most MULTIFD_PACKET_PAGES pages on N channels.  Each
 * RAM EOS on the main stream is preceded by one SYNC packet per channel,
 * and the destination's loader waits at that EOS until every channel has
 * placed everything sent before its SYNC: a page sent twice (two passes)
 * can therefore never arrive in the wrong order.
 *
 * With postcopy, the channels carry precopy's pages only: the last EOS
 * before the switch has placed them all before any DISCARD, and after it
 * every page goes on the main stream.  The source keeps sending a SYNC
 * per channel at each EOS (QEMU 7.2's destination waits for them); ferry's
 * destination reads them from POSTCOPY_LISTEN on without waiting.
 */
#ifndef MIGRATION_MULTIFD_H
#define MIGRATION_MULTIFD_H

#include "qemu/uuid.h"
#include "exec/ramblock.h"
#include "migration/channel.h"
#include "migration/ram-dense.h"

#define MULTIFD_MAGIC 0x11223344u
#define MULTIFD_VERSION 1
#define MULTIFD_FLAG_SYNC (1u << 0)
#define MULTIFD_FLAG_COMPRESSION_MASK (0xfu << 1)
#define MULTIFD_UUID_LEN UUID_LEN
#define MULTIFD_MAX_CHANNELS 255

/* 512 KiB of 4 KiB target pages per packet, as QEMU 7.2. */
#define MULTIFD_PACKET_PAGES 128
#define MULTIFD_INIT_LEN 64
#define MULTIFD_RAMBLOCK_LEN 256
/* magic, version, flags, pages_alloc, normal_pages, next_packet_size,
 * packet_num, 4 reserved words, ramblock name */
#define MULTIFD_HDR_FIXED_LEN (6 * 4 + 8 + 4 * 8 + MULTIFD_RAMBLOCK_LEN)
#define MULTIFD_PACKET_HDR_LEN \
    (MULTIFD_HDR_FIXED_LEN + 8 * MULTIFD_PACKET_PAGES)

/* A decoded packet header. */
typedef struct MultiFDPacket {
    uint32_t flags;
    uint32_t pages_alloc;
    uint32_t normal_pages;
    uint32_t next_packet_size;
    uint64_t packet_num;
    char ramblock[MULTIFD_RAMBLOCK_LEN];
    uint64_t offset[MULTIFD_PACKET_PAGES];
} MultiFDPacket;

/* ---- wire format (pure functions) ---- */

void multifd_init_msg_encode(uint8_t out[MULTIFD_INIT_LEN],
                             const uint8_t uuid[MULTIFD_UUID_LEN],
                             uint8_t id);
/* Checks magic, version, uuid and that the id is below nchannels. */
bool multifd_init_msg_decode(const uint8_t in[MULTIFD_INIT_LEN],
                             const uint8_t uuid[MULTIFD_UUID_LEN],
                             unsigned nchannels, uint8_t *id,
                             GError **errp);
void multifd_packet_encode(uint8_t out[MULTIFD_PACKET_HDR_LEN],
                           const MultiFDPacket *p);
/* Checks magic, version, sizes and compression; not the block/offsets. */
bool multifd_packet_decode(const uint8_t in[MULTIFD_PACKET_HDR_LEN],
                           MultiFDPacket *p, GError **errp);

/* ---- source ---- */

typedef struct MultiFDSendState MultiFDSendState;

/*
 * Connect nchannels channels to uri (tcp: or unix:), send each its
 * initial message and start one sender thread per channel.
 */
MultiFDSendState *multifd_send_setup(const char *uri, unsigned nchannels,
                                     const uint8_t uuid[MULTIFD_UUID_LEN],
                                     GError **errp);
/*
 * Queue one target page (migration thread).  The caller keeps the block
 * alive (RCU) until the next multifd_send_sync().  Returns the bytes the
 * page costs on the wire, 0 on error (see multifd_send_sync's errp).
 */
uint64_t multifd_queue_page(MultiFDSendState *s, RAMBlock *rb,
                            uint64_t offset);
/*
 * Send what is queued, then one SYNC packet per channel, and wait until
 * every channel has written its SYNC.  *bytes gets the bytes it added.
 */
bool multifd_send_sync(MultiFDSendState *s, uint64_t *bytes, GError **errp);
/* Any thread: make every blocked channel write return (cancel, failure). */
void multifd_send_shutdown(MultiFDSendState *s);
/* Stop the threads and close the channels (the migration thread). */
void multifd_send_cleanup(MultiFDSendState *s);

/* ---- destination ---- */

typedef struct MultiFDRecvState MultiFDRecvState;
typedef struct MultiFDRecvChannel MultiFDRecvChannel;

/* dense: the load's dense-data advisor (ram-dense.h), or NULL. */
MultiFDRecvState *multifd_recv_new(unsigned nchannels,
                                   const uint8_t uuid[MULTIFD_UUID_LEN],
                                   RAMDenseAdvisor *dense);
/*
 * A new connection (main loop).  Starts its thread (or, once the load
 * is over, closes the connection); false only with errp set.  The
 * loader does not wait for all channels to connect: it
 * reads the main stream at once and waits for the channels at the first
 * RAM EOS (a ferry source sends nothing before all channels connected,
 * so a source that dies meanwhile ends the main stream, not a wait).
 */
bool multifd_recv_new_channel(MultiFDRecvState *s, QIOChannel *ioc,
                              GError **errp);
/*
 * At a RAM EOS (loader thread): wait until every channel has received its
 * SYNC packet, then let them go on.  Fails if a channel failed; and while
 * some channel has not even connected, if main (the main stream's
 * channel, may be NULL) was closed by the source or timeout_ms (0: none)
 * passed: a source that died with data in flight leaves no sign on the
 * main socket, whose unread data hold its end back.
 */
bool multifd_recv_sync(MultiFDRecvState *s, QIOChannel *main,
                       uint64_t timeout_ms, GError **errp);
/*
 * POSTCOPY_LISTEN (loader thread, s may be NULL): from here a SYNC waits
 * for nobody, a packet with pages is refused on its channel, and a
 * channel that fails is only traced.
 */
void multifd_recv_enter_postcopy(MultiFDRecvState *s);
/* Any thread: wake everything up and make it fail (cancel, main failed). */
void multifd_recv_shutdown(MultiFDRecvState *s);
/*
 * Any thread but a channel's: shut the channels down and join their
 * threads; a channel that connects later is closed at once.  The load's
 * cleanup does it before the RAM bitmaps the channels write go away.
 */
void multifd_recv_stop(MultiFDRecvState *s);
/* Join the threads and free (main loop, after the loader ended). */
void multifd_recv_free(MultiFDRecvState *s);

/*
 * One channel without a thread, for the fuzz target and unit tests:
 * read the initial message, then packets one at a time.
 */
MultiFDRecvChannel *multifd_recv_channel_new(MultiFDRecvState *s,
                                             QIOChannel *ioc);
bool multifd_recv_channel_hello(MultiFDRecvChannel *c, GError **errp);
/* 1: a packet placed (*sync: it carried SYNC), 0: clean EOF, -1: error. */
int multifd_recv_channel_packet(MultiFDRecvChannel *c, bool *sync,
                                GError **errp);
void multifd_recv_channel_free(MultiFDRecvChannel *c);

#endif
