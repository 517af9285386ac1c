/*
 * The main loop: GLib's default main context, run by the main thread.
 */
#include "qemu/osdep.h"
#include "qemu/thread.h"
#include "sysemu/sysemu.h"
#include "sysemu/runstate.h"
#include <glib-unix.h>
#include <signal.h>

static GMainLoop *main_loop;
static QemuMutex main_loop_lock = QEMU_MUTEX_INITIALIZER;

static GMainLoop *get_main_loop(void)
{
    GMainLoop *loop;

    qemu_mutex_lock(&main_loop_lock);
    if (!main_loop) {
        main_loop = g_main_loop_new(NULL, FALSE);
    }
    loop = main_loop;
    qemu_mutex_unlock(&main_loop_lock);
    return loop;
}

void qemu_main_loop_run(void)
{
    g_main_loop_run(get_main_loop());
}

void qemu_main_loop_quit(void)
{
    /* g_main_loop_quit wakes the context, so any thread may call it. */
    g_main_loop_quit(get_main_loop());
}

static gboolean signal_cb(gpointer opaque)
{
    qemu_system_shutdown_request(SHUTDOWN_CAUSE_HOST_SIGNAL);
    return G_SOURCE_CONTINUE;
}

void qemu_init_signal_handlers(void)
{
    g_unix_signal_add(SIGTERM, signal_cb, NULL);
    g_unix_signal_add(SIGINT, signal_cb, NULL);
    g_unix_signal_add(SIGHUP, signal_cb, NULL);
    /* A client closing its socket must not kill us. */
    signal(SIGPIPE, SIG_IGN);
}
