/*
 * The command line (system/vl.c), its results as globals for the rest of
 * the VMM, and the main loop (system/main-loop.c).
 */
#ifndef SYSEMU_SYSEMU_H
#define SYSEMU_SYSEMU_H

#include "qemu/osdep.h"
#include "qemu/uuid.h"
#include "hw/machine.h"

#define FERRY_VERSION "0.1.0"
/* The QEMU release whose interfaces (QMP, stream) we follow. */
#define FERRY_QEMU_VERSION "7.2.0"

/* Everything the command line says, before anything is created. */
typedef struct VMOptions {
    /* type (NULL: default "pc"), RAM, vCPUs, kernel, backends, loaders... */
    MachineState machine;
    bool ram_size_given;        /* -m, or taken from the memory backend */
    GPtrArray *qmp_specs;       /* char *, one per -qmp or -mon */
    GPtrArray *chardevs;        /* Chardev *, one per -chardev */
    char *uuid;                 /* -uuid, lower case; NULL if absent */
    uint8_t uuid_bytes[UUID_LEN]; /* the same, binary; zero if absent */
    bool no_shutdown;           /* -no-shutdown: pause instead of exiting */
    bool no_reboot;             /* -no-reboot: a reset shuts down */
    bool msg_timestamp;         /* -msg timestamp=on */
    char *incoming;             /* -incoming URI or "defer"; NULL if absent */
    bool daemonize;
    char *pidfile;
    GPtrArray *trace_patterns;  /* char *, one per -trace enable=, in order */
    char *trace_file;           /* last -trace file=, or NULL */
    bool start_paused;          /* -S */
    bool nodefaults;
    bool show_help;             /* -h, -help */
    bool show_version;          /* -version */
    bool machine_help;          /* -machine help */
} VMOptions;

/*
 * Parse argv (argv[0] is the program) into opts, which must be zeroed or
 * fresh.  On error returns false with a message naming the option and the
 * value, as "-m: requires an argument" (main() adds "ferry: ").
 */
bool qemu_parse_options(int argc, char **argv, VMOptions *opts,
                        GError **errp);
/* Free what qemu_parse_options allocated (not the struct itself). */
void qemu_free_options(VMOptions *opts);
/* Publish opts into the globals below; opts must outlive them. */
void qemu_apply_options(VMOptions *opts);
void qemu_print_help(FILE *out);
void qemu_print_version(FILE *out);

/*
 * Globals from the command line.  incoming_uri is the -incoming argument:
 * a URI, "defer" (wait for QMP migrate-incoming) or NULL when absent.
 */
extern const char *incoming_uri;
extern const char *qemu_name;       /* -name, or NULL */

/*
 * The main loop: the GLib default main context in the main thread.
 * qemu_main_loop_quit() may be called from any thread.
 */
void qemu_main_loop_run(void);
void qemu_main_loop_quit(void);
/* SIGTERM, SIGINT, SIGHUP become a shutdown request (host-signal). */
void qemu_init_signal_handlers(void);

#endif
