/*
 * Test helper: which target pages a RAM sender put on the wire, read back
 * from the bytes it wrote (a buffer channel).  Tests check the stream
 * itself rather than a hook inside the sender.
 *
 * The log parses RAM records (ZERO, PAGE, EOS) from where it stopped last;
 * bytes that are not RAM records (the setup block list, postcopy
 * commands) must be passed over with ram_stream_log_skip().  The block of
 * the last record is kept across calls, as CONTINUE refers to it.
 */
#ifndef TESTS_RAM_STREAM_LOG_H
#define TESTS_RAM_STREAM_LOG_H

#include "qemu/osdep.h"
#include "exec/ramblock.h"
#include "migration/qemu-file.h"
#include "migration/channel.h"
#include "migration/ram.h"

typedef struct RamStreamLog {
    GArray *blocks;             /* RAMBlock *, one per page sent */
    GArray *pages;              /* unsigned long target page index */
    size_t pos;                 /* bytes of the buffer parsed so far */
    RAMBlock *last;
} RamStreamLog;

static inline RamStreamLog *ram_stream_log_new(void)
{
    RamStreamLog *l = g_new0(RamStreamLog, 1);

    l->blocks = g_array_new(false, false, sizeof(RAMBlock *));
    l->pages = g_array_new(false, false, sizeof(unsigned long));
    return l;
}

static inline void ram_stream_log_free(RamStreamLog *l)
{
    g_array_free(l->blocks, true);
    g_array_free(l->pages, true);
    g_free(l);
}

static inline void ram_stream_log_clear(RamStreamLog *l)
{
    g_array_set_size(l->blocks, 0);
    g_array_set_size(l->pages, 0);
}

/* Everything written so far is not RAM records: step over it. */
static inline void ram_stream_log_skip(RamStreamLog *l, QEMUFile *f,
                                       QIOChannel *ioc)
{
    g_assert_cmpint(qemu_fflush(f), ==, 0);
    qio_channel_buffer_data(ioc, &l->pos);
}

static inline uint64_t stream_be64(const uint8_t *p)
{
    uint64_t v;

    memcpy(&v, p, 8);
    return GUINT64_FROM_BE(v);
}

/* Parse the RAM records written since the last call. */
static inline void ram_stream_log_update(RamStreamLog *l, QEMUFile *f,
                                         QIOChannel *ioc)
{
    const uint8_t *d;
    size_t len;

    g_assert_cmpint(qemu_fflush(f), ==, 0);
    d = qio_channel_buffer_data(ioc, &len);
    while (l->pos < len) {
        uint64_t word, flags;
        unsigned long page;

        g_assert_cmpuint(len - l->pos, >=, 8);
        word = stream_be64(d + l->pos);
        l->pos += 8;
        flags = word & ~TARGET_PAGE_MASK;
        if (flags == RAM_SAVE_FLAG_EOS) {
            continue;
        }
        if (!(flags & RAM_SAVE_FLAG_CONTINUE)) {
            char id[256];
            uint8_t n = d[l->pos];

            memcpy(id, d + l->pos + 1, n);
            id[n] = 0;
            l->pos += 1 + n;
            rcu_read_lock();
            l->last = qemu_ram_block_by_name(id);
            rcu_read_unlock();
        }
        g_assert_nonnull(l->last);
        page = (word & TARGET_PAGE_MASK) >> TARGET_PAGE_BITS;
        if (flags & RAM_SAVE_FLAG_ZERO) {
            l->pos += 1;
        } else {
            g_assert_true(flags & RAM_SAVE_FLAG_PAGE);
            l->pos += TARGET_PAGE_SIZE;
        }
        g_array_append_val(l->blocks, l->last);
        g_array_append_val(l->pages, page);
    }
    g_assert_cmpuint(l->pos, ==, len);
}

#endif
